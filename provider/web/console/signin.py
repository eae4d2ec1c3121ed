"""Who may sign in to the console, and with which role.

Admins and viewers come from two places, checked through the existing authenticators
(so failed sign-ins are counted by the same brute-force throttle as portal logins):

* local users with a console role (``st-provider users add NAME --admin`` / ``--viewer``);
* when a directory is configured, its members of ``ST_PROVIDER_ADMIN_GROUP`` (may change
  things) or ``ST_PROVIDER_VIEWER_GROUP`` (read-only).

A local console user is checked against the local table whatever ``ST_PROVIDER_AUTH`` says;
anyone else against the directory when groups are configured; otherwise the attempt still
goes through the local authenticator, so an unknown name costs the same and is counted.
"""

from __future__ import annotations

from dataclasses import dataclass

from provider.auth import base
from provider.auth.local import ADMIN, VIEWER, LocalAuthenticator, LocalUsers
from provider.auth.throttle import Throttle, ThrottledAuthenticator
from provider.db.session import Database
from provider.domain import Authenticator, Identity
from provider.errors import AuthenticationFailed
from provider.settings import Settings

LOCAL = "local"
DIRECTORY = "directory"


@dataclass(frozen=True)
class ConsoleUser:
    """A signed-in console user: the name shown and audited, and the role."""

    name: str
    role: str
    #: where the role comes from: LOCAL (re-read on every request) or DIRECTORY (kept for the session)
    source: str = "local"

    @property
    def is_admin(self) -> bool:
        return self.role == ADMIN


class ConsoleSignIn:
    """Checks console sign-ins. Raises StorageError / DirectoryUnavailable when a backend cannot answer."""

    def __init__(
        self,
        users: LocalUsers,
        local: Authenticator,
        *,
        directory: Authenticator | None = None,
        admin_group: str | None = None,
        viewer_group: str | None = None,
    ) -> None:
        self._users = users
        self._local = local
        self._directory = directory if (admin_group or viewer_group) else None
        self._admin_group = admin_group
        self._viewer_group = viewer_group

    @classmethod
    def from_settings(
        cls, settings: Settings, database: Database, directory: Authenticator | None
    ) -> ConsoleSignIn:
        """The sign-in for ``settings``; ``directory`` is the provider's (throttled) LDAP authenticator."""
        local = ThrottledAuthenticator(
            LocalAuthenticator(database), Throttle(database, settings.throttle), backend="local"
        )
        return cls(
            LocalUsers(database),
            local,
            directory=directory if settings.auth == "ldap" else None,
            admin_group=settings.console.admin_group,
            viewer_group=settings.console.viewer_group,
        )

    def admin_configured(self) -> bool:
        """Whether anyone could sign in as an admin (a directory admin group, or a local admin)."""
        return (self._directory is not None and bool(self._admin_group)) or self._users.has_console_admin()

    def current(self, user: ConsoleUser) -> ConsoleUser | None:
        """``user`` as of now: a local user's role is read again (removed, disabled or changed
        takes effect at the next request); a directory user's stays as signed in (the idle
        timeout bounds it). Raises StorageError."""
        if user.source != LOCAL:
            return user
        role = self._users.console_role(user.name)
        return ConsoleUser(user.name, role, LOCAL) if role is not None else None

    def sign_in(self, username: str, password: str, *, client: str | None) -> ConsoleUser | None:
        """The console user for these credentials, or ``None`` (wrong, unknown, or no console role)."""
        try:
            return self._check(username, password, client)
        except AuthenticationFailed:
            return None

    def _check(self, username: str, password: str, client: str | None) -> ConsoleUser | None:
        role = self._users.console_role(username)
        if role is not None:
            identity = self._local.authenticate(username, password, client_address=client)
            return ConsoleUser(identity.username, role, LOCAL)
        if self._directory is not None:
            identity = self._directory.authenticate(username, password, client_address=client)
            role = self._group_role(identity)
            return ConsoleUser(identity.username, role, DIRECTORY) if role is not None else None
        self._local.authenticate(username, password, client_address=client)
        return None

    def _group_role(self, identity: Identity) -> str | None:
        """ADMIN or VIEWER by the identity's groups (a DN setting matches by its first RDN value)."""
        if _member(identity, self._admin_group):
            return ADMIN
        if _member(identity, self._viewer_group):
            return VIEWER
        return None


def _member(identity: Identity, group: str | None) -> bool:
    if not group:
        return False
    name = base.rdn_value(group) if "=" in group else group
    return base.group_matches(name, identity.groups, ())
