"""Domain types shared by the call layer and its plug-ins.

Nothing here knows SOAP, LDAP, SQL or HTTP. The plug-in protocols are deliberately
small: a :class:`UserLookup` (one method), an :class:`Authenticator` (a lookup and a
password check), a :class:`RuleEvaluator` (one), an :class:`EventSink` (one), a
:class:`CallObserver` (one). Each has a real in-tree implementation.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from provider.variables import InputVariables, OutputVariables


class Operation(enum.StrEnum):
    """The seven operations of SmarterTrack's External Provider interfaces."""

    AUTHENTICATE = "Authenticate"
    GET_SIGN_IN_COOKIE_INFO = "GetSignInCookieInfo"
    GET_CUSTOM_FIELD_OPTIONS = "GetCustomFieldOptions"
    START_TICKET = "StartTicket"
    START_CHAT = "StartChat"
    GET_USER_DETAILS = "GetUserDetails"
    NOTIFY_EVENT_FIRED = "NotifyEventFired"


class RulesMethod(enum.StrEnum):
    """Methods the rules decide that are no SOAP operation (SmarterTrack never calls them).

    ``RequestSignInCode``: a customer asked ``/signin-code`` for a one-time code; a matching
    rule that does not deny (``stop: true``) lets an address that is no known user have one;
    ``allow: false`` refuses even a known one.
    """

    REQUEST_SIGN_IN_CODE = "RequestSignInCode"


#: What a rule's ``method`` may name: a SOAP operation or a rules-only method.
Method = Operation | RulesMethod

#: Every method, SOAP operations first.
ALL_METHODS: tuple[Method, ...] = (*Operation, *RulesMethod)


def method_named(name: str) -> Method:
    """The method called ``name``; raises ``ValueError`` for an unknown one."""
    for method in ALL_METHODS:
        if method.value == name:
            return method
    raise ValueError(f"unknown method {name!r}")


@dataclass(frozen=True)
class CallRequest:
    """One SmarterTrack call, decoded."""

    operation: Operation
    variables: InputVariables
    client_address: str | None = None
    request_id: str = ""


@dataclass(frozen=True)
class CustomFieldData:
    """What SmarterTrack should change about one custom field (ExternalCustomFieldData)."""

    name: str
    display_with_information_lookup: bool = False
    change_list_options: bool = False
    list_options: tuple[str, ...] = ()
    change_required: bool = False
    new_required_value: bool = False
    change_visible: bool = False
    new_visible_value: bool = False


@dataclass
class CallResult:
    """The answer to one call, before it is encoded for SmarterTrack.

    ``custom_fields`` is used by GetCustomFieldOptions only, ``user_info_html`` by
    GetUserDetails only; the encoder ignores them for other operations.
    ``permission_denied`` is true when the Web Service Password was wrong or missing
    (the transport counts those per client address); it is never sent. ``trace`` is
    what the rules saw and decided (for the call journal); it is never sent either.
    """

    success: bool
    message: str | None = None
    output: OutputVariables = field(default_factory=OutputVariables)
    custom_fields: list[CustomFieldData] = field(default_factory=list)
    user_info_html: str | None = None
    permission_denied: bool = False
    trace: CallTrace | None = None


@dataclass(frozen=True)
class Identity:
    """A directory (or local) user, as far as rules and results need to know them."""

    username: str
    email: str | None = None
    display_name: str | None = None
    dn: str | None = None
    attributes: Mapping[str, Sequence[str]] = field(default_factory=dict)
    groups: tuple[str, ...] = ()


class UserLookup(Protocol):
    """Finds users by name, without a password (the rules context of the non-login operations)."""

    def lookup(self, username: str) -> Identity | None:
        """The identity of an existing, enabled user without a password; ``None`` otherwise."""
        ...


class Authenticator(UserLookup, Protocol):
    """Checks passwords and looks users up.

    Both methods raise :class:`~provider.errors.DirectoryUnavailable` when a directory
    cannot be reached within its timeout, and :class:`~provider.errors.StorageError`
    when the provider's own database (local users, login counters) cannot: the caller
    then says the provider, not the directory, is unavailable.
    """

    def authenticate(self, username: str, password: str, *, client_address: str | None = None) -> Identity:
        """The identity for valid credentials.

        Raises :class:`~provider.errors.AuthenticationFailed` (with a log-only reason)
        for anything else; the caller answers ``Authentication=FAIL``.
        """
        ...


@dataclass(frozen=True)
class Notification:
    """One rendered ``notify`` entry of a rule: what to send, on which channel."""

    rule: str
    channel: str
    params: Mapping[str, Any]
    #: the message template the notify entry named (``template:``), for reports
    template: str | None = None


@dataclass
class Decision:
    """What the rules decided for one call.

    ``allow=False`` denies the whole operation; ``allow_tickets``/``allow_chats``
    deny one of the two in GetCustomFieldOptions. ``variables`` are output variables
    to add or replace, in order. ``matched`` names the rules that applied;
    ``rule_errors`` the rules that raised, as (rule name, error type).
    """

    allow: bool = True
    allow_tickets: bool = True
    allow_chats: bool = True
    message: str | None = None
    variables: list[tuple[str, str]] = field(default_factory=list)
    fields: list[CustomFieldData] = field(default_factory=list)
    html: str | None = None
    notifications: list[Notification] = field(default_factory=list)
    matched: list[str] = field(default_factory=list)
    rule_errors: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class CallTrace:
    """What the rules of one call saw (the user) and decided: kept for the call journal.

    ``identity`` is the user the rules were given (``None``: none); ``decision`` the
    rules' decision (``None`` when the call ended before the rules were asked).
    """

    identity: Identity | None = None
    decision: Decision | None = None


@dataclass(frozen=True)
class JournalEntry:
    """One answered or refused SOAP call, as the call journal keeps it.

    ``variables`` never hold ``authPW`` or ``loginPassword``, and values of secret-looking
    names are redacted (see :mod:`provider.journal.entry`). ``outcome`` is one of
    ``ok``, ``denied``, ``permission_denied``, ``fault``, ``error``. ``identity`` holds
    the user as the rules saw them (username, email, display name, dn, groups,
    attributes); ``answer`` the Success, Message, output variables, custom-field items,
    user-details HTML and notifications.
    """

    at: datetime
    operation: str
    request_id: str
    client: str | None
    duration_ms: float
    outcome: str
    fault: str | None = None
    username: str | None = None
    variables: tuple[tuple[str, str], ...] = ()
    identity: Mapping[str, Any] | None = None
    matched: tuple[str, ...] = ()
    answer: Mapping[str, Any] | None = None


class PendingEntry(Protocol):
    """A call's journal entry not built yet: the call's raw values, secrets included, until
    :meth:`build` makes the entry (secrets removed). Never stored, logged or kept after that."""

    def build(self) -> JournalEntry:
        """The journal entry of the call (see :mod:`provider.journal.entry`)."""
        ...


class CallObserver(Protocol):
    """Told about every SOAP call after it was answered (the call journal)."""

    def record(self, entry: JournalEntry | PendingEntry) -> None:
        """Take note of ``entry`` (a pending one is built later, before anything of it is
        stored). Returns at once; never raises (a lost entry is counted)."""
        ...


class RuleEvaluator(Protocol):
    """Evaluates the configured rules for one call (or a rules-only method)."""

    def evaluate(self, operation: Method, variables: InputVariables, identity: Identity | None) -> Decision:
        """The decision for this call. Never raises for a faulty rule (it is skipped)."""
        ...


class NoRules:
    """The rule evaluator of a provider with no rules: every decision is neutral."""

    def evaluate(self, operation: Method, variables: InputVariables, identity: Identity | None) -> Decision:
        return Decision()


@dataclass(frozen=True)
class IncomingEvent:
    """A NotifyEventFired call, as stored. ``variables`` never include ``authPW``."""

    event_type: int | None
    event_name: str | None
    arguments: Mapping[str, str]
    variables: tuple[tuple[str, str], ...]
    received_at: datetime
    fingerprint: str


@dataclass(frozen=True)
class AcceptedEvent:
    """The stored event's id; ``duplicate`` when it repeated an earlier call in the window."""

    event_id: int
    duplicate: bool = False
    deliveries: int = 0


class EventSink(Protocol):
    """Durably accepts an event and its deliveries, in one transaction."""

    def accept(
        self,
        event: IncomingEvent,
        notifications: Sequence[Notification],
        rule_errors: Sequence[tuple[str, str]] = (),
    ) -> AcceptedEvent:
        """Store the event (with the rules that raised for it) and one delivery per notification, or nothing.

        Raises :class:`~provider.errors.EventRejected` or
        :class:`~provider.errors.StorageError`; the caller answers ``Success=false``.
        """
        ...


class SignInCodeVerifier(Protocol):
    """Redeems one-time sign-in codes (:mod:`provider.comms.signin_codes`)."""

    def redeem(self, address: str, code: str) -> Identity | None:
        """The identity ``code`` signs ``address`` in as, marking the code used; ``None`` when
        ``code`` is not the address's current, unexpired, unused code (or ``address`` is no
        address). Compares in constant time. Raises :class:`~provider.errors.StorageError`.
        """
        ...
