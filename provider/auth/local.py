"""The built-in authenticator (``ST_PROVIDER_AUTH=local``): users kept in the provider's database.

For sites without a directory, and the embedded quick start. Users are managed with
``st-provider users add|passwd|remove|list|enable|disable``. Passwords are stored as
scrypt hashes (``hashlib.scrypt``, salted, parameters stored with the hash so they
can be raised later; a login re-hashes a password stored with weaker ones).

Usernames match in their normalised form
(:func:`~provider.auth.usernames.normalise_username`: look-alike spellings such as
``\uff41\uff4c\uff49\uff43\uff45`` are the same user as ``alice``) and are stored in their NFKC display
form. A typed ``DOMAIN\\user`` or ``user@domain`` is
tried as typed, then as the bare ``user``. An unknown user costs one hash like a
known one, so timing does not reveal which usernames exist.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from provider.auth import base
from provider.auth.base import fail
from provider.auth.usernames import display_form, parse_username, username_key
from provider.comms.addresses import InvalidAddress, normalise_phone
from provider.db.auth import LocalUser
from provider.db.base import utcnow
from provider.db.session import Database
from provider.domain import Identity
from provider.errors import ProviderError, StorageError

log = logging.getLogger("provider.auth.local")

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024
_HASH = re.compile(r"^\$scrypt\$ln=(\d+),r=(\d+),p=(\d+)\$([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+)$")


ADMIN = "admin"
VIEWER = "viewer"
#: the console roles a local user may have (``None``: no console access)
CONSOLE_ROLES = (None, ADMIN, VIEWER)


class UserError(ProviderError):
    """A local-user management request cannot be done (unknown user, duplicate, weak password)."""


@dataclass(frozen=True)
class ScryptHasher:
    """scrypt password hashes: ``$scrypt$ln=<log2 N>,r=<r>,p=<p>$<salt>$<hash>`` (base64).

    The default (N=2^15, r=8, p=1: 32 MiB, tens of milliseconds) follows OWASP's
    minimum for scrypt; raise ``log_n`` on stronger hosts.
    """

    log_n: int = 15
    r: int = 8
    p: int = 1
    salt_bytes: int = 16
    key_bytes: int = 32

    def hash(self, password: str) -> str:
        salt = secrets.token_bytes(self.salt_bytes)
        key = self._derive(password, salt, log_n=self.log_n, r=self.r, p=self.p, length=self.key_bytes)
        return (
            f"$scrypt$ln={self.log_n},r={self.r},p={self.p}$"
            f"{base64.b64encode(salt).decode('ascii')}${base64.b64encode(key).decode('ascii')}"
        )

    def verify(self, password: str, encoded: str) -> bool:
        """Whether ``password`` matches ``encoded`` (constant-time comparison; False if malformed)."""
        match = _HASH.match(encoded)
        if match is None:
            return False
        log_n, r, p = (int(match.group(i)) for i in (1, 2, 3))
        if not (1 <= log_n <= 22 and 1 <= r <= 32 and 1 <= p <= 16):
            return False
        salt = base64.b64decode(match.group(4))
        expected = base64.b64decode(match.group(5))
        key = self._derive(password, salt, log_n=log_n, r=r, p=p, length=len(expected))
        return hmac.compare_digest(key, expected)

    def needs_rehash(self, encoded: str) -> bool:
        match = _HASH.match(encoded)
        if match is None:
            return True
        log_n, r, p = (int(match.group(i)) for i in (1, 2, 3))
        return (log_n, r, p) < (self.log_n, self.r, self.p)

    @staticmethod
    def _derive(password: str, salt: bytes, *, log_n: int, r: int, p: int, length: int) -> bytes:
        n = 1 << log_n
        return hashlib.scrypt(
            password.encode("utf-8"),
            salt=salt,
            n=n,
            r=r,
            p=p,
            maxmem=256 * n * r * p + (1 << 20),
            dklen=length,
        )


def check_new_password(password: str) -> None:
    """Refuse passwords the built-in authenticator will not store (raises UserError)."""
    if base.is_blank(password):
        raise UserError("the password must not be empty")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise UserError(f"the password must have at most {MAX_PASSWORD_LENGTH} characters")


@dataclass(frozen=True)
class UserRecord:
    """A local user as ``users list`` shows it (never the hash)."""

    username: str
    email: str | None
    display_name: str | None
    groups: tuple[str, ...]
    enabled: bool
    created_at: datetime
    password_changed_at: datetime
    console_role: str | None = None
    phone: str | None = None


def check_phone(phone: str | None) -> str | None:
    """``phone`` in E.164 (``None`` for none); raises UserError for a number without country code."""
    if phone is None or not phone.strip():
        return None
    try:
        return normalise_phone(phone)
    except InvalidAddress as exc:
        raise UserError(f"not a phone number: {exc}") from exc


class LocalUsers:
    """Managing local users (the ``st-provider users`` commands). Raises UserError or StorageError."""

    def __init__(self, database: Database, hasher: ScryptHasher | None = None) -> None:
        self._database = database
        self._hasher = hasher or ScryptHasher()

    def add(
        self,
        username: str,
        password: str,
        *,
        email: str | None = None,
        display_name: str | None = None,
        groups: Sequence[str] = (),
        enabled: bool = True,
        console_role: str | None = None,
        phone: str | None = None,
    ) -> UserRecord:
        """Add a user; ``console_role`` ("admin"/"viewer") lets them sign in to the console;
        ``phone`` (E.164 after normalising) finds them for a sign-in code sent by SMS."""
        name = display_form(username)
        try:
            parse_username(name)
        except ValueError as exc:
            raise UserError(f"not a usable username: {exc}") from exc
        check_new_password(password)
        phone_number = check_phone(phone)
        if console_role not in CONSOLE_ROLES:
            raise UserError(f"unknown console role {console_role!r}")
        password_hash = self._hasher.hash(password)
        now = utcnow()
        with self._database.session() as session:
            exists = session.execute(
                sa.select(LocalUser.id).where(LocalUser.username_key == username_key(name))
            ).first()
            if exists is not None:
                raise UserError(f"user {name!r} already exists")
            user = LocalUser(
                username_key=username_key(name),
                username=name,
                password_hash=password_hash,
                email=(email or "").strip() or None,
                display_name=(display_name or "").strip() or None,
                groups=[g.strip() for g in groups if g.strip()],
                enabled=enabled,
                console_role=console_role,
                phone=phone_number,
                created_at=now,
                updated_at=now,
                password_changed_at=now,
            )
            session.add(user)
            session.flush()
            return _record(user)

    def set_password(self, username: str, password: str) -> None:
        check_new_password(password)
        password_hash = self._hasher.hash(password)
        with self._database.session() as session:
            user = self._get(session, username)
            user.password_hash = password_hash
            user.password_changed_at = user.updated_at = utcnow()

    def set_phone(self, username: str, phone: str | None) -> str | None:
        """Set (``None``: clear) the user's phone number; the stored E.164 form."""
        number = check_phone(phone)
        with self._database.session() as session:
            user = self._get(session, username)
            user.phone = number
            user.updated_at = utcnow()
        return number

    def set_enabled(self, username: str, enabled: bool) -> None:
        with self._database.session() as session:
            user = self._get(session, username)
            user.enabled = enabled
            user.updated_at = utcnow()

    def remove(self, username: str) -> None:
        with self._database.session() as session:
            session.delete(self._get(session, username))

    def console_role(self, username: str) -> str | None:
        """The console role ("admin"/"viewer") of the enabled local user ``username``, else ``None``."""
        with self._database.session() as session:
            user = session.execute(
                sa.select(LocalUser).where(LocalUser.username_key == username_key(username))
            ).scalar_one_or_none()
            if user is None or not user.enabled:
                return None
            return user.console_role

    def has_console_admin(self) -> bool:
        """Whether some enabled local user has the console role "admin"."""
        with self._database.session() as session:
            found = session.execute(
                sa.select(LocalUser.id).where(LocalUser.console_role == ADMIN, LocalUser.enabled.is_(True))
            ).first()
            return found is not None

    def list_users(self) -> list[UserRecord]:
        with self._database.session() as session:
            users = session.execute(sa.select(LocalUser).order_by(LocalUser.username_key)).scalars().all()
            return [_record(u) for u in users]

    @staticmethod
    def _get(session: Session, username: str) -> LocalUser:
        user = session.execute(
            sa.select(LocalUser).where(LocalUser.username_key == username_key(username))
        ).scalar_one_or_none()
        if user is None:
            raise UserError(f"no local user {display_form(username)!r}")
        return user


def _record(user: LocalUser) -> UserRecord:
    return UserRecord(
        username=user.username,
        email=user.email,
        display_name=user.display_name,
        groups=tuple(user.groups or ()),
        enabled=user.enabled,
        created_at=user.created_at,
        password_changed_at=user.password_changed_at,
        console_role=user.console_role,
        phone=user.phone,
    )


@dataclass(frozen=True)
class _Row:
    id: int
    username: str
    password_hash: str
    email: str | None
    display_name: str | None
    groups: tuple[str, ...]
    enabled: bool


class LocalAuthenticator:
    """An :class:`~provider.domain.Authenticator` over the ``auth_local_users`` table.

    A database failure raises StorageError: the caller answers ``Success=false`` saying
    the provider (not a directory) is unavailable.
    """

    def __init__(self, database: Database, hasher: ScryptHasher | None = None) -> None:
        self._database = database
        self._hasher = hasher or ScryptHasher()
        self._decoy: str | None = None
        self._decoy_lock = threading.Lock()

    def authenticate(self, username: str, password: str, *, client_address: str | None = None) -> Identity:
        name = base.login_name(username, password, backend="local", client=client_address)
        if len(password) > MAX_PASSWORD_LENGTH:
            self._hasher.verify(password[:MAX_PASSWORD_LENGTH], self._decoy_hash())
            raise fail(base.BAD_PASSWORD, backend="local", username=name.typed, client=client_address)
        row = self._find((name.typed, name.account))
        if row is None:
            self._hasher.verify(password, self._decoy_hash())  # the same cost as a real check
            raise fail(base.UNKNOWN_USER, backend="local", username=name.typed, client=client_address)
        if not self._hasher.verify(password, row.password_hash):
            raise fail(base.BAD_PASSWORD, backend="local", username=name.typed, client=client_address)
        if not row.enabled:
            raise fail(base.DISABLED, backend="local", username=name.typed, client=client_address)
        if self._hasher.needs_rehash(row.password_hash):
            self._rehash(row.id, password)
        log.info(
            "local password accepted",
            extra={"event": "auth.ok", "backend": "local", "username": row.username},
        )
        return _identity(row)

    def lookup(self, username: str) -> Identity | None:
        try:
            name = parse_username(username)
        except ValueError:
            return None
        row = self._find((name.typed, name.account))
        if row is None or not row.enabled:
            return None
        return _identity(row)

    def lookup_address(self, address: str, kind: str) -> Identity | None:
        """The enabled user whose e-mail address (``kind`` ``email``, compared lower-cased) or
        phone number (``sms``, E.164) is ``address`` (normalised); ``None`` when none or several."""
        column = sa.func.lower(LocalUser.email) if kind == "email" else LocalUser.phone
        with self._database.session() as session:
            users = (
                session.execute(
                    sa.select(LocalUser).where(column == address, LocalUser.enabled.is_(True)).limit(2)
                )
                .scalars()
                .all()
            )
            if len(users) != 1:
                return None
            user = users[0]
            return Identity(
                username=user.username,
                email=user.email,
                display_name=user.display_name,
                groups=tuple(user.groups or ()),
            )

    def _find(self, names: Sequence[str]) -> _Row | None:
        """The first of ``names`` (by normalised key) that is a local user. Raises StorageError."""
        keys = list(dict.fromkeys(username_key(n) for n in names))
        with self._database.session() as session:
            users = {
                u.username_key: u
                for u in session.execute(
                    sa.select(LocalUser).where(LocalUser.username_key.in_(keys))
                ).scalars()
            }
            for key in keys:
                user = users.get(key)
                if user is not None:
                    return _Row(
                        id=user.id,
                        username=user.username,
                        password_hash=user.password_hash,
                        email=user.email,
                        display_name=user.display_name,
                        groups=tuple(user.groups or ()),
                        enabled=user.enabled,
                    )
        return None

    def _rehash(self, user_id: int, password: str) -> None:
        try:
            with self._database.session() as session:
                user = session.get(LocalUser, user_id)
                if user is not None:
                    user.password_hash = self._hasher.hash(password)
                    user.updated_at = utcnow()
        except StorageError as exc:
            log.warning("password re-hash failed", extra={"event": "auth.rehash_failed", "error": str(exc)})

    def _decoy_hash(self) -> str:
        with self._decoy_lock:
            if self._decoy is None:
                self._decoy = self._hasher.hash(secrets.token_urlsafe(16))
            return self._decoy


def _identity(row: _Row) -> Identity:
    return Identity(
        username=row.username,
        email=row.email,
        display_name=row.display_name,
        dn=None,
        attributes={},
        groups=row.groups,
    )
