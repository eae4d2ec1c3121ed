"""The directory checks of ``st-provider ldap check`` and the console's Directory page.

Two checks, each returning a structured result the two front ends print or render:

* :func:`check_connection`: every configured server in turn (reachable, TLS, service bind);
* :func:`check_user`: where a username is found (filter, DN, how many entries matched),
  its attributes (secret ones never read into them), groups, account state and the required
  group, then, when a password is given, whether it is accepted and the precise reason when not.

The password is only handed to the authenticator: it is never stored in a result, logged or
returned. The console passes the throttled authenticator as ``verifier`` so a password test
counts like a sign-in (it cannot be used to guess passwords).
"""

from __future__ import annotations

from dataclasses import dataclass

from provider.auth import base
from provider.auth.explain import REASONS
from provider.auth.ldap import LdapAuthenticator, UserReport
from provider.auth.ldap_pool import LdapPool, ServerReport
from provider.auth.usernames import parse_username
from provider.domain import Authenticator
from provider.errors import AuthenticationFailed, DirectoryUnavailable

ACCEPTED = "accepted"
REFUSED = "refused"
NOT_CHECKED = "not checked"

#: What to look at when a server check fails.
CONNECTION_HINT = "check the URL, the firewall, ST_PROVIDER_LDAP_CA_FILE and the host name in the certificate"

#: Reasons :data:`provider.auth.explain.REASONS` does not cover, for an administrator.
_MORE_REASONS = {
    base.THROTTLED: "too many failed logins for this username: it is locked for now "
    "(st-provider users unlock NAME clears it)",
    base.EMPTY_PASSWORD: "no password was given",
    base.INVALID_USERNAME: "the username is not usable (empty, too long or control characters)",
    "no_service_account": "there is no service account (ST_PROVIDER_LDAP_BIND_DN) and the directory "
    "does not allow anonymous searches",
}


def reason_text(reason: str | None) -> str:
    """An administrator's sentence for a log-only refusal reason (the reason itself if unknown)."""
    if reason is None:
        return ""
    return REASONS.get(reason) or _MORE_REASONS.get(reason) or reason


@dataclass(frozen=True)
class ConnectionCheck:
    """Each configured server: reachable, TLS, service bind (see :class:`ServerReport`)."""

    servers: tuple[ServerReport, ...]

    @property
    def ok(self) -> bool:
        return bool(self.servers) and all(server.ok for server in self.servers)


def check_connection(pool: LdapPool) -> ConnectionCheck:
    """Connect to every server of ``pool`` in turn, with fresh connections (never the pooled ones)."""
    return ConnectionCheck(tuple(pool.check_servers()))


@dataclass(frozen=True)
class PasswordCheck:
    """Whether a password was accepted; ``reason`` is the log-only code, ``detail`` its explanation."""

    outcome: str
    reason: str | None = None
    detail: str = ""


@dataclass(frozen=True)
class UserCheck:
    """Where a username is found and what the directory says about it (never the password)."""

    username: str
    search_filter: str
    #: the search result; None when the directory was unavailable (see ``unavailable``)
    report: UserReport | None
    unavailable: str | None
    required_group: str | None
    password: PasswordCheck | None

    @property
    def ok(self) -> bool:
        usable = self.report is not None and self.report.problem is None
        return usable and (self.password is None or self.password.outcome == ACCEPTED)

    @property
    def in_required_group(self) -> bool | None:
        """Whether the user is in the required group; None when none is required or the account
        has another problem (the group is checked only for an otherwise usable account)."""
        if not self.required_group or self.report is None or self.report.entry is None:
            return None
        if self.report.problem == base.NOT_IN_GROUP:
            return False
        return True if self.report.problem is None else None

    @property
    def problem_text(self) -> str:
        """The account problem (``disabled``, ``not_in_group``...) explained, or ``""``."""
        return reason_text(self.report.problem if self.report is not None else None)


def search_filter(authenticator: LdapAuthenticator, username: str) -> str:
    """The LDAP filter a lookup of ``username`` uses (``(not a usable username)`` when none)."""
    try:
        return authenticator.user_filter(parse_username(username))
    except ValueError:
        return "(not a usable username)"


def check_password(
    verifier: Authenticator, username: str, password: str, *, client_address: str | None = None
) -> PasswordCheck:
    """Try ``password`` for ``username`` through ``verifier`` (the throttle counts it when it is one)."""
    try:
        verifier.authenticate(username, password, client_address=client_address)
    except AuthenticationFailed as exc:
        return PasswordCheck(REFUSED, exc.reason, reason_text(exc.reason))
    except DirectoryUnavailable as exc:
        return PasswordCheck(NOT_CHECKED, "unavailable", f"directory unavailable ({exc})")
    return PasswordCheck(ACCEPTED)


def check_user(
    authenticator: LdapAuthenticator,
    username: str,
    password: str | None = None,
    *,
    required_group: str | None = None,
    verifier: Authenticator | None = None,
    client_address: str | None = None,
) -> UserCheck:
    """Look ``username`` up (no password), then check ``password`` when given.

    The password goes through ``verifier`` (default: ``authenticator`` itself, unthrottled).
    Raises StorageError when the throttle's database cannot be read.
    """
    filter_text = search_filter(authenticator, username)
    try:
        report = authenticator.inspect(username)
    except DirectoryUnavailable as exc:
        return UserCheck(username.strip(), filter_text, None, str(exc), required_group, None)
    checked = None
    if password is not None:
        checked = check_password(
            verifier if verifier is not None else authenticator,
            username,
            password,
            client_address=client_address,
        )
    return UserCheck(username.strip(), filter_text, report, None, required_group, checked)
