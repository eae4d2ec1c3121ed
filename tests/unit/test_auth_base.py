"""The shared auth helpers: escaping, DNs, AD account states and bind codes, timing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from provider.auth import base


@pytest.mark.parametrize(
    ("value", "escaped"),
    [
        ("alice", "alice"),
        ("*", "\\2a"),
        (")(uid=*", "\\29\\28uid=\\2a"),
        ("a\\b", "a\\5cb"),
        ("nul\x00", "nul\\00"),
        ("jürgen", "jürgen"),
    ],
)
def test_filter_escaping(value: str, escaped: str) -> None:
    assert base.escape_filter_value(value) == escaped


@given(st.text(max_size=40))
def test_escaped_filter_values_have_no_active_characters(value: str) -> None:
    escaped = base.escape_filter_value(value)
    assert not {"*", "(", ")", "\x00"} & set(escaped)
    # Every backslash starts a two-digit hex escape.
    parts = escaped.split("\\")[1:]
    assert all(len(p) >= 2 and all(c in "0123456789abcdef" for c in p[:2]) for p in parts)


def test_fill_filter_replaces_every_placeholder() -> None:
    template = "(|(uid={username})(mail={username}))"
    assert base.fill_filter(template, "a*") == "(|(uid=a\\2a)(mail=a\\2a))"


@given(st.text(min_size=1, max_size=40).filter(lambda s: "\x00" not in s))
def test_dn_escaping_round_trips_through_the_parser(value: str) -> None:
    dn = f"cn={base.escape_dn_value(value)},ou=people,dc=example,dc=org"
    rdns = base.parse_dn(dn)
    assert rdns[0] == [("cn", value)]
    assert rdns[1:] == [[("ou", "people")], [("dc", "example")], [("dc", "org")]]


def test_parse_dn_reads_hex_escapes_and_multi_valued_rdns() -> None:
    # How slapd writes the DN back: special characters as hex pairs, UTF-8 as bytes.
    dn = "cn=Pat \\22Ops\\22 O\\2C Brien \\2B *\\5C+uid=p,ou=J\\C3\\BCrgen,dc=org"
    assert base.parse_dn(dn) == [
        [("cn", 'Pat "Ops" O, Brien + *\\'), ("uid", "p")],
        [("ou", "Jürgen")],
        [("dc", "org")],
    ]
    assert base.rdn_value(dn) == 'Pat "Ops" O, Brien + *\\'


@pytest.mark.parametrize("dn", ["cn", "=x", "cn=a\\"])
def test_parse_dn_refuses_malformed_dns(dn: str) -> None:
    with pytest.raises(ValueError):
        base.parse_dn(dn)


def test_dn_keys_ignore_case_spacing_and_escape_style() -> None:
    assert base.dn_key("CN=Staff, OU=Groups,DC=Example,DC=org") == base.dn_key(
        "cn=staff,ou=groups,dc=example,dc=org"
    )
    assert base.dn_key("cn=O\\2C Brien,dc=x") == base.dn_key("cn=O\\, Brien,dc=x")
    assert base.dn_key("cn=a,dc=x") != base.dn_key("cn=b,dc=x")


def test_group_requirement_by_name_or_dn() -> None:
    names = ["Support", "Staff"]
    dns = ["cn=Support,ou=groups,dc=example,dc=org", "cn=Staff,ou=groups,dc=example,dc=org"]
    assert base.group_matches("staff", names, dns)
    assert base.group_matches("CN=Staff,OU=groups,DC=example,DC=org", names, dns)
    assert not base.group_matches("Admins", names, dns)
    assert not base.group_matches("cn=Staff,ou=other,dc=example,dc=org", names, dns)


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("525", base.UNKNOWN_USER),
        ("52e", base.BAD_PASSWORD),
        ("530", base.LOGON_HOURS),
        ("531", base.WORKSTATION),
        ("532", base.PASSWORD_EXPIRED),
        ("533", base.DISABLED),
        ("701", base.ACCOUNT_EXPIRED),
        ("773", base.MUST_CHANGE_PASSWORD),
        ("775", base.LOCKED),
    ],
)
def test_active_directory_bind_subcodes(code: str, reason: str) -> None:
    message = f"80090308: LdapErr: DSID-0C09042A, comment: AcceptSecurityContext error, data {code}, v3839"
    assert base.ad_bind_reason(message) == reason


def test_messages_without_a_known_subcode_have_no_reason() -> None:
    assert base.ad_bind_reason("") is None
    assert base.ad_bind_reason(None) is None
    assert base.ad_bind_reason("invalid credentials") is None
    assert base.ad_bind_reason("AcceptSecurityContext error, data 999, v3839") is None


def test_account_control_flags() -> None:
    assert base.account_problem({"userAccountControl": ["512"]}) is None
    assert base.account_problem({"useraccountcontrol": ["514"]}) == base.DISABLED
    assert base.account_problem({"userAccountControl": ["528"]}) == base.LOCKED
    assert base.account_problem({"userAccountControl": [str(512 | 0x800000)]}) == base.PASSWORD_EXPIRED
    assert base.account_problem({"userAccountControl": ["garbage"]}) is None
    assert base.account_problem({}) is None


def test_account_expiry() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)

    def filetime(moment: datetime) -> str:
        return str(int((moment - datetime(1601, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1)) * 10)

    assert (
        base.account_problem({"accountExpires": [filetime(now - timedelta(days=1))]}, now)
        == base.ACCOUNT_EXPIRED
    )
    assert base.account_problem({"accountExpires": [filetime(now + timedelta(days=1))]}, now) is None
    assert base.account_problem({"accountExpires": ["0"]}, now) is None
    assert base.account_problem({"accountExpires": [str(0x7FFFFFFFFFFFFFFF)]}, now) is None


@pytest.mark.parametrize(
    ("password", "blank"), [("", True), (" ", True), ("\t\n", True), (" x ", False), ("0", False)]
)
def test_blank_passwords(password: str, blank: bool) -> None:
    assert base.is_blank(password) is blank


def test_secret_attributes_are_recognised() -> None:
    for name in ("userPassword", "unicodePwd", "ntPwdHistory", "sambaNTPassword", "krbPrincipalKey"):
        assert base.is_secret_attribute(name)
    for name in ("mail", "displayName", "memberOf", "title", "department"):
        assert not base.is_secret_attribute(name)


class FakeClock:
    """A clock that only moves when something sleeps (a real test double for time)."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_timing_floor_pads_fast_failures_to_the_average() -> None:
    clock = FakeClock()
    floor = base.TimingFloor(alpha=0.5, cap=1.0, clock=clock, sleep=clock.sleep)
    assert not floor.known
    assert floor.pad(clock.now) == 0.0
    floor.observe(0.010)
    floor.observe(0.030)
    assert floor.average == pytest.approx(0.020)
    started = clock.now
    clock.now += 0.005  # the fast path took 5 ms
    assert floor.pad(started) == pytest.approx(0.015)
    assert clock.now == pytest.approx(started + 0.020)
    # A path already slower than the average is not padded.
    started = clock.now
    clock.now += 0.5
    assert floor.pad(started) == 0.0


def test_timing_floor_is_capped() -> None:
    clock = FakeClock()
    floor = base.TimingFloor(cap=0.2, clock=clock, sleep=clock.sleep)
    floor.observe(30.0)
    assert floor.average == pytest.approx(0.2)
