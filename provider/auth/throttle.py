"""Brute-force protection, counted in the database so it holds across workers and instances.

After ``max_failures`` failed logins for one username (whatever form it was typed
in) within ``window_seconds``, or ``max_failures_per_address`` from one client
address, further attempts for that username or address fail at once for
``cooldown_seconds`` without reaching the directory, so the provider never drives a
real Active Directory account into lockout by itself. A successful login clears the
username's counter (not the address's). Attempts refused for a blank password or an
unusable username, or while locked, are not counted.

If the database cannot be reached the login is refused as unavailable (fail closed):
the caller answers ``Success=false`` and SmarterTrack shows the error.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from provider.auth import base
from provider.auth.usernames import parse_username
from provider.db.auth import LoginThrottle
from provider.db.session import Database
from provider.domain import Authenticator, Identity
from provider.errors import AuthenticationFailed, DirectoryUnavailable, StorageError
from provider.metrics import LOGINS
from provider.settings import ThrottleSettings

log = logging.getLogger("provider.auth.throttle")

PURGE_EVERY = 200


@dataclass(frozen=True)
class Lock:
    """A key that is locked, and until when."""

    key: str
    until: datetime


@dataclass(frozen=True)
class ThrottleState:
    """What the counters say before an attempt: a lock, if any, and which keys have a counter."""

    lock: Lock | None
    counted: frozenset[str]


def user_key(username: str) -> str | None:
    """The throttle key of a typed username (``None`` if it is not a usable username)."""
    try:
        return "user:" + parse_username(username).key
    except ValueError:
        return None


def address_key(address: str | None) -> str | None:
    if not address or not address.strip():
        return None
    return "addr:" + address.strip()[:280]


class Throttle:
    """Failed-login counters in the ``auth_throttle`` table."""

    def __init__(
        self,
        database: Database,
        settings: ThrottleSettings,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._database = database
        self._settings = settings
        self._clock = clock
        self._writes = 0

    def state(self, keys: Iterable[str]) -> ThrottleState:
        """The first of ``keys`` locked now (if any) and the keys that have counters. Raises StorageError."""
        wanted = sorted(set(keys))
        if not wanted:
            return ThrottleState(lock=None, counted=frozenset())
        now = self._clock()
        with self._database.session() as session:
            rows = session.execute(
                sa.select(LoginThrottle.key, LoginThrottle.locked_until).where(LoginThrottle.key.in_(wanted))
            ).all()
        lock = next((Lock(key=k, until=u) for k, u in rows if u is not None and u > now), None)
        return ThrottleState(lock=lock, counted=frozenset(k for k, _ in rows))

    def locked(self, keys: Iterable[str]) -> Lock | None:
        """The first of ``keys`` that is locked now, if any. Raises StorageError."""
        return self.state(keys).lock

    @property
    def counts_addresses(self) -> bool:
        """Whether failures are also counted per client address (``max_failures_per_address > 0``)."""
        return self._settings.max_failures_per_address > 0

    def limit(self, key: str) -> int:
        return (
            self._settings.max_failures_per_address
            if key.startswith("addr:")
            else self._settings.max_failures
        )

    def record_failure(self, keys: Iterable[str]) -> list[Lock]:
        """Count one failure against each key; returns the locks this failure set. Raises StorageError."""
        now = self._clock()
        window = timedelta(seconds=self._settings.window_seconds)
        cooldown = timedelta(seconds=self._settings.cooldown_seconds)
        new_locks: list[Lock] = []
        wanted = sorted(set(keys))  # a fixed order: two workers never wait on each other in a cycle
        if not wanted:
            return new_locks
        with self._database.session(immediate=True) as session:
            for key in wanted:
                self._ensure_row(session, key, now)
                row = session.execute(
                    sa.select(LoginThrottle).where(LoginThrottle.key == key).with_for_update()
                ).scalar_one()
                if row.window_start <= now - window:
                    row.failures = 0
                    row.window_start = now
                row.failures += 1
                row.updated_at = now
                if row.failures >= self.limit(key):
                    row.locked_until = now + cooldown
                    row.failures = 0
                    row.window_start = now
                    new_locks.append(Lock(key=key, until=row.locked_until))
        self._maybe_purge(now)
        return new_locks

    def _ensure_row(self, session: Session, key: str, now: datetime) -> None:
        values = {"key": key, "failures": 0, "window_start": now, "locked_until": None, "updated_at": now}
        if self._database.is_postgresql:
            session.execute(postgresql.insert(LoginThrottle).values(**values).on_conflict_do_nothing())
        else:
            session.execute(sqlite.insert(LoginThrottle).values(**values).on_conflict_do_nothing())

    def clear(self, keys: Iterable[str]) -> int:
        """Forget the counters and locks of ``keys``; returns how many existed. Raises StorageError."""
        wanted = sorted(set(keys))
        if not wanted:
            return 0
        with self._database.session() as session:
            result = session.execute(sa.delete(LoginThrottle).where(LoginThrottle.key.in_(wanted)))
            return int(getattr(result, "rowcount", 0) or 0)

    def _maybe_purge(self, now: datetime) -> None:
        self._writes += 1
        if self._writes % PURGE_EVERY:
            return
        horizon = now - timedelta(seconds=max(self._settings.window_seconds, self._settings.cooldown_seconds))
        try:
            with self._database.session() as session:
                session.execute(
                    sa.delete(LoginThrottle).where(
                        LoginThrottle.updated_at < horizon,
                        sa.or_(LoginThrottle.locked_until.is_(None), LoginThrottle.locked_until < now),
                    )
                )
        except StorageError as exc:
            log.warning(
                "throttle purge failed", extra={"event": "auth.throttle_purge_failed", "error": str(exc)}
            )


class ThrottledAuthenticator:
    """The front door of every authenticator: throttling, the login metrics, then the backend."""

    def __init__(self, inner: Authenticator, throttle: Throttle, *, backend: str) -> None:
        self._inner = inner
        self._throttle = throttle
        self._backend = backend

    @property
    def inner(self) -> Authenticator:
        return self._inner

    def authenticate(self, username: str, password: str, *, client_address: str | None = None) -> Identity:
        address = address_key(client_address) if self._throttle.counts_addresses else None
        keys = [k for k in (user_key(username), address) if k]
        started = time.perf_counter()
        try:
            state = self._throttle.state(keys)
        except StorageError as exc:
            LOGINS.labels(operation="authenticate", outcome="unavailable").inc()
            log.error(
                "login throttle unavailable", extra={"event": "auth.throttle_unavailable", "error": str(exc)}
            )
            raise DirectoryUnavailable("the login throttle store is unavailable") from exc
        lock = state.lock
        if lock is not None:
            LOGINS.labels(operation="authenticate", outcome="throttled").inc()
            raise base.fail(
                base.THROTTLED,
                backend=self._backend,
                key_kind=lock.key.split(":", 1)[0],
                locked_until=lock.until.isoformat(),
                username=username.strip(),
                client=client_address,
            )
        try:
            identity = self._inner.authenticate(username, password, client_address=client_address)
        except AuthenticationFailed as exc:
            LOGINS.labels(operation="authenticate", outcome="fail").inc()
            if exc.reason not in base.NOT_COUNTED:
                self._count_failure(keys, username, client_address)
            raise
        except DirectoryUnavailable:
            LOGINS.labels(operation="authenticate", outcome="unavailable").inc()
            raise
        LOGINS.labels(operation="authenticate", outcome="ok").inc()
        user = user_key(username)
        if user and user in state.counted:  # most logins have nothing to reset: no write
            try:
                self._throttle.clear([user])
            except StorageError as exc:
                log.warning(
                    "could not reset the failure count",
                    extra={"event": "auth.throttle_reset_failed", "error": str(exc)},
                )
        log.debug(
            "login checked",
            extra={
                "event": "auth.checked",
                "backend": self._backend,
                "seconds": time.perf_counter() - started,
            },
        )
        return identity

    def _count_failure(self, keys: list[str], username: str, client_address: str | None) -> None:
        try:
            locks = self._throttle.record_failure(keys)
        except StorageError as exc:
            log.error(
                "could not count a failed login",
                extra={"event": "auth.throttle_unavailable", "error": str(exc)},
            )
            return
        for lock in locks:
            log.warning(
                "too many failed logins: locked",
                extra={
                    "event": "auth.lockout",
                    "key_kind": lock.key.split(":", 1)[0],
                    "username": username.strip() if lock.key.startswith("user:") else None,
                    "client": client_address,
                    "locked_until": lock.until.isoformat(),
                },
            )

    def lookup(self, username: str) -> Identity | None:
        try:
            identity = self._inner.lookup(username)
        except DirectoryUnavailable:
            LOGINS.labels(operation="lookup", outcome="unavailable").inc()
            raise
        LOGINS.labels(operation="lookup", outcome="ok" if identity is not None else "fail").inc()
        return identity
