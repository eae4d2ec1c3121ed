"""The sign-in code domain on a real SQLite database, with an injected clock."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from provider.comms.signin_codes import (
    ALPHABETS,
    SignInCodes,
    canonical_code,
    code_hash,
    generate_code,
    looks_like_code,
    parse_address,
)
from provider.db.session import Database
from provider.db.signin import SignInCode
from provider.domain import Identity
from provider.settings import OtpSettings

SETTINGS = OtpSettings(
    enabled=True, channel_email="mail", max_per_address=3, max_per_client=5, window_seconds=900
)
ALICE = Identity(username="alice", email="alice@example.org", display_name="Alice Liddell")


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def db(sqlite_url: str) -> Iterator[Database]:
    database = Database(sqlite_url)
    yield database
    database.dispose()


def make(db: Database, clock: Clock, settings: OtpSettings = SETTINGS) -> SignInCodes:
    return SignInCodes(db, settings, clock=clock)


def issue(codes: SignInCodes, db: Database, text: str = "Alice@Example.org", who: Identity = ALICE) -> str:
    address = parse_address(text)
    assert address is not None
    with db.session() as session:
        return codes.issue(session, address, who)


@pytest.mark.parametrize("length", [4, 6, 8])
@pytest.mark.parametrize("alphabet", ["numeric", "alphanumeric"])
def test_codes_have_the_configured_length_and_alphabet(length: int, alphabet: str) -> None:
    codes = {generate_code(length, alphabet) for _ in range(50)}
    assert all(len(c) == length and set(c) <= set(ALPHABETS[alphabet]) for c in codes)
    assert len(codes) > 40  # drawn at random, not repeated


def test_the_hash_depends_on_salt_address_and_code() -> None:
    base = code_hash(b"s" * 16, "alice@example.org", "123456")
    assert len(base) == 64 and "123456" not in base
    assert base == code_hash(b"s" * 16, "alice@example.org", "123456")
    assert base != code_hash(b"t" * 16, "alice@example.org", "123456")
    assert base != code_hash(b"s" * 16, "bob@example.org", "123456")
    assert base != code_hash(b"s" * 16, "alice@example.org", "123457")


def test_addresses_are_normalised_and_junk_is_none() -> None:
    assert parse_address(" Alice@Example.ORG ") is not None
    assert parse_address("Alice@Example.ORG") == parse_address("alice@example.org")
    phone = parse_address("+44 (20) 7946-0018")
    assert phone is not None and phone.value == "+442079460018" and phone.kind == "sms"
    assert parse_address("02079460018") is None  # no country code
    assert parse_address("not an address") is None
    assert parse_address("") is None


def test_looks_like_code_filters_ordinary_passwords() -> None:
    assert looks_like_code("123456", SETTINGS)
    assert looks_like_code(" 123456 ", SETTINGS)
    assert not looks_like_code("12345", SETTINGS)
    assert not looks_like_code("correct horse", SETTINGS)
    alnum = replace(SETTINGS, alphabet="alphanumeric", length=8)
    assert looks_like_code("abcd2345", alnum) and canonical_code("abcd2345", "alphanumeric") == "ABCD2345"
    assert not looks_like_code("ABCD0123", alnum)  # 0 and 1 are never in a code


def test_only_the_hash_is_stored(db: Database) -> None:
    code = issue(make(db, Clock()), db)
    with db.session() as session:
        row = session.execute(sa.select(SignInCode)).scalar_one()
        stored = [str(v) for v in (row.address, row.salt, row.code_hash, row.username, row.email)]
    assert row.address == "alice@example.org"
    assert not any(code in value for value in stored)
    assert row.code_hash == code_hash(bytes.fromhex(row.salt), "alice@example.org", code)


def test_a_code_signs_in_exactly_once(db: Database) -> None:
    codes = make(db, Clock())
    code = issue(codes, db)
    identity = codes.redeem("ALICE@example.org", code)
    assert identity is not None
    assert (identity.username, identity.email, identity.display_name) == (
        "alice",
        "alice@example.org",
        "Alice Liddell",
    )
    assert codes.redeem("alice@example.org", code) is None


def test_a_wrong_code_fails_and_leaves_the_right_one_usable(db: Database) -> None:
    codes = make(db, Clock())
    code = issue(codes, db)
    wrong = "000000" if code != "000000" else "111111"
    assert codes.redeem("alice@example.org", wrong) is None
    assert codes.redeem("bob@example.org", code) is None  # another address
    assert codes.redeem("not an address", code) is None
    assert codes.redeem("alice@example.org", code) is not None


def test_a_code_expires(db: Database) -> None:
    clock = Clock()
    codes = make(db, clock)
    code = issue(codes, db)
    clock.advance(SETTINGS.ttl_seconds - 1)
    second = issue(codes, db)
    clock.advance(SETTINGS.ttl_seconds)
    assert codes.redeem("alice@example.org", second) is None
    assert codes.redeem("alice@example.org", code) is None


def test_a_new_request_invalidates_earlier_codes(db: Database) -> None:
    codes = make(db, Clock())
    first = issue(codes, db)
    second = issue(codes, db)
    if first != second:
        assert codes.redeem("alice@example.org", first) is None
    assert codes.redeem("alice@example.org", second) is not None


def test_codes_of_phone_numbers(db: Database) -> None:
    codes = make(db, Clock())
    code = issue(codes, db, "+1 415 555 0123", Identity(username="+14155550123"))
    identity = codes.redeem("+14155550123", code)
    assert identity is not None and identity.username == "+14155550123"


def test_limits_per_address_and_window(db: Database) -> None:
    clock = Clock()
    codes = make(db, clock)
    assert [codes.admit("alice@example.org", "10.0.0.1") for _ in range(4)] == [True, True, True, False]
    assert codes.admit("bob@example.org", "10.0.0.1")  # another address has its own count
    clock.advance(SETTINGS.window_seconds + 1)
    assert codes.admit("alice@example.org", "10.0.0.1")


def test_limits_per_client(db: Database) -> None:
    codes = make(db, Clock())
    answers = [codes.admit(f"user{i}@example.org", "10.0.0.9") for i in range(6)]
    assert answers == [True] * 5 + [False]
    assert codes.admit("user9@example.org", "10.0.0.10")  # another client
    assert codes.admit("user8@example.org", None)  # no client address: only the address counts


def test_purge_removes_long_expired_codes(db: Database) -> None:
    clock = Clock()
    codes = make(db, clock)
    issue(codes, db)
    assert codes.purge() == 0
    clock.advance(SETTINGS.ttl_seconds + SETTINGS.window_seconds + 1)
    assert codes.purge() == 1
