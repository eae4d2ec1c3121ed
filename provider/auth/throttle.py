"""Brute-force protection, counted in the database so it holds across workers and instances.

Every attempt that may reach the directory is counted **before** the password is
checked: :meth:`Throttle.reserve` adds one to the counter of the username (its
normalised key, whatever form or look-alike spelling was typed) and, when
``max_failures_per_address`` is set, of the client address, in one transaction that
locks the counter rows. The attempt that brings a counter to its limit sets the lock;
later attempts see the lock and fail at once for ``cooldown_seconds`` without
reaching the directory. So however many attempts arrive at the same moment, at most
``max_failures`` per username reach the directory within ``window_seconds``, and the
provider never drives a real Active Directory account into lockout by itself.

After the check the reservation is settled (:meth:`Throttle.settle`):

* a wrong password (or any other counted refusal) keeps the count and records the
  reason (``last_reason``, read by ``st-provider call --explain``);
* a successful login clears the username's counter and gives back the address's;
* an attempt that never checked a password (a blank password, an unusable username,
  an unreachable directory) gives back what it took.

If the database cannot be reached the login is refused (fail closed) with a
:class:`~provider.errors.StorageError`: SmarterTrack is told the provider is
unavailable.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum

import sqlalchemy as sa
from sqlalchemy.orm import Session

from provider.auth import base
from provider.auth.usernames import parse_username
from provider.db.auth import LoginThrottle
from provider.db.session import Database, conflict_insert
from provider.domain import Authenticator, Identity
from provider.errors import AuthenticationFailed, DirectoryUnavailable, StorageError
from provider.metrics import LOGINS
from provider.settings import ThrottleSettings

log = logging.getLogger("provider.auth.throttle")

PURGE_EVERY = 200
MAX_REASON_LENGTH = 40


@dataclass(frozen=True)
class Lock:
    """A key that is locked, and until when."""

    key: str
    until: datetime


@dataclass(frozen=True)
class Reservation:
    """One counted attempt: the keys it counted against, in which window, and the locks it set."""

    windows: tuple[tuple[str, datetime], ...]
    locks: tuple[Lock, ...] = ()

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(key for key, _ in self.windows)


class Outcome(Enum):
    """How a reserved attempt ended (see :meth:`Throttle.settle`)."""

    FAILED = "failed"  # a counted refusal: keep the count
    SUCCEEDED = "succeeded"  # clear the username, give back the address
    NOT_CHECKED = "not_checked"  # no password was checked: give back everything


@dataclass(frozen=True)
class KeyStatus:
    """What the counters say about one key (``users list``, ``call --explain``)."""

    key: str
    failures: int
    locked_until: datetime | None
    last_reason: str | None
    last_failure_at: datetime | None


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
    """Attempt counters in the ``auth_throttle`` table. Every method raises StorageError."""

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

    def reserve(self, keys: Iterable[str]) -> Reservation | Lock:
        """Count one attempt against every key, atomically, before the password is checked.

        Returns the :class:`Lock` that refuses the attempt (nothing is counted then), or
        the :class:`Reservation` to :meth:`settle` once the outcome is known. The rows
        are locked in a fixed order (``SELECT ... FOR UPDATE``; SQLite's write lock), so
        concurrent attempts are counted one after the other and never deadlock.
        """
        now = self._clock()
        wanted = sorted(set(keys))
        if not wanted:
            return Reservation(windows=())
        with self._database.session(immediate=True) as session:
            rows = [self._locked_row(session, key, now) for key in wanted]
            for row in rows:
                if row.locked_until is not None and row.locked_until > now:
                    return Lock(key=row.key, until=row.locked_until)
            locks = [lock for row in rows if (lock := self._count(row, now)) is not None]
            reservation = Reservation(
                windows=tuple((row.key, row.window_start) for row in rows), locks=tuple(locks)
            )
        self._maybe_purge(now)
        return reservation

    def settle(self, reservation: Reservation, outcome: Outcome, reason: str | None = None) -> None:
        """Finish a reserved attempt (see the module docstring); ``reason`` is recorded on failure."""
        if not reservation.windows:
            return
        now = self._clock()
        with self._database.session(immediate=True) as session:
            for key, window_start in reservation.windows:
                row = session.execute(
                    sa.select(LoginThrottle).where(LoginThrottle.key == key).with_for_update()
                ).scalar_one_or_none()
                if row is None:
                    continue
                if outcome is Outcome.FAILED:
                    row.last_reason = (reason or "")[:MAX_REASON_LENGTH] or None
                    row.last_failure_at = now
                    row.updated_at = now
                elif outcome is Outcome.SUCCEEDED and key.startswith("user:"):
                    session.delete(row)
                elif row.window_start == window_start:
                    self._give_back(row, reservation.locks, now)

    def record_failure(self, keys: Iterable[str], reason: str | None = None) -> list[Lock]:
        """Count one failure against each key whether or not it is locked (tests and tools)."""
        now = self._clock()
        locks: list[Lock] = []
        with self._database.session(immediate=True) as session:
            for key in sorted(set(keys)):
                row = self._locked_row(session, key, now)
                if row.locked_until is not None and row.locked_until > now:
                    row.failures += 1
                elif (lock := self._count(row, now)) is not None:
                    locks.append(lock)
                row.last_reason, row.last_failure_at = reason, now
        return locks

    def status(self, keys: Iterable[str]) -> dict[str, KeyStatus]:
        """The counters of ``keys`` that have one (expired locks read as ``None``)."""
        wanted = sorted(set(keys))
        if not wanted:
            return {}
        now = self._clock()
        with self._database.session() as session:
            rows = session.execute(sa.select(LoginThrottle).where(LoginThrottle.key.in_(wanted))).scalars()
            return {
                row.key: KeyStatus(
                    key=row.key,
                    failures=row.failures,
                    locked_until=row.locked_until if row.locked_until and row.locked_until > now else None,
                    last_reason=row.last_reason,
                    last_failure_at=row.last_failure_at,
                )
                for row in rows
            }

    def clear(self, keys: Iterable[str]) -> int:
        """Forget the counters and locks of ``keys``; returns how many existed."""
        wanted = sorted(set(keys))
        if not wanted:
            return 0
        with self._database.session() as session:
            result = session.execute(sa.delete(LoginThrottle).where(LoginThrottle.key.in_(wanted)))
            return int(getattr(result, "rowcount", 0) or 0)

    # --- counting ----------------------------------------------------------------------

    def _locked_row(self, session: Session, key: str, now: datetime) -> LoginThrottle:
        """The counter row of ``key`` (created when missing), locked for this transaction."""
        values = {"key": key, "failures": 0, "window_start": now, "locked_until": None, "updated_at": now}
        insert = conflict_insert(self._database.engine.dialect.name, LoginThrottle)
        session.execute(insert.values(**values).on_conflict_do_nothing())
        return session.execute(
            sa.select(LoginThrottle).where(LoginThrottle.key == key).with_for_update()
        ).scalar_one()

    def _count(self, row: LoginThrottle, now: datetime) -> Lock | None:
        """Add one attempt to an unlocked row; the lock it sets on reaching the limit, if any."""
        window = timedelta(seconds=self._settings.window_seconds)
        if row.locked_until is not None or row.window_start <= now - window:
            row.failures = 0  # a new window, or the first attempt after a lock ran out
            row.window_start = now
            row.locked_until = None
        row.failures += 1
        row.updated_at = now
        if row.failures < self.limit(row.key):
            return None
        row.locked_until = now + timedelta(seconds=self._settings.cooldown_seconds)
        return Lock(key=row.key, until=row.locked_until)

    @staticmethod
    def _give_back(row: LoginThrottle, locks: Sequence[Lock], now: datetime) -> None:
        """Undo one counted attempt on ``row``, and the lock it set (if nothing set a later one)."""
        row.failures = max(row.failures - 1, 0)
        row.updated_at = now
        if any(lock.key == row.key and lock.until == row.locked_until for lock in locks):
            row.locked_until = None

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
    """The front door of every authenticator: throttling, the login metrics, then the backend.

    ``authenticate`` raises AuthenticationFailed, DirectoryUnavailable, or StorageError
    when the provider's own database (the counters, local users) is out of reach.
    """

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
            reserved = self._throttle.reserve(keys)
        except StorageError:
            LOGINS.labels(operation="authenticate", outcome="unavailable").inc()
            log.error("login throttle unavailable", extra={"event": "auth.throttle_unavailable"})
            raise
        if isinstance(reserved, Lock):
            LOGINS.labels(operation="authenticate", outcome="throttled").inc()
            raise base.fail(
                base.THROTTLED,
                backend=self._backend,
                key_kind=reserved.key.split(":", 1)[0],
                locked_until=reserved.until.isoformat(),
                username=username.strip(),
                client=client_address,
            )
        try:
            identity = self._inner.authenticate(username, password, client_address=client_address)
        except AuthenticationFailed as exc:
            LOGINS.labels(operation="authenticate", outcome="fail").inc()
            if exc.reason in base.NOT_COUNTED:
                self._settle(reserved, Outcome.NOT_CHECKED)
            else:
                self._settle(reserved, Outcome.FAILED, exc.reason)
                self._log_locks(reserved, username, client_address)
            raise
        except (DirectoryUnavailable, StorageError):
            LOGINS.labels(operation="authenticate", outcome="unavailable").inc()
            self._settle(reserved, Outcome.NOT_CHECKED)
            raise
        LOGINS.labels(operation="authenticate", outcome="ok").inc()
        self._settle(reserved, Outcome.SUCCEEDED)
        log.debug(
            "login checked",
            extra={
                "event": "auth.checked",
                "backend": self._backend,
                "seconds": time.perf_counter() - started,
            },
        )
        return identity

    def _settle(self, reservation: Reservation, outcome: Outcome, reason: str | None = None) -> None:
        """Settle, logging (never raising) a storage failure: the attempt then stays counted."""
        try:
            self._throttle.settle(reservation, outcome, reason)
        except StorageError as exc:
            log.warning(
                "could not settle a login attempt",
                extra={"event": "auth.throttle_settle_failed", "outcome": outcome.value, "error": str(exc)},
            )

    @staticmethod
    def _log_locks(reservation: Reservation, username: str, client_address: str | None) -> None:
        for lock in reservation.locks:
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
        except (DirectoryUnavailable, StorageError):
            LOGINS.labels(operation="lookup", outcome="unavailable").inc()
            raise
        LOGINS.labels(operation="lookup", outcome="ok" if identity is not None else "fail").inc()
        return identity
