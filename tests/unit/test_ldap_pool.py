"""The ldap3 boundary without a server: URL parsing, TLS configuration, failure labels, forks."""

from __future__ import annotations

from pathlib import Path

import pytest
from ldap3.core import exceptions as ldap_exc

from provider.auth import ldap_pool
from provider.auth.ldap_connection import Entry, ServerTrouble, Target, classify
from provider.auth.ldap_pool import LdapPool
from provider.errors import ConfigError
from provider.settings import LdapSettings


@pytest.mark.parametrize(
    ("url", "host", "port", "ldaps"),
    [
        ("ldap://dc1.example.org", "dc1.example.org", 389, False),
        ("ldaps://dc1.example.org", "dc1.example.org", 636, True),
        ("LDAP://dc1.example.org:3268", "dc1.example.org", 3268, False),
        ("ldaps://[::1]:1636", "::1", 1636, True),
    ],
)
def test_urls(url: str, host: str, port: int, ldaps: bool) -> None:
    target = Target.parse(url)
    assert (target.host, target.port, target.ldaps) == (host, port, ldaps)


@pytest.mark.parametrize("url", ["http://dc1", "ldap://", "ldap://host:notaport"])
def test_bad_urls_are_configuration_errors(url: str) -> None:
    with pytest.raises(ConfigError):
        Target.parse(url)


def test_a_missing_ca_file_is_a_configuration_error(tmp_path: Path) -> None:
    settings = LdapSettings(urls=("ldaps://dc1.example.org",), ca_file=str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigError, match="CA_FILE"):
        LdapPool(settings)


def test_certificates_are_verified_for_ldaps_and_starttls(tmp_path: Path) -> None:
    import ssl

    for settings in (
        LdapSettings(urls=("ldaps://dc1.example.org",)),
        LdapSettings(urls=("ldap://dc1.example.org",), start_tls=True),
    ):
        pool = LdapPool(settings)
        assert pool._tls is not None
        assert pool._tls.validate == ssl.CERT_REQUIRED
    assert LdapPool(LdapSettings(urls=("ldap://dc1.example.org",)))._tls is None


def test_creating_a_pool_connects_to_nothing() -> None:
    # A port nobody could answer on: construction must not try.
    pool = LdapPool(LdapSettings(urls=("ldap://192.0.2.1:1",), timeout=1))
    assert pool.urls == ("ldap://192.0.2.1:1",)
    assert pool._idle == []


def test_blank_passwords_never_reach_a_bind() -> None:
    pool = LdapPool(LdapSettings(urls=("ldap://192.0.2.1:1",), timeout=1))
    with pytest.raises(ValueError):
        pool.bind_as("uid=alice,dc=example,dc=org", " ")


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (
            ldap_exc.LDAPSocketOpenError(
                "socket connection error while opening: [Errno 111] Connection refused"
            ),
            "connect",
        ),
        (ldap_exc.LDAPSocketOpenError("socket ssl wrapping error: [SSL: CERTIFICATE_VERIFY_FAILED]"), "tls"),
        (ldap_exc.LDAPStartTLSError("start tls failed"), "tls"),
        (ldap_exc.LDAPSocketReceiveError("error receiving data: timed out"), "timeout"),
        (ldap_exc.LDAPResponseTimeoutError("no response from server"), "timeout"),
        (ldap_exc.LDAPSessionTerminatedByServerError("session terminated by server"), "connection_lost"),
        (ServerTrouble(51, "busy"), "server_busy"),
        (ldap_exc.LDAPOperationsErrorResult("x"), "protocol"),
    ],
)
def test_failure_labels_are_bounded(exc: Exception, kind: str) -> None:
    assert classify(exc) == kind


def test_entry_attributes_are_case_insensitive() -> None:
    entry = Entry(dn="uid=a,dc=x", attributes={"memberOf": ("cn=g,dc=x",), "mail": ("a@x",)})
    assert entry.get("MEMBEROF") == ("cn=g,dc=x",)
    assert entry.first("Mail") == "a@x"
    assert entry.first("displayName") is None


def test_pools_share_one_at_fork_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    hooks: list[object] = []
    monkeypatch.setattr(ldap_pool.os, "register_at_fork", lambda **kw: hooks.append(kw))
    monkeypatch.setattr(ldap_pool, "_FORK_RESET", ldap_pool._ForkReset())
    pools = [LdapPool(LdapSettings(urls=("ldap://192.0.2.1:1",), timeout=1)) for _ in range(5)]
    assert len(hooks) == 1
    assert set(pools) == set(ldap_pool._FORK_RESET.pools)


def test_a_forked_child_forgets_every_pool() -> None:
    import os

    pools = [LdapPool(LdapSettings(urls=("ldap://192.0.2.1:1",), timeout=1)) for _ in range(3)]
    for pool in pools:
        pool._down_until["ldap://192.0.2.1:1"] = float("inf")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report whether every pool was reset, then leave at once
        os.close(read)
        reset = all(p._down_until == {} and p._pid == os.getpid() for p in pools)
        os.write(write, b"1" if reset else b"0")
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as answer:
        assert answer.read() == b"1"
    os.waitpid(pid, 0)
    assert all(p._down_until for p in pools)  # the parent's pools are untouched
