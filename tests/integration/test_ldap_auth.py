"""LDAP sign-on through the domain Provider against a real slapd (search, then bind)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY

from provider.auth import build_authenticator, build_user_lookup
from provider.auth.base import TimingFloor
from provider.auth.ldap import LdapAuthenticator
from provider.calls import DIRECTORY_UNAVAILABLE, LOGIN_FAILURE, REQUIRED_INPUT_MISSING, Provider
from provider.db.session import Database
from provider.domain import CallRequest, CallResult, Decision, Identity, Operation
from provider.errors import AuthenticationFailed
from provider.settings import Secret, Settings
from provider.variables import InputVariables
from tests.fixtures.slapd import GROUPS, USERS, BlackHole, SlapdServer
from tests.support import WEB_SERVICE_PASSWORD

pytestmark = pytest.mark.slapd


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def user_binds() -> float:
    return metric("st_provider_ldap_seconds_count", operation="user_bind")


def searches() -> float:
    return metric("st_provider_ldap_seconds_count", operation="search")


def call(
    provider: Provider, operation: Operation, client: str = "198.51.100.7", **variables: str
) -> CallResult:
    pairs = [("authPW", WEB_SERVICE_PASSWORD), *variables.items()]
    return provider.call(
        CallRequest(operation=operation, variables=InputVariables(pairs), client_address=client)
    )


def login(provider: Provider, username: str, password: str, client: str = "198.51.100.7") -> CallResult:
    return call(provider, Operation.AUTHENTICATE, client, loginUsername=username, loginPassword=password)


def fail_reasons(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.reason for r in caplog.records if getattr(r, "event", None) == "auth.fail"]


@pytest.fixture
def database(sqlite_url: str) -> Iterator[Database]:
    db = Database(sqlite_url)
    yield db
    db.dispose()


def make_provider(slapd: SlapdServer, database: Database, rules: object = None, **overrides: str) -> Provider:
    settings = Settings.from_mapping(slapd.settings(**overrides))
    authenticator = build_authenticator(settings, database)
    return Provider(
        Secret(WEB_SERVICE_PASSWORD),
        authenticator=authenticator,
        user_lookup=build_user_lookup(settings, authenticator),
        rules=rules,  # type: ignore[arg-type]
    )


@pytest.fixture
def provider(slapd: SlapdServer, database: Database) -> Provider:
    return make_provider(slapd, database)


@pytest.fixture
def ldap(slapd: SlapdServer) -> LdapAuthenticator:
    settings = Settings.from_mapping(slapd.settings())
    assert settings.ldap is not None
    return LdapAuthenticator(settings.ldap)


# --- the username forms -----------------------------------------------------------------


FORMS = [
    ("alice", "alice"),
    ("  alice  ", "alice"),
    ("ALICE", "alice"),
    ("EXAMPLE\\alice", "alice"),
    ("example/alice", "alice"),
    ("alice@example.org", "alice"),
    ("erin", "erin"),  # sAMAccountName
    ("erin.e", "erin"),  # uid
    ("CORP\\erin", "erin"),
    ("erin@corp.example.org", "erin"),  # userPrincipalName
    ("jürgen", "jürgen"),
    ("EXAMPLE\\jürgen", "jürgen"),
    ("jürgen@example.org", "jürgen"),
    ("pat*(ops)", "pat"),
    ("EXAMPLE\\pat*(ops)", "pat"),
]


@pytest.mark.parametrize(("typed", "who"), FORMS)
def test_every_username_form_logs_in(provider: Provider, typed: str, who: str) -> None:
    user = USERS[who]
    result = login(provider, typed, user.password)
    assert result.success
    assert result.output.get("Authentication") == "OK"
    assert result.output.get("EmailAddress") == user.mail
    assert result.output.get("DisplayName") == (user.display_name or user.cn)


def test_the_display_name_falls_back_to_cn(provider: Provider) -> None:
    result = login(provider, "bob", USERS["bob"].password)
    assert result.output.get("DisplayName") == "Bob Builder"


def test_special_characters_in_dn_and_password(ldap: LdapAuthenticator) -> None:
    pat = USERS["pat"]
    identity = ldap.authenticate(pat.uid, pat.password)
    assert identity.display_name == 'Pat "Ops" O, Brien (Lead) + *\\'
    assert identity.groups == ('Ops, "Night" (24*7)',)


# --- refusals -------------------------------------------------------------------------------


def test_wrong_password_fails_like_the_sample(provider: Provider, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    result = login(provider, "alice", "not-her-password")
    assert result.success
    assert result.message == LOGIN_FAILURE
    assert result.output.to_list() == ["Authentication=FAIL"]
    assert "bad_password" in fail_reasons(caplog)


def test_unknown_user_answers_exactly_like_a_wrong_password(
    provider: Provider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    unknown = login(provider, "nobody-here", "whatever-1")
    wrong = login(provider, "alice", "whatever-1")
    assert (unknown.success, unknown.message, unknown.output.to_list()) == (
        wrong.success,
        wrong.message,
        wrong.output.to_list(),
    )
    assert fail_reasons(caplog) == ["unknown_user", "bad_password"]


def test_empty_password_is_required_input(provider: Provider) -> None:
    result = login(provider, "alice", "")
    assert not result.success
    assert result.message == REQUIRED_INPUT_MISSING


@pytest.mark.parametrize("blank", [" ", "   ", "\t"])
def test_blank_passwords_never_reach_the_directory(black_hole: BlackHole, blank: str) -> None:
    # OpenLDAP would refuse an unauthenticated bind itself (rc 53), Active Directory accepts
    # it: the provider must refuse before sending anything, so point it at a black hole.
    settings = Settings.from_mapping(
        {"ldap_url": black_hole.url, "ldap_bind_dn": "cn=x", "ldap_bind_password": "y", "ldap_timeout": "1"}
    )
    assert settings.ldap is not None
    authenticator = LdapAuthenticator(settings.ldap)
    with pytest.raises(AuthenticationFailed) as failure:
        authenticator.authenticate("alice", blank)
    assert failure.value.reason == "empty_password"
    assert black_hole.connections == 0


@pytest.mark.parametrize(
    "typed",
    ["*", ")(uid=*", "*)(uid=*", "alice)(|(uid=*", "al*", "*)(|(objectClass=*", "\\2a", "alice\x00"],
)
def test_filter_injection_finds_nobody(ldap: LdapAuthenticator, typed: str) -> None:
    before = user_binds()
    with pytest.raises(AuthenticationFailed) as failure:
        ldap.authenticate(typed, USERS["alice"].password)
    assert failure.value.reason in {"unknown_user", "invalid_username"}
    assert ldap.lookup(typed) is None
    # Only the decoy bind (never alice's DN with her password) may have happened.
    assert user_binds() - before <= 1


def test_disabled_account_fails_with_a_distinct_reason(
    provider: Provider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    result = login(provider, "dave", USERS["dave"].password)
    assert result.success
    assert result.output.get("Authentication") == "FAIL"
    assert result.message == LOGIN_FAILURE
    assert "disabled" in fail_reasons(caplog)
    cookie = call(provider, Operation.GET_SIGN_IN_COOKIE_INFO, loginUsername="dave")
    assert cookie.output.get("Authentication") == "FAIL"


def test_failures_without_a_bind_are_padded(slapd: SlapdServer) -> None:
    settings = Settings.from_mapping(slapd.settings())
    assert settings.ldap is not None
    slept: list[float] = []
    timing = TimingFloor(sleep=slept.append)
    timing.observe(0.25)  # as if a failed bind took 250 ms
    authenticator = LdapAuthenticator(settings.ldap, timing=timing)
    for name in ("nobody-here", "dave"):
        with pytest.raises(AuthenticationFailed):
            authenticator.authenticate(name, "whatever-1")
    assert len(slept) == 2
    assert all(0.15 < s <= 0.25 for s in slept)


def test_the_first_unknown_user_of_a_process_costs_a_decoy_bind(slapd: SlapdServer) -> None:
    settings = Settings.from_mapping(slapd.settings())
    assert settings.ldap is not None
    authenticator = LdapAuthenticator(settings.ldap)
    before = user_binds()
    with pytest.raises(AuthenticationFailed):
        authenticator.authenticate("nobody-here", "whatever-1")
    assert user_binds() == before + 1
    with pytest.raises(AuthenticationFailed):
        authenticator.authenticate("nobody-else", "whatever-1")
    assert user_binds() == before + 1  # later ones are padded to the measured time instead


# --- groups, attributes and rules ------------------------------------------------------------


@pytest.mark.parametrize("who", sorted(USERS))
def test_groups_direct_nested_unique_and_posix(ldap: LdapAuthenticator, who: str) -> None:
    user = USERS[who]
    identity = ldap.lookup(user.uid)
    if who == "dave":
        assert identity is None  # disabled
        return
    assert identity is not None
    assert set(identity.groups) == set(user.groups)


def test_group_nesting_is_cached_between_logins(ldap: LdapAuthenticator) -> None:
    bob = USERS["bob"]
    first = searches()
    ldap.authenticate("bob", bob.password)
    cold = searches() - first
    second = searches()
    identity = ldap.authenticate("bob", bob.password)
    warm = searches() - second
    assert set(identity.groups) == {"Support Tier 1", "Support", "Staff"}
    assert warm == 1  # the user search only: the groups of groups came from the cache
    assert cold > warm


def test_every_fixture_group_is_reachable() -> None:
    # Guards the data set itself: each group in GROUPS belongs to some user's expectations.
    expected = {g for u in USERS.values() for g in u.groups}
    assert {name for name, *_ in GROUPS} == expected


def test_attributes_for_rules_never_include_passwords(slapd: SlapdServer) -> None:
    # The root DN may read userPassword: the provider must still drop it.
    settings = Settings.from_mapping(
        slapd.settings(ldap_bind_dn=slapd.admin_dn, ldap_bind_password=slapd.admin_password)
    )
    assert settings.ldap is not None
    identity = LdapAuthenticator(settings.ldap).authenticate("alice", USERS["alice"].password)
    assert identity.attributes["title"] == ("Support Lead",)
    assert identity.attributes["departmentNumber"] == ("42",)
    assert not [name for name in identity.attributes if "password" in name.lower()]


@pytest.mark.parametrize("group", ["Staff", "staff", "cn=Staff,ou=groups,dc=example,dc=org"])
def test_required_group_including_nested_membership(
    slapd: SlapdServer, database: Database, caplog: pytest.LogCaptureFixture, group: str
) -> None:
    caplog.set_level(logging.INFO)
    provider = make_provider(slapd, database, ldap_require_group=group)
    assert login(provider, "alice", USERS["alice"].password).output.get("Authentication") == "OK"
    assert login(provider, "bob", USERS["bob"].password).output.get("Authentication") == "OK"
    refused = login(provider, "carol", USERS["carol"].password)
    assert refused.output.get("Authentication") == "FAIL"
    assert "not_in_group" in fail_reasons(caplog)
    assert (
        call(provider, Operation.GET_SIGN_IN_COOKIE_INFO, loginUsername="carol").output.get("Authentication")
        == "FAIL"
    )


class GroupRules:
    """A real in-tree rule evaluator: deny contractors, copy the department into a custom field."""

    def __init__(self) -> None:
        self.seen: list[tuple[Operation, Identity | None]] = []

    def evaluate(
        self, operation: Operation, variables: InputVariables, identity: Identity | None
    ) -> Decision:
        self.seen.append((operation, identity))
        if identity is not None and "contractors" in identity.groups:
            return Decision(allow=False, message="Contractors use the partner portal")
        decision = Decision()
        if identity is not None and identity.attributes.get("departmentNumber"):
            decision.variables.append(("cf_Department", identity.attributes["departmentNumber"][0]))
        return decision


def test_groups_and_attributes_reach_the_rules(slapd: SlapdServer, database: Database) -> None:
    rules = GroupRules()
    provider = make_provider(slapd, database, rules=rules)
    alice = login(provider, "alice", USERS["alice"].password)
    assert alice.output.get("Authentication") == "OK"
    assert alice.output.get("cf_Department") == "42"
    carol = login(provider, "carol", USERS["carol"].password)
    assert carol.output.get("Authentication") == "FAIL"
    assert carol.message == "Contractors use the partner portal"
    identity = rules.seen[0][1]
    assert identity is not None and set(identity.groups) == {"Support", "Staff"}


def test_other_operations_get_the_user_from_a_cached_lookup(slapd: SlapdServer, database: Database) -> None:
    rules = GroupRules()
    provider = make_provider(slapd, database, rules=rules)
    before = searches()
    first = call(provider, Operation.GET_CUSTOM_FIELD_OPTIONS, loginUsername="bob")
    used = searches() - before
    assert first.success and used >= 1
    for operation in (Operation.START_TICKET, Operation.START_CHAT, Operation.GET_CUSTOM_FIELD_OPTIONS):
        assert call(provider, operation, loginUsername=" BOB ").success
    assert call(provider, Operation.GET_USER_DETAILS, username="bob").success
    assert searches() - before == used  # answered from the cache
    identities = [identity for _, identity in rules.seen]
    assert all(i is not None and "Staff" in i.groups for i in identities)


def test_an_unknown_user_leaves_the_rules_context_empty(slapd: SlapdServer, database: Database) -> None:
    rules = GroupRules()
    provider = make_provider(slapd, database, rules=rules)
    result = call(provider, Operation.START_TICKET, loginUsername="nobody-here")
    assert result.success
    assert result.output.get("TicketCreation") == "TRUE"
    assert rules.seen == [(Operation.START_TICKET, None)]


# --- single sign-on ------------------------------------------------------------------------------


def test_sign_in_cookie_looks_up_without_a_password(provider: Provider) -> None:
    before = user_binds()
    result = call(provider, Operation.GET_SIGN_IN_COOKIE_INFO, loginUsername="EXAMPLE\\jürgen")
    assert result.success
    assert result.output.get("Authentication") == "OK"
    assert result.output.get("EmailAddress") == "juergen@example.org"
    assert result.output.get("DisplayName") == "Jürgen Müller"
    assert user_binds() == before


@pytest.mark.parametrize("typed", ["nobody-here", "*", "dave"])
def test_sign_in_cookie_refuses_unknown_and_disabled_users(provider: Provider, typed: str) -> None:
    result = call(provider, Operation.GET_SIGN_IN_COOKIE_INFO, loginUsername=typed)
    assert result.success
    assert result.output.to_list() == ["Authentication=FAIL"]


# --- direct bind (no service account) ----------------------------------------------------------


def test_direct_bind_with_a_dn_template(slapd: SlapdServer) -> None:
    settings = Settings.from_mapping(
        {
            "ldap_url": slapd.url,
            "ldap_user_dn_template": f"uid={{username}},{slapd.people_dn}",
            "ldap_group_base": slapd.groups_dn,
            "ldap_timeout": "2",
        }
    )
    assert settings.ldap is not None
    authenticator = LdapAuthenticator(settings.ldap)
    identity = authenticator.authenticate("EXAMPLE\\bob", USERS["bob"].password)
    assert identity.email == "bob@example.org"
    assert set(identity.groups) == {"Support Tier 1", "Support", "Staff"}
    with pytest.raises(AuthenticationFailed) as failure:
        authenticator.authenticate("bob", "wrong-password")
    assert failure.value.reason == "bad_password"
    with pytest.raises(AuthenticationFailed) as disabled:
        authenticator.authenticate("dave", USERS["dave"].password)
    assert disabled.value.reason == "disabled"
    lookup = authenticator.lookup("jürgen")  # anonymous read of the templated DN
    assert lookup is not None and lookup.display_name == "Jürgen Müller"


def test_direct_bind_searches_the_own_entry_under_the_user_base(slapd: SlapdServer) -> None:
    settings = Settings.from_mapping(
        {
            "ldap_url": slapd.url,
            "ldap_user_dn_template": f"uid={{username}},{slapd.people_dn}",
            "ldap_user_base": slapd.people_dn,
            "ldap_timeout": "2",
        }
    )
    assert settings.ldap is not None
    identity = LdapAuthenticator(settings.ldap).authenticate("alice", USERS["alice"].password)
    assert identity.dn == USERS["alice"].dn
    # memberOf gives the direct group; without ST_PROVIDER_LDAP_GROUP_BASE the groups of
    # groups are searched under the user base, where there are none.
    assert identity.groups == ("Support",)


# --- safety ---------------------------------------------------------------------------------------


def test_referrals_are_never_followed(provider: Provider, ldap_black_hole: BlackHole) -> None:
    # ou=partners under the user base is a referral to the black hole: ldap3 would follow it
    # (and re-bind there with the user's DN and password) unless auto_referrals is off.
    before = ldap_black_hole.connections
    for name in ("alice", "nobody-here"):
        login(provider, name, USERS["alice"].password)
        call(provider, Operation.GET_SIGN_IN_COOKIE_INFO, loginUsername=name)
    assert ldap_black_hole.connections == before


def test_no_password_in_logs(
    slapd: SlapdServer, database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    provider = make_provider(slapd, database)
    secrets = [USERS["alice"].password, "Wr0ng-Pässword", slapd.service_password]
    login(provider, "alice", USERS["alice"].password)
    login(provider, "alice", "Wr0ng-Pässword")
    login(provider, "nobody-here", "Wr0ng-Pässword")
    call(provider, Operation.GET_SIGN_IN_COOKIE_INFO, loginUsername="alice")
    assert caplog.records
    for record in caplog.records:
        text = record.getMessage() + repr(vars(record))
        for secret in secrets:
            assert secret not in text


def test_login_metrics(provider: Provider) -> None:
    ok = metric("st_provider_logins_total", operation="authenticate", outcome="ok")
    failed = metric("st_provider_logins_total", operation="authenticate", outcome="fail")
    login(provider, "alice", USERS["alice"].password)
    login(provider, "alice", "nope-nope")
    assert metric("st_provider_logins_total", operation="authenticate", outcome="ok") == ok + 1
    assert metric("st_provider_logins_total", operation="authenticate", outcome="fail") == failed + 1


def test_an_unreachable_directory_is_success_false(black_hole: BlackHole, database: Database) -> None:
    settings = Settings.from_mapping(
        {"ldap_url": black_hole.url, "ldap_bind_dn": "cn=x", "ldap_bind_password": "y", "ldap_timeout": "1"}
    )
    provider = Provider(Secret(WEB_SERVICE_PASSWORD), authenticator=build_authenticator(settings, database))
    result = login(provider, "alice", "some-password")
    assert not result.success
    assert result.message == DIRECTORY_UNAVAILABLE
    # Other operations proceed without a user.
    fields = call(provider, Operation.GET_CUSTOM_FIELD_OPTIONS, loginUsername="alice")
    assert fields.success and fields.output.get("CanStartTickets") == "True"
