"""Directory customers for sign-in codes: found by their e-mail address or phone number in a real slapd."""

from __future__ import annotations

import pytest

from provider.auth import build_authenticator
from provider.auth.ldap import LdapAuthenticator
from provider.comms.signin_codes import SignInCodes
from provider.comms.signin_delivery import address_finders
from provider.db.session import Database
from provider.settings import Settings
from tests.fixtures.slapd import SHARED_PHONE, USERS, SlapdServer

pytestmark = pytest.mark.slapd


@pytest.fixture
def ldap(slapd: SlapdServer) -> LdapAuthenticator:
    settings = Settings.from_mapping(slapd.settings())
    assert settings.ldap is not None
    return LdapAuthenticator(settings.ldap)


def test_a_directory_user_is_found_by_mail(ldap: LdapAuthenticator) -> None:
    identity = ldap.lookup_address("erin@corp.example.org", "email")
    assert identity is not None
    erin = USERS["erin"]
    assert (identity.username, identity.email, identity.display_name) == ("erin", erin.mail, "Erin Extern")
    assert "Auditors" in identity.groups


def test_unknown_and_disabled_addresses_are_not_found(ldap: LdapAuthenticator) -> None:
    assert ldap.lookup_address("nobody@example.org", "email") is None
    assert ldap.lookup_address("+14155550100", "sms") is None
    disabled = next(u for u in USERS.values() if u.account_control == 514)
    assert disabled.mail is not None
    assert ldap.lookup_address(disabled.mail, "email") is None


@pytest.mark.parametrize(
    ("number", "who"),
    [("+14155550142", "alice"), ("+14155550143", "bob")],
    ids=["telephoneNumber written with spaces and hyphens", "mobile"],
)
def test_a_directory_user_is_found_by_phone(ldap: LdapAuthenticator, number: str, who: str) -> None:
    identity = ldap.lookup_address(number, "sms")
    assert identity is not None
    assert (identity.username, identity.email) == (who, USERS[who].mail)


def test_a_phone_finds_nobody_when_disabled_shared_or_asked_as_an_email(ldap: LdapAuthenticator) -> None:
    assert ldap.lookup_address("+14155550144", "sms") is None  # dave: account disabled
    assert ldap.lookup_address(SHARED_PHONE, "sms") is None  # erin and carol: ambiguous
    assert ldap.lookup_address("+14155550142", "email") is None  # only the mail attribute is searched
    assert ldap.lookup_address("alice@example.org", "sms") is None


def test_a_filter_value_is_escaped(ldap: LdapAuthenticator) -> None:
    assert ldap.lookup_address("*@example.org", "email") is None
    assert ldap.lookup_address("a)(uid=*", "email") is None


def test_the_directory_is_a_finder_behind_the_code_authenticator(slapd: SlapdServer, sqlite_url: str) -> None:
    settings = Settings.from_mapping({**slapd.settings(), "otp": "on", "otp_channel_email": "mail"})
    database = Database(sqlite_url)
    try:
        authenticator = build_authenticator(settings, database, codes=SignInCodes(database, settings.otp))
        [finder] = address_finders(authenticator)
        assert isinstance(finder, LdapAuthenticator)
    finally:
        database.dispose()
