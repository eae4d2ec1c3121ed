"""The domain entry: one function per SmarterTrack operation.

:class:`Provider` takes a typed :class:`~provider.domain.CallRequest` and returns a
typed :class:`~provider.domain.CallResult`. It checks the Web Service Password,
consults the authenticator, the rules and the event sink, and builds the output
variables SmarterTrack expects. It knows nothing of SOAP.

Expected outcomes (wrong password, malformed input, failed login, directory outage,
storage failure) are results. Anything else is a bug and propagates; the protocol layer answers it
with a generic fault and the request id.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from provider.domain import (
    Authenticator,
    CallRequest,
    CallResult,
    CallTrace,
    Decision,
    EventSink,
    Identity,
    IncomingEvent,
    NoRules,
    Operation,
    RuleEvaluator,
    UserLookup,
)
from provider.errors import (
    AuthenticationFailed,
    DirectoryUnavailable,
    InvalidInput,
    ProviderError,
    StorageError,
)
from provider.event_types import event_name
from provider.redact import SECRET_VARIABLES
from provider.secret import Secret
from provider.variables import InputVariables, OutputVariables

log = logging.getLogger("provider.calls")

PERMISSION_DENIED = "Permission Denied"
REQUIRED_INPUT_MISSING = "Required Input Missing"
LOGIN_SUCCESSFUL = "Login Successful"
LOGIN_FAILURE = "Login Failure"
DIRECTORY_UNAVAILABLE = "The directory service is unavailable. Please try again later."
EVENT_NOT_STORED = "The event could not be stored. SmarterTrack should retry."
STORAGE_UNAVAILABLE = "The provider's database is unavailable. Please try again later."
INVALID_INPUT = "Invalid Input"  # followed by ": <which input and what it must be>"

#: Inputs converted to numbers, checked for every operation before anything else
#: sees them (rules, the event store): a malformed one is ``Invalid Input``, not a fault.
NUMERIC_INPUTS = ("eventType",)

AUTH_PASSWORD_VARIABLE = "authPW"  # noqa: S105 (a variable name, not a password)


def _bool_text(value: bool) -> str:
    """A boolean as .NET's ``bool.ToString()`` writes it (what the sample returns)."""
    return "True" if value else "False"


class Provider:
    """Answers SmarterTrack's calls.

    ``authenticator`` is ``None`` when no login provider is configured (every login
    then fails); ``user_lookup`` answers the user lookups of the non-login operations
    (usually ``authenticator`` behind a short cache; ``authenticator`` when not given);
    ``events`` is where NotifyEventFired stores events. ``on_previous_password`` is
    called for each call authorised by ``previous_password`` only (the operator's cue
    that SmarterTrack still uses it).
    """

    def __init__(
        self,
        password: Secret,
        *,
        previous_password: Secret | None = None,
        authenticator: Authenticator | None = None,
        user_lookup: UserLookup | None = None,
        rules: RuleEvaluator | None = None,
        events: EventSink | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_previous_password: Callable[[], None] | None = None,
    ) -> None:
        if not password:
            raise ValueError("the Web Service Password must not be empty")
        self._passwords = tuple(p for p in (password, previous_password) if p)
        self._authenticator = authenticator
        self._user_lookup = user_lookup if user_lookup is not None else authenticator
        self._on_previous_password = on_previous_password
        self._rules: RuleEvaluator = rules if rules is not None else NoRules()
        self._events = events
        self._clock = clock
        self._handlers: dict[Operation, Callable[[CallRequest, CallTrace], CallResult]] = {
            Operation.AUTHENTICATE: self._authenticate,
            Operation.GET_SIGN_IN_COOKIE_INFO: self._sign_in_cookie,
            Operation.GET_CUSTOM_FIELD_OPTIONS: self._custom_field_options,
            Operation.START_TICKET: self._start_ticket,
            Operation.START_CHAT: self._start_chat,
            Operation.GET_USER_DETAILS: self._user_details,
            Operation.NOTIFY_EVENT_FIRED: self._notify_event_fired,
        }

    @property
    def authenticator(self) -> Authenticator | None:
        """The login authenticator (for readiness checks); ``None`` when logins always fail."""
        return self._authenticator

    def call(self, request: CallRequest) -> CallResult:
        """Answer one call. Raises only for bugs (see module docstring)."""
        if not self._authorised(request.variables.get(AUTH_PASSWORD_VARIABLE)):
            log.warning(
                "web service password rejected",
                extra={
                    "event": "security.permission_denied",
                    "operation": str(request.operation),
                    "client": request.client_address,
                    "request_id": request.request_id,
                    "password_supplied": AUTH_PASSWORD_VARIABLE in request.variables,
                },
            )
            return CallResult(success=False, message=PERMISSION_DENIED, permission_denied=True)
        trace = CallTrace()
        try:
            check_inputs(request.variables)
            result = self._handlers[request.operation](request, trace)
        except InvalidInput as exc:
            result = _invalid_input(request, exc)
        except StorageError:
            # The provider's own database (rules, throttle, users) is out of reach.
            result = _unavailable(request, "storage", STORAGE_UNAVAILABLE, with_traceback=True)
        result.trace = trace
        return result

    def _decide(self, request: CallRequest, identity: Identity | None, trace: CallTrace) -> Decision:
        """The rules' decision for this call, noted in ``trace`` with the identity they saw."""
        trace.identity = identity
        trace.decision = self._rules.evaluate(request.operation, request.variables, identity)
        return trace.decision

    def _authorised(self, supplied: str | None) -> bool:
        # Compare against every accepted password, always, so timing does not tell which.
        results = [password.matches(supplied) for password in self._passwords]
        if len(results) > 1 and results[1] and not results[0] and self._on_previous_password is not None:
            self._on_previous_password()
        return any(results)

    # --- login provider ---------------------------------------------------------

    def _authenticate(self, request: CallRequest, trace: CallTrace) -> CallResult:
        username = (request.variables.get("loginUsername") or "").strip()
        password = request.variables.get("loginPassword") or ""
        if not username or not password:
            return CallResult(success=False, message=REQUIRED_INPUT_MISSING)
        if self._authenticator is None:
            return _login_failed(request, "no_authenticator")
        try:
            identity = self._authenticator.authenticate(
                username, password, client_address=request.client_address
            )
        except AuthenticationFailed as exc:
            return _login_failed(request, exc.reason, username=username)
        except DirectoryUnavailable:
            return _directory_unavailable(request)
        return self._login_succeeded(request, identity, trace)

    def _sign_in_cookie(self, request: CallRequest, trace: CallTrace) -> CallResult:
        username = (request.variables.get("loginUsername") or "").strip()
        if not username:
            return CallResult(success=False, message=REQUIRED_INPUT_MISSING)
        if self._authenticator is None:
            return _login_failed(request, "no_authenticator")
        try:
            identity = self._authenticator.lookup(username)
        except DirectoryUnavailable:
            return _directory_unavailable(request)
        except AuthenticationFailed as exc:
            return _login_failed(request, exc.reason, username=username)
        if identity is None:
            return _login_failed(request, "unknown_or_disabled", username=username)
        return self._login_succeeded(request, identity, trace)

    def _login_succeeded(self, request: CallRequest, identity: Identity, trace: CallTrace) -> CallResult:
        decision = self._decide(request, identity, trace)
        if not decision.allow:
            return _login_failed(request, "denied_by_rule", username=identity.username, decision=decision)
        output = OutputVariables([("Authentication", "OK")])
        if identity.email:
            output.set("EmailAddress", identity.email)
        if identity.display_name:
            output.set("DisplayName", identity.display_name)
        _apply_variables(output, decision)
        log.info(
            "login accepted",
            extra={
                "event": "login.ok",
                "operation": str(request.operation),
                "username": identity.username,
                "request_id": request.request_id,
            },
        )
        return CallResult(success=True, message=decision.message or LOGIN_SUCCESSFUL, output=output)

    # --- custom fields, tickets, chats, user info --------------------------------

    def _lookup(self, variables: InputVariables, *names: str) -> Identity | None:
        """The identity of the first named variable that is set, if any (directory or local user).

        A failed lookup is logged and yields ``None``: the call goes on without it.
        """
        if self._user_lookup is None:
            return None
        username = next((v.strip() for n in names if (v := variables.get(n)) and v.strip()), None)
        if username is None:
            return None
        try:
            return self._user_lookup.lookup(username)
        except ProviderError as exc:
            log.warning(
                "user lookup failed; continuing without user",
                extra={"event": "directory.lookup_failed", "error": type(exc).__name__},
            )
            return None

    def _custom_field_options(self, request: CallRequest, trace: CallTrace) -> CallResult:
        identity = self._lookup(request.variables, "loginUsername")
        decision = self._decide(request, identity, trace)
        tickets = decision.allow and decision.allow_tickets
        chats = decision.allow and decision.allow_chats
        output = OutputVariables(
            [("CanStartTickets", _bool_text(tickets)), ("CanStartChats", _bool_text(chats))]
        )
        _apply_variables(output, decision)
        return CallResult(
            success=True,
            message=decision.message or "Result okay",
            output=output,
            custom_fields=list(decision.fields) if decision.allow else [],
        )

    def _start_ticket(self, request: CallRequest, trace: CallTrace) -> CallResult:
        return self._start(
            request, trace, "TicketCreation", "Ticket Creation Successful", "Ticket creation denied"
        )

    def _start_chat(self, request: CallRequest, trace: CallTrace) -> CallResult:
        return self._start(request, trace, "ChatCreation", "Chat Creation Successful", "Chat creation denied")

    def _start(self, request: CallRequest, trace: CallTrace, flag: str, ok: str, denied: str) -> CallResult:
        identity = self._lookup(request.variables, "loginUsername", "emailFrom")
        decision = self._decide(request, identity, trace)
        if not decision.allow:
            return CallResult(
                success=True,
                message=decision.message or denied,
                output=OutputVariables([(flag, "FALSE")]),
            )
        output = OutputVariables([(flag, "TRUE")])
        _apply_variables(output, decision)
        return CallResult(success=True, message=decision.message or ok, output=output)

    def _user_details(self, request: CallRequest, trace: CallTrace) -> CallResult:
        identity = self._lookup(request.variables, "username", "email")
        decision = self._decide(request, identity, trace)
        output = OutputVariables()
        _apply_variables(output, decision)
        return CallResult(
            success=True,
            message=decision.message or "User Account Information Retrieved Successfully",
            output=output,
            user_info_html=decision.html if decision.allow else None,
        )

    # --- events -------------------------------------------------------------------

    def _notify_event_fired(self, request: CallRequest, trace: CallTrace) -> CallResult:
        event = self.incoming_event(request.variables)
        decision = self._decide(request, None, trace)
        if self._events is None:
            return CallResult(success=True, message="Event Notification Successful")
        try:
            accepted = self._events.accept(event, decision.notifications, decision.rule_errors)
        except ProviderError as exc:
            log.error(
                "event not stored",
                extra={
                    "event": "events.rejected",
                    "event_type": event.event_type,
                    "error": type(exc).__name__,
                    "request_id": request.request_id,
                },
            )
            return CallResult(success=False, message=EVENT_NOT_STORED)
        log.info(
            "event accepted",
            extra={
                "event": "events.accepted",
                "event_id": accepted.event_id,
                "event_type": event.event_type,
                "duplicate": accepted.duplicate,
                "deliveries": accepted.deliveries,
                "request_id": request.request_id,
            },
        )
        return CallResult(success=True, message="Event Notification Successful")

    def incoming_event(self, variables: InputVariables) -> IncomingEvent:
        """The event to store for a NotifyEventFired call (secrets removed).

        Raises :class:`~provider.errors.InvalidInput` for a malformed ``eventType``
        (a missing or blank one is stored as ``None``).
        """
        event_type = variables.whole_number("eventType")
        kept = tuple((n, v) for n, v in variables.pairs if n.strip().lower() not in SECRET_VARIABLES)
        fingerprint = hashlib.sha256(json.dumps(sorted(kept), ensure_ascii=False).encode("utf-8")).hexdigest()
        return IncomingEvent(
            event_type=event_type,
            event_name=event_name(event_type),
            arguments=variables.arguments,
            variables=kept,
            received_at=self._clock(),
            fingerprint=fingerprint,
        )


def check_inputs(variables: InputVariables) -> None:
    """Raise :class:`~provider.errors.InvalidInput` for the first malformed numeric input."""
    for name in NUMERIC_INPUTS:
        variables.whole_number(name)


def _invalid_input(request: CallRequest, exc: InvalidInput) -> CallResult:
    log.info(
        "invalid input",
        extra={
            "event": "call.invalid_input",
            "operation": str(request.operation),
            "variable": exc.variable,
            "client": request.client_address,
            "request_id": request.request_id,
        },
    )
    return CallResult(success=False, message=f"{INVALID_INPUT}: {exc}")


def _apply_variables(output: OutputVariables, decision: Decision) -> None:
    for name, value in decision.variables:
        output.set(name, value)


def _login_failed(
    request: CallRequest, reason: str, *, username: str | None = None, decision: Decision | None = None
) -> CallResult:
    log.info(
        "login refused",
        extra={
            "event": "login.fail",
            "operation": str(request.operation),
            "reason": reason,
            "username": username,
            "client": request.client_address,
            "request_id": request.request_id,
        },
    )
    message = decision.message if decision is not None and decision.message else LOGIN_FAILURE
    return CallResult(success=True, message=message, output=OutputVariables([("Authentication", "FAIL")]))


def _directory_unavailable(request: CallRequest) -> CallResult:
    return _unavailable(request, "directory", DIRECTORY_UNAVAILABLE)


def _unavailable(
    request: CallRequest, what: str, message: str, *, with_traceback: bool = False
) -> CallResult:
    """``Success=false`` with ``message``, logged as event ``<what>.unavailable``."""
    log.error(
        f"{what} unavailable",
        exc_info=with_traceback,
        extra={
            "event": f"{what}.unavailable",
            "operation": str(request.operation),
            "request_id": request.request_id,
        },
    )
    return CallResult(success=False, message=message)
