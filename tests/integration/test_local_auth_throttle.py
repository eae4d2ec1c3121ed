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
from tests.support import at_once

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


# --- counted before the check (issue 9, item 6) ------------------------------------------------


def counters(database: Database) -> dict[str, tuple[int, bool]]:
    with database.session() as session:
        rows = session.execute(sa.select(LoginThrottle)).scalars().all()
        return {row.key: (row.failures, row.locked_until is not None) for row in rows}


@BOTH
def test_concurrent_wrong_passwords_reach_the_backend_at_most_the_limit(
    database: Database, backend: CountingAuthenticator
) -> None:
    # A second engine, like a second gunicorn worker, shares the counters.
    other = Database(database.url)
    limits = ThrottleSettings(max_failures=5, window_seconds=60, cooldown_seconds=120)
    front = [
        ThrottledAuthenticator(backend, Throttle(db, limits), backend="local") for db in (database, other)
    ]
    outcomes: list[str] = []

    def guess(index: int) -> None:
        outcomes.append(reason(front[index % 2], "alice", f"wrong-{index}"))

    errors = at_once(40, guess, join_timeout=120)
    other.dispose()
    assert errors == []
    assert backend.calls <= 5
    assert sorted(set(outcomes)) == ["bad_password", "throttled"]
    assert outcomes.count("bad_password") == backend.calls


def test_the_attempt_that_reaches_the_limit_and_succeeds_leaves_no_lock(
    database: Database, backend: CountingAuthenticator, clock: Clock
) -> None:
    auth = ThrottledAuthenticator(backend, Throttle(database, LIMITS, clock=clock), backend="local")
    for index in range(4):  # four failures from one address: the address limit is 5
        reason(auth, f"nobody{index}", "guess-1", client="198.51.100.9")
    assert reason(auth, "alice", "alice-password-1", client="198.51.100.9") == "ok"  # the 5th: success
    assert counters(database)["addr:198.51.100.9"] == (4, False)  # given back, and no lock left
    assert reason(auth, "bob", "bob-password-1", client="198.51.100.9") == "ok"


def test_attempts_that_check_no_password_are_given_back(
    guarded: ThrottledAuthenticator, database: Database
) -> None:
    reason(guarded, "alice", "wrong-1")
    for _ in range(5):
        assert reason(guarded, "alice", "   ") == "empty_password"
    assert counters(database)["user:alice"] == (1, False)


def test_a_failure_records_its_reason_and_a_success_forgets_it(
    guarded: ThrottledAuthenticator, database: Database
) -> None:
    throttle = Throttle(database, LIMITS)
    reason(guarded, "ALICE", "wrong-1")
    status = throttle.status(["user:alice"])["user:alice"]
    assert (status.failures, status.last_reason, status.locked_until) == (1, "bad_password", None)
    assert status.last_failure_at is not None
    reason(guarded, "alice", "alice-password-1")
    assert throttle.status(["user:alice"]) == {}


def test_a_storage_outage_while_checking_a_local_password_is_a_storage_error(database: Database) -> None:
    broken = Database("sqlite:////nonexistent-dir/provider.db")
    try:
        # The counters are fine, the user store is not: still "the provider is unavailable".
        guarded = ThrottledAuthenticator(
            LocalAuthenticator(broken, FAST), Throttle(database, LIMITS), backend="local"
        )
        with pytest.raises(StorageError):
            guarded.authenticate("alice", "alice-password-1")
        assert counters(database)["user:alice"] == (0, False)  # not counted: no password was checked
    finally:
        broken.dispose()
