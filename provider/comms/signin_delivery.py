"""A customer asks for a sign-in code: who they are, the limits, and the message in the outbox.

:meth:`SignInCodeRequests.request` does, for the address typed on ``/signin-code``:

1. record the request and check the limits (:meth:`~provider.comms.signin_codes.SignInCodes.admit`:
   every request counts, known address or not);
2. find the customer: the configured user backends' :class:`AddressFinder` (local users by
   e-mail address or phone number, directory users by ``mail`` / ``telephoneNumber`` /
   ``mobile``), then the rules of the rules-only method ``RequestSignInCode`` (context:
   ``username`` the address, ``email`` it when it is one, ``variables.address``,
   ``variables.kind`` (``email``/``sms``), ``variables.phone``; ``user`` the customer found).
   A known customer gets a code unless a rule says ``allow: false``; an unknown address
   only when some rule matched and none denied (rules only deny: ``then: {stop: true}``);
3. render the template of the address's kind (``ST_PROVIDER_OTP_TEMPLATE_EMAIL``/``_SMS``)
   with ``code``, ``minutes`` and ``user``; the address goes into the channel type's
   recipient parameter (``to``) unless the template sets it;
4. store the code (hash only) and an event ``Sign-in code`` with one pending delivery on
   the kind's channel, in one transaction: the delivery workers send it like any
   notification (``category: otp`` on the channel exempts it from opt-outs). The event's
   fingerprint names the code row; reports hide the message and the code is scrubbed
   from the delivery once spent (:mod:`provider.comms.signin_scrub`).

The answer (:class:`Outcome`) is for logs and tests only: the page says the same thing
whatever it is. Nothing here raises for an unknown or refused address; a storage or
directory failure is logged and reported as :attr:`Outcome.FAILED`.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Protocol

from jinja2 import TemplateError

from provider.channels.config import ChannelStore
from provider.channels.specs import SPECS
from provider.comms.render import render_in_context
from provider.comms.rows import stored_templates, stored_variables
from provider.comms.signin_codes import Address, SignInCodes, parse_address
from provider.comms.signin_scrub import event_fingerprint
from provider.comms.templates import MessageTemplate, global_variables
from provider.db.events import EventRecord
from provider.db.session import Database
from provider.domain import Authenticator, Identity, Notification, RuleEvaluator, RulesMethod
from provider.errors import ProviderError
from provider.events.outbox import Outbox
from provider.rules.context import CaseInsensitiveDict, build_context
from provider.rules.limits import DEFAULT_LIMITS, RuleLimits
from provider.settings import OtpSettings
from provider.variables import InputVariables

log = logging.getLogger("provider.comms.signin")

#: The stored event a code's delivery belongs to (``events list`` shows it by this name).
EVENT_NAME = "Sign-in code"
RULE_NAME = "signin-code"


class Outcome(enum.StrEnum):
    """What became of one request (logged as ``signin.requested``; never shown to the customer)."""

    SENT = "sent"
    UNKNOWN = "unknown"
    REFUSED = "refused"
    LIMITED = "limited"
    INVALID = "invalid"
    NOT_CONFIGURED = "not_configured"
    FAILED = "failed"


class AddressFinder(Protocol):
    """A user backend that can find a customer by address (local users, the directory)."""

    def lookup_address(self, address: str, kind: str) -> Identity | None:
        """The enabled user with that normalised e-mail address or phone number, else ``None``."""
        ...


def address_finders(authenticator: Authenticator | None) -> list[AddressFinder]:
    """The backends wrapped in ``authenticator`` (through ``.inner``) that find users by address."""
    found: list[AddressFinder] = []
    inner: object | None = authenticator
    while inner is not None:
        if callable(getattr(inner, "lookup_address", None)):
            found.append(inner)  # type: ignore[arg-type]
        inner = getattr(inner, "inner", None)
    return found


def find_customer(finders: Sequence[AddressFinder], address: Address) -> Identity | None:
    """The first enabled user of ``finders`` with that address, else ``None``."""
    return next((i for f in finders if (i := f.lookup_address(address.value, address.kind))), None)


def request_variables(address: Address) -> InputVariables:
    """What the ``RequestSignInCode`` rules see for ``address`` (see the module docstring)."""
    variables = [("username", address.value), ("address", address.value), ("kind", address.kind)]
    variables.append(("email", address.value) if address.kind == "email" else ("phone", address.value))
    return InputVariables(variables)


def decide_customer(
    known: Identity | None, rules: RuleEvaluator | None, address: Address
) -> tuple[Identity | None, Outcome]:
    """Who gets a code for ``address`` (``known``: the customer found; the rules decide), and why.

    A known customer gets one unless a rule says ``allow: false``; an unknown address only
    when some rule matched and none denied. ``rules test RequestSignInCode`` runs this too.
    """
    if rules is None:
        return known, Outcome.SENT if known is not None else Outcome.UNKNOWN
    decision = rules.evaluate(RulesMethod.REQUEST_SIGN_IN_CODE, request_variables(address), known)
    if not decision.allow:
        return None, Outcome.REFUSED
    if known is not None:
        return known, Outcome.SENT
    if not decision.matched:
        return None, Outcome.UNKNOWN
    email = address.value if address.kind == "email" else None
    return Identity(username=address.value, email=email), Outcome.SENT


class SignInCodeRequests:
    """Handles the requests of ``/signin-code`` (see the module docstring)."""

    def __init__(
        self,
        database: Database,
        codes: SignInCodes,
        *,
        finders: Sequence[AddressFinder] = (),
        rules: RuleEvaluator | None = None,
        read_only_vars: Mapping[str, str] | None = None,
        limits: RuleLimits = DEFAULT_LIMITS,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._database = database
        self._codes = codes
        self._finders = tuple(finders)
        self._rules = rules
        self._read_only_vars = dict(read_only_vars or {})
        self._limits = limits
        self._clock = clock

    @property
    def settings(self) -> OtpSettings:
        return self._codes.settings

    def request(self, typed: str, client: str | None) -> Outcome:
        """Handle one request for ``typed`` from ``client`` (see the module docstring)."""
        address = parse_address(typed)
        try:
            outcome = self._request(address, typed, client)
        except ProviderError as exc:
            log.error(
                "sign-in code request failed",
                extra={"event": "signin.failed", "error": type(exc).__name__, "client": client},
            )
            outcome = Outcome.FAILED
        log.info(
            "sign-in code requested",
            extra={
                "event": "signin.requested",
                "outcome": outcome.value,
                "kind": address.kind if address else None,
                "client": client,
            },
        )
        return outcome

    def _request(self, address: Address | None, typed: str, client: str | None) -> Outcome:
        key = address.value if address is not None else "?" + typed.strip().lower()[:300]
        if not self._codes.admit(key, client):
            return Outcome.LIMITED
        if address is None:
            return Outcome.INVALID
        channel, template_name = self._route(address)
        if channel is None:
            return Outcome.NOT_CONFIGURED
        identity, outcome = self._customer(address)
        if identity is None:
            return outcome
        try:
            return self._send(address, identity, channel, template_name)
        except TemplateError as exc:
            log.error(
                "sign-in code template failed",
                extra={
                    "event": "signin.template_failed",
                    "template": template_name,
                    "error": type(exc).__name__,
                },
            )
            return Outcome.FAILED

    # --- who ------------------------------------------------------------------------------

    def _customer(self, address: Address) -> tuple[Identity | None, Outcome]:
        """The customer ``address`` belongs to (or one the rules allow), else ``None`` and why."""
        return decide_customer(find_customer(self._finders, address), self._rules, address)

    # --- what -----------------------------------------------------------------------------

    def _route(self, address: Address) -> tuple[str | None, str]:
        settings = self._codes.settings
        if address.kind == "email":
            return settings.channel_email, settings.template_email
        return settings.channel_sms, settings.template_sms

    def _send(self, address: Address, identity: Identity, channel: str, template_name: str) -> Outcome:
        now = self._clock()
        with self._database.session(immediate=True) as session:
            channel_type = ChannelStore.types(session).get(channel)
            template = next((t for t in stored_templates(session) if t.name == template_name), None)
            if channel_type is None or template is None or template.kind != channel_type:
                log.error(
                    "sign-in code channel or template missing",
                    extra={"event": "signin.not_configured", "channel": channel, "template": template_name},
                )
                return Outcome.NOT_CONFIGURED
            global_vars = global_variables(self._read_only_vars, stored_variables(session))
            issued = self._codes.issue_code(session, address, identity)
            params = self._render(template, address, identity, issued.code, global_vars)
            event = EventRecord(
                event_type=None,
                event_name=EVENT_NAME,
                arguments={},
                variables=[],
                fingerprint=event_fingerprint(issued.id),
                received_at=now,
                repeats=0,
                rule_errors=None,
            )
            session.add(event)
            session.flush()
            notification = Notification(rule=RULE_NAME, channel=channel, params=params)
            Outbox.insert_deliveries(session, event.id, now, [notification])
        return Outcome.SENT

    def _render(
        self,
        template: MessageTemplate,
        address: Address,
        identity: Identity,
        code: str,
        global_vars: Mapping[str, str],
    ) -> dict[str, Any]:
        """The delivery's parameters: the template rendered with ``code``, ``minutes``, ``user``."""
        shown = replace(identity, attributes={**identity.attributes, "address": (address.value,)})
        context = build_context(
            RulesMethod.REQUEST_SIGN_IN_CODE,
            InputVariables([("username", address.value)]),
            shown,
            CaseInsensitiveDict(global_vars.items()),
        )
        context["code"] = code
        context["minutes"] = max(1, round(self._codes.settings.ttl_seconds / 60))
        params = render_in_context(template, context, limits=self._limits)
        recipient = SPECS[template.kind].recipient
        if recipient is not None and not params.get(recipient[0]):
            params[recipient[0]] = address.value
        return params
