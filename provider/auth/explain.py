"""Why a login was refused: ``st-provider call --explain``, run on the provider's database.

SmarterTrack (and ``call``) only ever see ``Authentication=FAIL``; the reason stays on
the server. :func:`explain_login` reads what the server recorded, in this order:

1. the brute-force counter of the username (``auth_throttle``): a lock and until when,
   or the reason of the latest counted refusal (``bad_password``, ``unknown_user``,
   ``disabled``...) and when it happened;
2. with no recorded refusal, the password was accepted or never checked: the user is
   looked up (never password-checked, never counted) and the stored rules are
   evaluated for the call as SmarterTrack sent it, naming the rule that denies it.

It never checks a password and never writes.
"""

from __future__ import annotations

from datetime import datetime

from provider.auth import build_authenticator
from provider.auth.throttle import KeyStatus, Throttle, user_key
from provider.comms.templates import global_variables
from provider.db.session import Database, require_existing
from provider.domain import Identity, Operation
from provider.errors import DirectoryUnavailable, StorageError
from provider.rules.engine import RuleSet, compile_rules
from provider.rules.store import RuleStore
from provider.settings import Settings
from provider.variables import InputVariables

LOGIN_OPERATIONS = frozenset({Operation.AUTHENTICATE, Operation.GET_SIGN_IN_COOKIE_INFO})

#: What each log-only refusal reason means, for an administrator.
REASONS = {
    "bad_password": "the password was wrong",
    "unknown_user": "the directory (or the local users) has no such user",
    "ambiguous_user": "several directory entries match the name",
    "disabled": "the account is disabled",
    "locked": "the directory has locked the account",
    "password_expired": "the password has expired",
    "account_expired": "the account has expired",
    "must_change_password": "the user must change the password first",
    "logon_hours": "the account may not log on at this time",
    "workstation_restricted": "the account may not log on from this host",
    "not_in_group": "the user is not in ST_PROVIDER_LDAP_REQUIRE_GROUP",
    "bind_refused": "the directory refused the bind",
}


def utc_text(moment: datetime) -> str:
    """``2026-11-30T10:15:00Z``: a UTC time with its zone marker."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def explain_login(settings: Settings, operation: Operation, inputs: InputVariables) -> list[str]:
    """Lines saying why the server refused this login (see the module docstring).

    Raises StorageError when the database cannot be read.
    """
    username = (inputs.get("loginUsername") or "").strip()
    if not username:
        return ["reason: no loginUsername was sent (the answer is Required Input Missing)"]
    if settings.auth == "none":
        return ["reason: ST_PROVIDER_AUTH is none: every login fails"]
    key = user_key(username)
    if key is None:
        return [f"reason: {username!r} is not a usable username (empty, too long or control characters)"]
    require_existing(settings.database_url)  # never explain from a new, empty file
    with Database(settings.database_url) as database:
        status = Throttle(database, settings.throttle).status([key]).get(key)
        lines = _recorded(status, username)
        if lines:
            return lines
        return _not_recorded(settings, database, operation, inputs, username)


def _recorded(status: KeyStatus | None, username: str) -> list[str]:
    if status is None:
        return []
    lines: list[str] = []
    if status.locked_until is not None:
        lines.append(
            f"reason: throttled: too many failed logins for {username!r}; locked until "
            f"{utc_text(status.locked_until)} (clear it with: st-provider users unlock {username!r})"
        )
    if status.last_reason and status.last_failure_at is not None:
        meaning = REASONS.get(status.last_reason, status.last_reason)
        prefix = "earlier refusal" if lines else "reason"
        lines.append(
            f"{prefix}: {status.last_reason} ({meaning}), recorded {utc_text(status.last_failure_at)}; "
            f"{status.failures} attempt(s) counted in the current window"
        )
    return lines


def _not_recorded(
    settings: Settings, database: Database, operation: Operation, inputs: InputVariables, username: str
) -> list[str]:
    lines = [f"no refused password is recorded for {username!r}"]
    authenticator = build_authenticator(settings, database)
    identity: Identity | None = None
    if authenticator is not None:
        try:
            identity = authenticator.lookup(username)
        except (DirectoryUnavailable, StorageError) as exc:
            return [*lines, f"reason unknown: the user could not be looked up ({exc})"]
    if identity is None:
        return [*lines, f"reason: the directory (or the local users) has no enabled user {username!r}"]
    decision = _rules(database, settings).evaluate(operation, inputs, identity)
    if not decision.allow:
        rules = ", ".join(decision.matched) or "a rule"
        message = f" with the message {decision.message!r}" if decision.message else ""
        return [*lines, f"reason: denied by rule {rules}{message} (see: st-provider rules test)"]
    return [
        *lines,
        f"the user {identity.username!r} exists and the rules allow the login: "
        "if it still fails, the password was refused without being counted (blank), "
        "or another database is in use",
    ]


def _rules(database: Database, settings: Settings) -> RuleSet:
    snapshot = RuleStore(database).snapshot()
    variables = global_variables(settings.read_only_vars, snapshot.variables)
    return compile_rules(snapshot.valid_rules(), version=snapshot.version, variables=variables)
