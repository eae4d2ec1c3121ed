"""One call evaluated against the stored rules with a trace: ``rules test`` and the console's Test a call.

:func:`trial_call` runs the call through the real :class:`~provider.calls.Provider` (so the
answer is exactly what SmarterTrack would get) with an evaluator that records each rule's
outcome (matched, no match and why, error, disabled, not reached). It never sends or queues
anything: the provider has no event sink, so a ``notify`` action is rendered and reported,
never delivered. Users are looked up, never password-checked: a login is evaluated as if the
password were right, and password variables are refused (:func:`variable_pairs`).

The rules-only method ``RequestSignInCode`` is tried too (who may get a sign-in code): the
variable ``address`` (or ``username``) is the address typed on ``/signin-code``; the
customer is found by it as the page finds them (or ``user`` is taken), the rules see what
the page's rules see, and the answer says whether a code would be sent and to whom.
Nothing is recorded, counted against the limits, stored or sent.
"""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass
from typing import Any

from provider.calls import Provider
from provider.comms.signin_codes import parse_address
from provider.comms.signin_delivery import address_finders, decide_customer, find_customer
from provider.comms.templates import global_variables
from provider.db.session import Database
from provider.domain import (
    Authenticator,
    CallRequest,
    CallResult,
    Decision,
    Identity,
    Method,
    Operation,
    RulesMethod,
)
from provider.errors import AuthenticationFailed, ConfigError
from provider.redact import is_secret_variable
from provider.rules.engine import RuleSet, TraceEntry, compile_rules
from provider.rules.limits import RuleLimits
from provider.rules.store import RuleStore, Snapshot
from provider.settings import Secret, Settings
from provider.variables import InputVariables, name_value_pairs

#: The placeholder given as the login password of an Authenticate test (never checked).
UNCHECKED_PASSWORD = "(not checked by rules test)"  # noqa: S105 - a placeholder, never checked


class _TestAuthenticator:
    """The service's authenticator for a trial: users are looked up, never password-checked
    (a login is evaluated as if the password were right)."""

    def __init__(self, inner: Authenticator | None, user: Identity | None) -> None:
        self._inner = inner
        self._user = user

    def authenticate(self, username: str, password: str, *, client_address: str | None = None) -> Identity:
        identity = self.lookup(username)
        if identity is None:
            raise AuthenticationFailed("unknown_user")
        return identity

    def lookup(self, username: str) -> Identity | None:
        if self._user is not None:
            return self._user
        if self._inner is None:
            return None
        return self._inner.lookup(username)


class _TracingEvaluator:
    """Evaluates with a trace; a given user replaces whatever user the call would have."""

    def __init__(self, rule_set: RuleSet, user: Identity | None, limits: RuleLimits) -> None:
        self._rule_set = rule_set
        self._limits = limits
        self._user = user
        self.trace: list[TraceEntry] = []
        self.decision: Decision | None = None
        self.identity: Identity | None = None
        self.evaluated = False

    def evaluate(self, operation: Method, variables: InputVariables, identity: Identity | None) -> Decision:
        self.identity = self._user if self._user is not None else identity
        self.evaluated = True
        self.decision = self._rule_set.evaluate(
            operation, variables, self.identity, trace=self.trace, limits=self._limits
        )
        return self.decision


#: what ``rules test`` and the console's Test a call accept: the operations, then the rules-only methods
TRIAL_METHODS: tuple[Method, ...] = (*Operation, *RulesMethod)


def parse_operation(name: str) -> Method:
    """The operation or rules-only method called ``name`` (any case); raises ConfigError naming the known ones."""
    for op in TRIAL_METHODS:
        if op.value.lower() == name.strip().lower():
            return op
    raise ConfigError(f"unknown operation {name!r} (known: {', '.join(op.value for op in TRIAL_METHODS)})")


def variable_pairs(entries: list[str]) -> list[tuple[str, str]]:
    """``NAME=VALUE`` entries as pairs; raises ConfigError for a malformed entry or a password variable."""
    return name_value_pairs(entries, reader="rules")


def result_payload(result: CallResult) -> dict[str, Any]:
    """The answer SmarterTrack would get, as plain data (``rules test --json``'s ``result``)."""
    return {
        "success": result.success,
        "message": result.message,
        "output": result.output.to_list(),
        "custom_fields": [asdict(f) for f in result.custom_fields],
        "user_info_html": result.user_info_html,
    }


@dataclass(frozen=True)
class TrialReport:
    """What a trial call showed: each rule's outcome in order, the decision, the answer."""

    version: int
    operation: Method
    #: the username the rules saw, or None
    user: str | None
    #: False when the call ended before the rules (for a login: no such user)
    evaluated: bool
    trace: tuple[TraceEntry, ...]
    matched: tuple[str, ...]
    #: (rule, channel, rendered parameters) of each notify action: rendered, never sent
    notifications: tuple[tuple[str, str, dict[str, Any]], ...]
    result: CallResult
    #: how many rules are stored, and the names of the stored rules that are invalid
    stored: int
    invalid: tuple[str, ...]

    def payload(self) -> dict[str, Any]:
        """The report as ``rules test --json`` prints it."""
        return {
            "version": self.version,
            "operation": self.operation.value,
            "user": self.user,
            "evaluated": self.evaluated,
            "trace": [asdict(t) for t in self.trace],
            "matched": list(self.matched),
            "notifications": [
                {"rule": rule, "channel": channel, "params": params}
                for rule, channel, params in self.notifications
            ],
            "result": result_payload(self.result),
        }


def find_user(authenticator: Authenticator | None, username: str) -> Identity:
    """The enabled user ``username`` of ``authenticator`` (no password); raises ConfigError.

    Raises DirectoryUnavailable when the directory cannot be reached.
    """
    if authenticator is None:
        raise ConfigError("--user needs a directory or local users, but ST_PROVIDER_AUTH is none")
    user = authenticator.lookup(username)
    if user is None:
        raise ConfigError(f"the directory does not know an enabled user {username!r}")
    return user


def trial_call(
    settings: Settings,
    database: Database,
    operation: Method,
    pairs: list[tuple[str, str]],
    *,
    authenticator: Authenticator | None,
    user: str | None = None,
) -> TrialReport:
    """Evaluate ``operation`` with the input variables ``pairs`` against the stored rules.

    ``authenticator`` looks users up (never checks a password); ``user`` takes that user
    from it instead of the one the call's variables name. Raises ConfigError for a password
    variable or an unknown ``user``, StorageError / DirectoryUnavailable when a backend fails.
    """
    for name, _value in pairs:
        if is_secret_variable(name):
            raise ConfigError(f"do not give {name.strip()}: rules never see passwords")
    snapshot = RuleStore(database).snapshot()
    identity = find_user(authenticator, user) if user else None
    rule_set = compile_rules(
        snapshot.valid_rules(),
        version=snapshot.version,
        variables=global_variables(settings.read_only_vars, snapshot.variables),
    )
    limits = RuleLimits(max_output=settings.rules_max_output, deadline_ms=settings.rules_deadline_ms)
    evaluator = _TracingEvaluator(rule_set, identity, limits)
    if operation is RulesMethod.REQUEST_SIGN_IN_CODE:
        result = _code_request(pairs, authenticator, identity, evaluator)
        return _report(snapshot, operation, evaluator, result)
    token = secrets.token_urlsafe(16)
    provider = Provider(
        Secret(token), authenticator=_TestAuthenticator(authenticator, identity), rules=evaluator
    )  # no event sink: a NotifyEventFired test queues and sends nothing
    variables = [("authPW", token), *pairs]
    if operation is Operation.AUTHENTICATE:
        variables.append(("loginPassword", UNCHECKED_PASSWORD))
    result = provider.call(CallRequest(operation=operation, variables=InputVariables(variables)))
    return _report(snapshot, operation, evaluator, result)


def _code_request(
    pairs: list[tuple[str, str]],
    authenticator: Authenticator | None,
    user: Identity | None,
    evaluator: _TracingEvaluator,
) -> CallResult:
    """``RequestSignInCode`` for the ``address`` (or ``username``) of ``pairs``, as ``/signin-code`` decides it."""
    given = {name.strip().lower(): value for name, value in pairs}
    address = parse_address(given.get("address") or given.get("username") or "")
    if address is None:
        raise ConfigError("RequestSignInCode needs address=EMAIL-OR-PHONE (with its country code)")
    known = user if user is not None else find_customer(address_finders(authenticator), address)
    identity, outcome = decide_customer(known, evaluator, address)
    if identity is None:
        return CallResult(success=False, message=f"no code would be sent ({outcome.value})")
    return CallResult(
        success=True, message=f"a code would be sent to {address.value} for {identity.username}"
    )


def _report(
    snapshot: Snapshot, operation: Method, evaluator: _TracingEvaluator, result: CallResult
) -> TrialReport:
    decision = evaluator.decision
    return TrialReport(
        version=snapshot.version,
        operation=operation,
        user=evaluator.identity.username if evaluator.identity is not None else None,
        evaluated=evaluator.evaluated,
        trace=tuple(evaluator.trace),
        matched=tuple(decision.matched) if decision is not None else (),
        notifications=tuple(
            (n.rule, n.channel, dict(n.params)) for n in (decision.notifications if decision else [])
        ),
        result=result,
        stored=len(snapshot.rules),
        invalid=tuple(r.name for r in snapshot.rules if r.rule is None),
    )
