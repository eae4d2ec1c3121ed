"""`st-provider ldap check` against a real slapd, run as a real process."""

from __future__ import annotations

import pytest

from tests.fixtures.slapd import USERS, BlackHole, SlapdServer
from tests.support import base_env, run_cli

pytestmark = pytest.mark.slapd


def env(slapd: SlapdServer, sqlite_url: str, **overrides: str) -> dict[str, str]:
    return base_env(sqlite_url, **slapd.env(**overrides))


def test_check_reports_server_bind_user_and_groups(slapd: SlapdServer, sqlite_url: str) -> None:
    result = run_cli(["ldap", "check", "EXAMPLE\\bob"], env(slapd, sqlite_url))
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert f"server {slapd.url}: ok" in out
    assert "tls: none (plain LDAP" in out
    assert f"bind: ok as {slapd.service_dn}" in out
    assert f"dn: {USERS['bob'].dn}" in out
    assert "groups: Support Tier 1, Support, Staff" in out
    assert "account: usable" in out
    assert "result: ok" in out


def test_check_with_password_from_stdin(slapd: SlapdServer, sqlite_url: str) -> None:
    good = run_cli(
        ["ldap", "check", "jürgen", "--password"],
        env(slapd, sqlite_url),
        input_text=USERS["jürgen"].password + "\n",
    )
    assert good.returncode == 0, good.stdout + good.stderr
    assert "password: accepted" in good.stdout
    assert USERS["jürgen"].password not in good.stdout + good.stderr
    bad = run_cli(["ldap", "check", "jürgen", "--password"], env(slapd, sqlite_url), input_text="nope-nope\n")
    assert bad.returncode == 1
    assert "password: refused (bad_password)" in bad.stdout


def test_check_explains_a_disabled_or_missing_user(slapd: SlapdServer, sqlite_url: str) -> None:
    disabled = run_cli(["ldap", "check", "dave"], env(slapd, sqlite_url))
    assert disabled.returncode == 1
    assert "account: disabled" in disabled.stdout
    missing = run_cli(["ldap", "check", "*"], env(slapd, sqlite_url))
    assert missing.returncode == 1
    assert "filter: (|(uid=\\2a)(sAMAccountName=\\2a)(userPrincipalName=\\2a))" in missing.stdout
    assert "not found (unknown_user" in missing.stdout


def test_check_reports_tls_and_server_failures(
    slapd_tls: SlapdServer, sqlite_url: str, black_hole: BlackHole
) -> None:
    ok = run_cli(
        ["ldap", "check"],
        env(slapd_tls, sqlite_url, ldap_url=slapd_tls.ldaps_url, ldap_ca_file=slapd_tls.ca_file),
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "tls: ldaps, certificate verified" in ok.stdout
    wrong = run_cli(
        ["ldap", "check"],
        env(
            slapd_tls,
            sqlite_url,
            ldap_url=f"{slapd_tls.ldaps_url} {black_hole.url}",
            ldap_ca_file=slapd_tls.wrong_ca_file,
            ldap_timeout="1",
        ),
    )
    assert wrong.returncode == 1
    assert f"server {slapd_tls.ldaps_url}: FAILED" in wrong.stdout
    assert "error: tls:" in wrong.stdout
    assert f"server {black_hole.url.replace('ldap://', 'ldap://')}: FAILED" in wrong.stdout
    assert "error: timeout:" in wrong.stdout
    assert slapd_tls.service_password not in wrong.stdout + wrong.stderr


def test_check_without_ldap_settings_is_a_usage_error(sqlite_url: str) -> None:
    result = run_cli(["ldap", "check"], base_env(sqlite_url))
    assert result.returncode == 2
    assert "ST_PROVIDER_LDAP_URL" in result.stderr
