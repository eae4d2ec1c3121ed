"""Several servers, dead and silent ones, LDAPS and StartTLS with a test CA (real slapd)."""

from __future__ import annotations

import socket
import time

import pytest
from prometheus_client import REGISTRY

from provider.auth.ldap import LdapAuthenticator
from provider.errors import AuthenticationFailed, DirectoryUnavailable
from provider.settings import Settings
from tests.fixtures.slapd import USERS, BlackHole, SlapdServer

pytestmark = pytest.mark.slapd

ALICE = USERS["alice"]


def authenticator(slapd: SlapdServer, **overrides: str) -> LdapAuthenticator:
    settings = Settings.from_mapping(slapd.settings(**overrides))
    assert settings.ldap is not None
    return LdapAuthenticator(settings.ldap)


def errors(kind: str) -> float:
    return REGISTRY.get_sample_value("st_provider_ldap_errors_total", {"kind": kind}) or 0.0


def test_fails_over_when_the_first_server_refuses_connections(slapd: SlapdServer, dead_ldap_url: str) -> None:
    before = errors("connect")
    auth = authenticator(slapd, ldap_url=f"{dead_ldap_url}, {slapd.url}")
    assert auth.authenticate("alice", ALICE.password).email == ALICE.mail
    assert auth.lookup("bob") is not None
    assert errors("connect") > before


def test_fails_over_when_the_first_server_never_answers(slapd: SlapdServer, black_hole: BlackHole) -> None:
    auth = authenticator(slapd, ldap_url=f"{black_hole.url} {slapd.url}", ldap_timeout="1")
    assert auth.authenticate("alice", ALICE.password).email == ALICE.mail
    reached = black_hole.connections
    assert reached >= 1
    # The silent server rests: the next requests go straight to the one that answers.
    for _ in range(3):
        assert auth.authenticate("alice", ALICE.password).email == ALICE.mail
        with pytest.raises(AuthenticationFailed):
            auth.authenticate("alice", "wrong-password")
    assert black_hole.connections == reached


def test_a_silent_directory_fails_within_the_timeout(black_hole: BlackHole) -> None:
    settings = Settings.from_mapping(
        {"ldap_url": black_hole.url, "ldap_bind_dn": "cn=x", "ldap_bind_password": "y", "ldap_timeout": "1"}
    )
    assert settings.ldap is not None
    auth = LdapAuthenticator(settings.ldap)
    before = errors("timeout")
    for _ in range(2):
        started = time.monotonic()
        with pytest.raises(DirectoryUnavailable):
            auth.authenticate("alice", "some-password")
        # Not a speed measurement: proof that a worker is never held indefinitely.
        assert time.monotonic() - started < 5
    with pytest.raises(DirectoryUnavailable):
        auth.lookup("alice")
    assert errors("timeout") > before


def test_every_server_down(dead_ldap_url: str, black_hole: BlackHole) -> None:
    settings = Settings.from_mapping(
        {
            "ldap_url": f"{dead_ldap_url} {black_hole.url}",
            "ldap_bind_dn": "cn=x",
            "ldap_bind_password": "y",
            "ldap_timeout": "1",
        }
    )
    assert settings.ldap is not None
    auth = LdapAuthenticator(settings.ldap)
    with pytest.raises(DirectoryUnavailable) as failure:
        auth.lookup("alice")
    assert "no directory server answered" in str(failure.value)
    assert failure.value.__cause__ is not None  # the ldap3 error, kept for debugging


def test_a_wrong_service_password_is_an_outage_not_a_login_failure(slapd: SlapdServer) -> None:
    auth = authenticator(slapd, ldap_bind_password="not-the-service-password")
    with pytest.raises(DirectoryUnavailable, match="service account"):
        auth.authenticate("alice", ALICE.password)


# --- TLS ------------------------------------------------------------------------------------


def test_ldaps_with_the_test_ca(slapd_tls: SlapdServer) -> None:
    auth = authenticator(slapd_tls, ldap_url=slapd_tls.ldaps_url, ldap_ca_file=slapd_tls.ca_file)
    identity = auth.authenticate("jürgen", USERS["jürgen"].password)
    assert identity.groups == ("Grüne Gruppe",)


def test_starttls_with_the_test_ca(slapd_tls: SlapdServer) -> None:
    auth = authenticator(
        slapd_tls, ldap_url=slapd_tls.starttls_url, ldap_start_tls="true", ldap_ca_file=slapd_tls.ca_file
    )
    assert auth.authenticate("alice", ALICE.password).email == ALICE.mail
    assert auth.lookup("bob") is not None


@pytest.mark.parametrize("mode", ["ldaps", "starttls"])
def test_a_certificate_from_another_ca_is_refused(slapd_tls: SlapdServer, mode: str) -> None:
    overrides = (
        {"ldap_url": slapd_tls.ldaps_url}
        if mode == "ldaps"
        else {"ldap_url": slapd_tls.starttls_url, "ldap_start_tls": "true"}
    )
    before = errors("tls")
    auth = authenticator(slapd_tls, ldap_ca_file=slapd_tls.wrong_ca_file, **overrides)
    with pytest.raises(DirectoryUnavailable, match="tls"):
        auth.authenticate("alice", ALICE.password)
    assert errors("tls") > before


def test_the_system_store_does_not_trust_the_test_ca(slapd_tls: SlapdServer) -> None:
    auth = authenticator(slapd_tls, ldap_url=slapd_tls.ldaps_url)
    with pytest.raises(DirectoryUnavailable):
        auth.lookup("alice")


def test_the_host_name_is_verified(slapd_tls: SlapdServer) -> None:
    # The certificate names "localhost" only: the same server by IP address is refused.
    by_ip = slapd_tls.ldaps_url.replace("localhost", "127.0.0.1")
    auth = authenticator(slapd_tls, ldap_url=by_ip, ldap_ca_file=slapd_tls.ca_file)
    with pytest.raises(DirectoryUnavailable, match="tls"):
        auth.authenticate("alice", ALICE.password)


def test_a_bad_tls_server_fails_over_to_a_good_one(slapd_tls: SlapdServer) -> None:
    by_ip = slapd_tls.ldaps_url.replace("localhost", "127.0.0.1")
    auth = authenticator(slapd_tls, ldap_url=f"{by_ip} {slapd_tls.ldaps_url}", ldap_ca_file=slapd_tls.ca_file)
    assert auth.authenticate("alice", ALICE.password).email == ALICE.mail


def test_a_pooled_connection_closed_behind_our_back_is_replaced(slapd: SlapdServer) -> None:
    # As when a firewall or the server drops an idle connection.
    auth = authenticator(slapd)
    assert auth.lookup("alice") is not None
    for pooled in auth.pool._idle:
        pooled.connection.socket.shutdown(socket.SHUT_RDWR)
    assert auth.lookup("bob") is not None
    assert auth.pool._down_until == {}  # not mistaken for a dead server
