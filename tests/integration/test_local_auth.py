"""The built-in authenticator on SQLite and PostgreSQL, through the domain Provider."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from provider.auth import build_authenticator
from provider.auth.local import LocalAuthenticator, LocalUsers, ScryptHasher, UserError
from provider.calls import LOGIN_FAILURE, STORAGE_UNAVAILABLE, Provider
from provider.db.auth import LocalUser
from provider.db.session import Database
from provider.domain import CallRequest, CallResult, Operation
from provider.errors import AuthenticationFailed, StorageError
from provider.settings import Secret, Settings
from provider.variables import InputVariables
from tests.support import WEB_SERVICE_PASSWORD

FAST = ScryptHasher(log_n=10)


@pytest.fixture
def database(request: pytest.FixtureRequest, sqlite_url: str) -> Iterator[Database]:
    """SQLite unless a test asks for both databases with BOTH."""
    kind = getattr(request, "param", "sqlite")
    db = Database(sqlite_url if kind == "sqlite" else request.getfixturevalue("postgres_url"))
    yield db
    db.dispose()


BOTH = pytest.mark.parametrize(
    "database", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
PASSWORD = "Corr3ct-Hörse-Battery"


def call(provider: Provider, operation: Operation, **variables: str) -> CallResult:
    pairs = [("authPW", WEB_SERVICE_PASSWORD), *variables.items()]
    return provider.call(
        CallRequest(operation=operation, variables=InputVariables(pairs), client_address="203.0.113.9")
    )


@pytest.fixture
def users(database: Database) -> LocalUsers:
    users = LocalUsers(database, FAST)
    users.add(
        "Alice", PASSWORD, email="alice@example.org", display_name="Alice Local", groups=["Support", "Staff"]
    )
    users.add("bob@example.org", "bob-password-1", display_name="Bob")
    users.add("dave", "dave-password-1", enabled=False)
    return users


@pytest.fixture
def auth(database: Database, users: LocalUsers) -> LocalAuthenticator:
    return LocalAuthenticator(database, FAST)


@pytest.fixture
def provider(database: Database, users: LocalUsers) -> Provider:
    settings = Settings.from_mapping({"auth": "local", "database_url": database.url})
    return Provider(Secret(WEB_SERVICE_PASSWORD), authenticator=build_authenticator(settings, database))


@BOTH
def test_login_through_the_provider(provider: Provider) -> None:
    result = call(provider, Operation.AUTHENTICATE, loginUsername="alice", loginPassword=PASSWORD)
    assert result.success
    assert result.output.to_list() == [
        "Authentication=OK",
        "EmailAddress=alice@example.org",
        "DisplayName=Alice Local",
    ]


def test_sign_in_cookie_and_rules_context(provider: Provider) -> None:
    ok = call(provider, Operation.GET_SIGN_IN_COOKIE_INFO, loginUsername="ALICE")
    assert ok.output.get("Authentication") == "OK"
    assert ok.output.get("EmailAddress") == "alice@example.org"
    for name in ("dave", "nobody"):
        refused = call(provider, Operation.GET_SIGN_IN_COOKIE_INFO, loginUsername=name)
        assert refused.output.to_list() == ["Authentication=FAIL"]


@pytest.mark.parametrize(
    "typed", ["alice", " ALICE ", "EXAMPLE\\alice", "example/Alice", "alice@example.org"]
)
def test_username_forms(auth: LocalAuthenticator, typed: str) -> None:
    identity = auth.authenticate(typed, PASSWORD)
    assert identity.username == "Alice"
    assert identity.groups == ("Support", "Staff")


def test_a_username_with_a_domain_matches_as_typed_first(auth: LocalAuthenticator) -> None:
    assert auth.authenticate("Bob@Example.org", "bob-password-1").display_name == "Bob"
    with pytest.raises(AuthenticationFailed):
        auth.authenticate("bob", "bob-password-1")


@pytest.mark.parametrize(
    ("username", "password", "reason"),
    [
        ("alice", "wrong-password", "bad_password"),
        ("nobody", PASSWORD, "unknown_user"),
        ("dave", "dave-password-1", "disabled"),
        ("alice", "   ", "empty_password"),
        ("\\", PASSWORD, "invalid_username"),
        ("alice", "x" * 5000, "bad_password"),
    ],
)
def test_refusals_carry_a_log_reason(
    auth: LocalAuthenticator, caplog: pytest.LogCaptureFixture, username: str, password: str, reason: str
) -> None:
    caplog.set_level(logging.INFO)
    with pytest.raises(AuthenticationFailed) as failure:
        auth.authenticate(username, password)
    assert failure.value.reason == reason
    assert [r.reason for r in caplog.records if getattr(r, "event", None) == "auth.fail"] == [reason]


def test_refusals_look_alike_to_smartertrack(provider: Provider) -> None:
    answers = {
        (r.success, r.message, tuple(r.output.to_list()))
        for r in (
            call(provider, Operation.AUTHENTICATE, loginUsername=u, loginPassword=p)
            for u, p in (("alice", "wrong-password"), ("nobody", PASSWORD), ("dave", "dave-password-1"))
        )
    }
    assert answers == {(True, LOGIN_FAILURE, ("Authentication=FAIL",))}


@BOTH
def test_no_password_is_stored(database: Database, users: LocalUsers) -> None:
    with database.session() as session:
        rows = session.execute(sa.select(LocalUser)).scalars().all()
        dumped = repr([{c.name: getattr(r, c.name) for c in LocalUser.__table__.columns} for r in rows])
    assert PASSWORD not in dumped
    assert "bob-password-1" not in dumped
    assert all(r.password_hash.startswith("$scrypt$") for r in rows)


@BOTH
def test_management(database: Database, users: LocalUsers, auth: LocalAuthenticator) -> None:
    with pytest.raises(UserError, match="already exists"):
        users.add("ALICE", "another-password")
    users.set_password("alice", "a-new-password-2")
    with pytest.raises(AuthenticationFailed):
        auth.authenticate("alice", PASSWORD)
    assert auth.authenticate("alice", "a-new-password-2").username == "Alice"
    users.set_enabled("dave", True)
    assert auth.authenticate("dave", "dave-password-1").username == "dave"
    users.remove("bob@example.org")
    assert auth.lookup("bob@example.org") is None
    assert [u.username for u in users.list_users()] == ["Alice", "dave"]
    with pytest.raises(UserError, match="no local user"):
        users.remove("bob@example.org")
    with pytest.raises(UserError):
        users.add("carol", "short")


def test_weaker_hashes_are_upgraded_at_login(database: Database) -> None:
    LocalUsers(database, ScryptHasher(log_n=10)).add("erin", "erin-password-1")
    stronger = ScryptHasher(log_n=11)
    LocalAuthenticator(database, stronger).authenticate("erin", "erin-password-1")
    with database.session() as session:
        stored = session.execute(sa.select(LocalUser.password_hash)).scalar_one()
    assert stored.startswith("$scrypt$ln=11,")
    assert LocalAuthenticator(database, stronger).authenticate("erin", "erin-password-1").username == "erin"


def test_an_unreachable_database_is_a_storage_outage_not_a_directory_one(tmp_path: object) -> None:
    database = Database("sqlite:////nonexistent-dir/provider.db")
    try:
        with pytest.raises(StorageError):
            LocalAuthenticator(database, FAST).authenticate("alice", PASSWORD)
    finally:
        database.dispose()


# --- look-alike names and outages (issue 9, items 2 and 15) -----------------------------------


@BOTH
def test_look_alike_names_are_the_same_local_user(database: Database) -> None:
    users = LocalUsers(database, FAST)
    users.add("Alice", PASSWORD, email="alice@example.org")
    with pytest.raises(UserError, match="already exists"):
        users.add("\uff41\uff4c\uff49\uff43\uff45", PASSWORD)  # fullwidth
    auth = LocalAuthenticator(database, FAST)
    for typed in ("\uff41\uff4c\uff49\uff43\uff45", "\uff41lice", "\u24d0lice", "EXAMPLE\\\uff21LICE"):
        assert auth.authenticate(typed, PASSWORD).username == "Alice"
    users.set_enabled("\u24d0lice", False)
    assert auth.lookup("alice") is None


def test_a_database_outage_tells_smartertrack_the_provider_is_unavailable(tmp_path: object) -> None:
    settings = Settings.from_mapping(
        {
            "web_service_password": WEB_SERVICE_PASSWORD,
            "auth": "local",
            "database_url": "sqlite:////nonexistent-dir/p.db",
        }
    )
    broken = Database(settings.database_url)
    try:
        provider = Provider(Secret(WEB_SERVICE_PASSWORD), authenticator=build_authenticator(settings, broken))
        login = call(provider, Operation.AUTHENTICATE, loginUsername="alice", loginPassword=PASSWORD)
        cookie = call(provider, Operation.GET_SIGN_IN_COOKIE_INFO, loginUsername="alice")
    finally:
        broken.dispose()
    assert (login.success, login.message) == (False, STORAGE_UNAVAILABLE)
    assert (cookie.success, cookie.message) == (False, STORAGE_UNAVAILABLE)
