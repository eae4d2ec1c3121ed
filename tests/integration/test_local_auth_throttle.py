"""Brute-force protection counted in the database (SQLite and PostgreSQL)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from provider.auth.local import LocalAuthenticator, LocalUsers, ScryptHasher
from provider.auth.throttle import Throttle, ThrottledAuthenticator
from provider.db.auth import LoginThrottle
from provider.db.session import Database
from provider.domain import Identity
from provider.errors import AuthenticationFailed, StorageError
from provider.settings import ThrottleSettings

FAST = ScryptHasher(log_n=10)
LIMITS = ThrottleSettings(max_failures=3, window_seconds=60, cooldown_seconds=120, max_failures_per_address=5)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


class CountingAuthenticator:
    """Wraps a real authenticator and counts the attempts that reach it."""

    def __init__(self, inner: LocalAuthenticator) -> None:
        self.inner = inner
        self.calls = 0

    def authenticate(self, username: str, password: str, *, client_address: str | None = None) -> Identity:
        self.calls += 1
        return self.inner.authenticate(username, password, client_address=client_address)

    def lookup(self, username: str) -> Identity | None:
        return self.inner.lookup(username)


@pytest.fixture
def database(request: pytest.FixtureRequest, sqlite_url: str) -> Iterator[Database]:
    """SQLite unless a test asks for both databases with BOTH (the rules are backend-neutral)."""
    kind = getattr(request, "param", "sqlite")
    db = Database(sqlite_url if kind == "sqlite" else request.getfixturevalue("postgres_url"))
    yield db
    db.dispose()


BOTH = pytest.mark.parametrize(
    "database", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def backend(database: Database) -> CountingAuthenticator:
    LocalUsers(database, FAST).add("alice", "alice-password-1")
    LocalUsers(database, FAST).add("bob", "bob-password-1")
    return CountingAuthenticator(LocalAuthenticator(database, FAST))


@pytest.fixture
def guarded(database: Database, backend: CountingAuthenticator, clock: Clock) -> ThrottledAuthenticator:
    return ThrottledAuthenticator(backend, Throttle(database, LIMITS, clock=clock), backend="local")


def reason(
    auth: ThrottledAuthenticator, username: str, password: str, client: str | None = "192.0.2.1"
) -> str:
    try:
        auth.authenticate(username, password, client_address=client)
    except AuthenticationFailed as exc:
        return exc.reason
    return "ok"


@BOTH
def test_lockout_after_max_failures_holds_the_right_password_back(
    guarded: ThrottledAuthenticator, backend: CountingAuthenticator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    assert [reason(guarded, "alice", "wrong-1") for _ in range(3)] == ["bad_password"] * 3
    assert backend.calls == 3
    assert reason(guarded, "alice", "alice-password-1") == "throttled"
    assert reason(guarded, "EXAMPLE\\ALICE", "alice-password-1") == "throttled"  # every form of the name
    assert backend.calls == 3  # never reached the backend
    assert [r.key_kind for r in caplog.records if getattr(r, "event", None) == "auth.lockout"] == ["user"]
    assert reason(guarded, "bob", "bob-password-1") == "ok"  # another user is unaffected


def test_the_lock_ends_after_the_cooldown(guarded: ThrottledAuthenticator, clock: Clock) -> None:
    for _ in range(3):
        reason(guarded, "alice", "wrong-1")
    clock.now += timedelta(seconds=119)
    assert reason(guarded, "alice", "alice-password-1") == "throttled"
    clock.now += timedelta(seconds=2)
    assert reason(guarded, "alice", "alice-password-1") == "ok"


def test_failures_outside_the_window_are_forgotten(guarded: ThrottledAuthenticator, clock: Clock) -> None:
    for _ in range(2):
        reason(guarded, "alice", "wrong-1")
    clock.now += timedelta(seconds=61)
    for _ in range(2):
        assert reason(guarded, "alice", "wrong-1") == "bad_password"
    assert reason(guarded, "alice", "alice-password-1") == "ok"


def test_success_resets_the_username_counter(guarded: ThrottledAuthenticator) -> None:
    for _ in range(2):
        reason(guarded, "alice", "wrong-1")
    assert reason(guarded, "alice", "alice-password-1") == "ok"
    for _ in range(2):
        assert reason(guarded, "alice", "wrong-1") == "bad_password"
    assert reason(guarded, "alice", "alice-password-1") == "ok"


def test_one_address_guessing_many_usernames_is_locked(guarded: ThrottledAuthenticator) -> None:
    names = [f"user{i}" for i in range(5)]
    assert [reason(guarded, n, "guess-1", client="198.51.100.66") for n in names] == ["unknown_user"] * 5
    assert reason(guarded, "bob", "bob-password-1", client="198.51.100.66") == "throttled"
    assert reason(guarded, "bob", "bob-password-1", client="198.51.100.67") == "ok"


def test_blank_passwords_and_bad_names_are_not_counted(guarded: ThrottledAuthenticator) -> None:
    for _ in range(5):
        assert reason(guarded, "alice", " ") == "empty_password"
    assert reason(guarded, "alice", "alice-password-1") == "ok"


@BOTH
def test_concurrent_failures_from_several_connections_are_all_counted(database: Database) -> None:
    # Two engines on one database, like two gunicorn workers: no lost updates.
    settings = ThrottleSettings(
        max_failures=1000, window_seconds=600, cooldown_seconds=60, max_failures_per_address=1000
    )
    engines = [Database(database.url), Database(database.url)]
    errors: list[BaseException] = []

    def hammer(db: Database) -> None:
        throttle = Throttle(db, settings)
        try:
            for _ in range(15):
                throttle.record_failure(["user:carol", "addr:192.0.2.50"])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(db,)) for db in engines for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for db in engines:
        db.dispose()
    assert errors == []
    with database.session() as session:
        counts = dict(session.execute(sa.select(LoginThrottle.key, LoginThrottle.failures)).all())
    assert counts == {"user:carol": 60, "addr:192.0.2.50": 60}


def test_an_unreachable_throttle_store_fails_closed(backend: CountingAuthenticator) -> None:
    broken = Database("sqlite:////nonexistent-dir/provider.db")
    try:
        guarded = ThrottledAuthenticator(backend, Throttle(broken, LIMITS), backend="local")
        with pytest.raises(StorageError):
            guarded.authenticate("alice", "alice-password-1")
        assert backend.calls == 0
    finally:
        broken.dispose()


def test_clear_unlocks(guarded: ThrottledAuthenticator, database: Database) -> None:
    for _ in range(3):
        reason(guarded, "alice", "wrong-1")
    assert Throttle(database, LIMITS).clear(["user:alice"]) == 1
    assert reason(guarded, "alice", "alice-password-1") == "ok"


def test_addresses_are_not_counted_by_default(
    database: Database, backend: CountingAuthenticator, clock: Clock
) -> None:
    """With the default (per-address counting off) many failures from SmarterTrack's address lock nobody else."""
    limits = ThrottleSettings(max_failures=3, window_seconds=60, cooldown_seconds=120)
    assert limits.max_failures_per_address == 0
    auth = ThrottledAuthenticator(backend, Throttle(database, limits, clock=clock), backend="local")
    for user in ("u1", "u2", "u3", "u4", "u5", "u6"):
        assert [reason(auth, user, "wrong") for _ in range(2)] == ["unknown_user"] * 2
    assert reason(auth, "alice", "alice-password-1") == "ok"
    with database.session() as session:
        keys = session.execute(sa.select(LoginThrottle.key)).scalars().all()
    assert keys and not any(k.startswith("addr:") for k in keys)
