"""Configuration: defaults, validation that names every problem, TOML plus environment, secrets never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from provider.cli import load_settings, main
from provider.errors import ConfigError
from provider.settings import DEFAULT_USER_FILTER, RetentionSettings, Secret, Settings


def test_defaults_are_safe() -> None:
    settings = Settings.from_mapping({})
    assert settings.database_url.startswith("sqlite:///")
    assert settings.namespace == "http://tempuri.org/"
    assert settings.max_body_bytes == 1_048_576
    assert settings.bind == "127.0.0.1:8080"
    assert settings.auth == "local"
    assert settings.ldap is None
    with pytest.raises(ConfigError, match="WEB_SERVICE_PASSWORD"):
        settings.require_password()


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_mapping(
            {
                "max_body_bytes": "0",
                "ldap_timeout": "soon",
                "ldap_url": "http://x",
                "colour": "blue",
                "auth": "kerberos",
            }
        )
    message = str(info.value)
    for expected in ("MAX_BODY_BYTES", "LDAP_URL", "COLOUR: unknown setting", "AUTH", "LDAP_TIMEOUT"):
        assert expected in message


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("*", ("*",)),
        ("urn:acme:connector, http://example.org/st/", ("urn:acme:connector", "http://example.org/st/")),
        ("  urn:a\nurn:b ,urn:a ", ("urn:a", "urn:b")),
        (["urn:a", " http://b/ "], ("urn:a", "http://b/")),
        ("", ()),
    ],
)
def test_accept_namespaces(raw: object, expected: tuple[str, ...]) -> None:
    assert Settings.from_mapping({}).accept_namespaces == ("*",)
    assert Settings.from_mapping({"accept_namespaces": raw}).accept_namespaces == expected


@pytest.mark.parametrize("raw", ["urn:acme:*", "x" * 1025])
def test_accept_namespaces_refuses_patterns_and_overlong_names(raw: str) -> None:
    with pytest.raises(ConfigError, match="ST_PROVIDER_ACCEPT_NAMESPACES"):
        Settings.from_mapping({"accept_namespaces": raw})


def test_rule_limits_have_safe_defaults_and_are_validated() -> None:
    defaults = Settings.from_mapping({})
    assert (defaults.rules_max_output, defaults.rules_deadline_ms) == (65_536, 200)
    chosen = Settings.from_mapping({"rules_max_output": "4096", "rules_deadline_ms": "50"})
    assert (chosen.rules_max_output, chosen.rules_deadline_ms) == (4096, 50)
    with pytest.raises(ConfigError) as info:
        Settings.from_mapping({"rules_max_output": "10", "rules_deadline_ms": "0"})
    message = str(info.value)
    assert "ST_PROVIDER_RULES_MAX_OUTPUT: must be a whole number from 1024 to 16777216" in message
    assert "ST_PROVIDER_RULES_DEADLINE_MS: must be a whole number from 10 to 60000" in message
    with pytest.raises(ConfigError, match="RULES_DEADLINE_MS"):
        Settings.from_mapping({"rules_deadline_ms": "forever"})


def test_ldap_settings_and_default_auth() -> None:
    settings = Settings.from_mapping(
        {
            "ldap_url": "ldap://a.example, ldaps://b.example",
            "ldap_bind_dn": "cn=svc",
            "ldap_bind_password": "pw",
            "ldap_start_tls": "yes",
        }
    )
    assert settings.auth == "ldap"
    assert settings.ldap is not None
    assert settings.ldap.urls == ("ldap://a.example", "ldaps://b.example")
    assert settings.ldap.start_tls is True
    assert settings.ldap.user_filter == DEFAULT_USER_FILTER
    assert "pw" not in repr(settings)


@pytest.mark.parametrize(
    "values,problem",
    [
        ({"ldap_user_base": "dc=x"}, "without ST_PROVIDER_LDAP_URL"),
        ({"ldap_url": "ldap://x", "ldap_user_filter": "(uid=*)"}, "{username}"),
        ({"ldap_url": "ldap://x", "ldap_bind_dn": "cn=svc"}, "BIND_PASSWORD"),
        ({"auth": "ldap"}, "needs ST_PROVIDER_LDAP_URL"),
    ],
)
def test_ldap_inconsistencies(values: dict[str, str], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem.replace("{", r"\{").replace("}", r"\}")):
        Settings.from_mapping(values)


def test_secret_hides_itself_and_compares() -> None:
    secret = Secret("hunter2")
    assert "hunter2" not in repr(secret) and "hunter2" not in str(secret) and "hunter2" not in f"{secret}"
    assert secret.matches("hunter2")
    assert not secret.matches("hunter3")
    assert not secret.matches(None)
    assert secret.matches("hunter2 ") is False
    assert Secret("é").matches("é")


PASSWORD_NAMES = ["web_service_password", "previous_web_service_password"]


@pytest.mark.parametrize("name", PASSWORD_NAMES)
@pytest.mark.parametrize(
    "value",
    [
        "change-me-to-a-long-random-value",
        "CHANGE-ME",
        "Change-Me-Please-0123456789",
        "changeme",
        "replace_me_with_a_real_value",
        "choose-a-password",
        "PASSWORD",
        "...",
    ],
)
def test_placeholder_service_passwords_are_refused_without_repeating_them(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_mapping({name: value})
    assert f"ST_PROVIDER_{name.upper()}: is a placeholder from the examples" in str(info.value)
    detail = str(info.value).split(f"{name.upper()}: ", 1)[1]
    assert value not in detail


@pytest.mark.parametrize("name", PASSWORD_NAMES)
def test_service_passwords_under_16_characters_are_refused(name: str) -> None:
    with pytest.raises(ConfigError, match=f"ST_PROVIDER_{name.upper()}: is too short: use at least 16"):
        Settings.from_mapping({name: "x" * 15})
    settings = Settings.from_mapping({name: "x" * 15 + "y"})
    assert getattr(settings, name).matches("x" * 15 + "y")
    # Real passwords that merely contain the words stay accepted.
    assert Settings.from_mapping({name: "exchange-meetings-2026"})
    # Unset (empty) is still "not configured", refused by `serve` only.
    assert getattr(Settings.from_mapping({name: ""}), name) is None


def test_toml_file_with_environment_over_it(tmp_path: Path) -> None:
    config = tmp_path / "provider.toml"
    config.write_text(
        'web_service_password = "from-the-file-0123"\nmax_body_bytes = 2048\n[ldap]\nurl = "ldap://dir.example"\ntimeout = 3\n',
        encoding="utf-8",
    )
    settings = load_settings({"ST_PROVIDER_CONFIG": str(config), "ST_PROVIDER_MAX_BODY_BYTES": "4096"})
    assert settings.require_password().matches("from-the-file-0123")
    assert settings.max_body_bytes == 4096
    assert settings.ldap is not None and settings.ldap.timeout == 3


def test_bad_toml_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("this is = = not toml", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings({}, str(config))
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings({}, str(tmp_path / "missing.toml"))


def test_cli_reports_config_errors_with_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["db", "upgrade"], environ={"ST_PROVIDER_MAX_BODY_BYTES": "lots"})
    assert status == 2
    assert "ST_PROVIDER_MAX_BODY_BYTES" in capsys.readouterr().err


def test_cli_db_upgrade(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    assert main(["db", "upgrade"], environ={"ST_PROVIDER_DATABASE_URL": url}) == 0
    assert "head" in capsys.readouterr().out
    from provider.db.migrate import pending

    assert not pending(url)


def test_wrong_password_limit_and_trusted_proxies_defaults() -> None:
    settings = Settings.from_mapping({})
    limit = settings.password_limit
    assert (limit.max_failures, limit.window_seconds, limit.cooldown_seconds) == (20, 60, 60)
    assert limit.max_addresses == 10_000
    # Only nginx on this host (deploy/) is believed by default.
    assert [str(n) for n in settings.trusted_proxies] == ["127.0.0.1/32", "::1/128"]


def test_wrong_password_limit_and_trusted_proxies_from_the_environment() -> None:
    settings = load_settings(
        {
            "ST_PROVIDER_AUTHPW_MAX_FAILURES": "5",
            "ST_PROVIDER_AUTHPW_WINDOW_SECONDS": "30",
            "ST_PROVIDER_AUTHPW_COOLDOWN_SECONDS": "120",
            "ST_PROVIDER_AUTHPW_MAX_ADDRESSES": "500",
            "ST_PROVIDER_TRUSTED_PROXIES": "10.0.0.5, 10.1.0.0/16 fd00::/8",
        }
    )
    limit = settings.password_limit
    assert (limit.max_failures, limit.window_seconds, limit.cooldown_seconds, limit.max_addresses) == (
        5,
        30,
        120,
        500,
    )
    assert [str(n) for n in settings.trusted_proxies] == ["10.0.0.5/32", "10.1.0.0/16", "fd00::/8"]
    assert load_settings({"ST_PROVIDER_AUTHPW_MAX_FAILURES": "0"}).password_limit.max_failures == 0
    assert load_settings({"ST_PROVIDER_TRUSTED_PROXIES": ""}).trusted_proxies == ()


def test_wrong_password_limit_and_trusted_proxies_are_validated() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_mapping(
            {
                "authpw_max_failures": "-1",
                "authpw_window_seconds": "0",
                "authpw_cooldown_seconds": "soon",
                "authpw_max_addresses": "0",
                "trusted_proxies": "127.0.0.1, *",
            }
        )
    message = str(info.value)
    for expected in (
        "AUTHPW_MAX_FAILURES",
        "AUTHPW_WINDOW_SECONDS",
        "AUTHPW_COOLDOWN_SECONDS",
        "AUTHPW_MAX_ADDRESSES",
        "TRUSTED_PROXIES: '*' is not an IP address",
    ):
        assert expected in message


def test_secret_vars_default_and_list() -> None:
    assert Settings.from_mapping({}).secret_vars == ("*",)
    settings = load_settings({"ST_PROVIDER_SECRET_VARS": "SMS_APP_KEY, SMTP_*  HOOK_[AB]"})
    assert settings.secret_vars == ("SMS_APP_KEY", "SMTP_*", "HOOK_[AB]")
    assert Settings.from_mapping({"secret_vars": ["A", "B"]}).secret_vars == ("A", "B")


@pytest.mark.parametrize("raw", ["", " , ", "SMS_KEY;rm", "A B$"])
def test_secret_vars_must_be_names_or_patterns(raw: str) -> None:
    with pytest.raises(ConfigError, match="ST_PROVIDER_SECRET_VARS"):
        Settings.from_mapping({"secret_vars": raw})


def test_request_read_seconds() -> None:
    assert Settings.from_mapping({}).request_read_seconds == 10.0
    assert load_settings({"ST_PROVIDER_REQUEST_READ_SECONDS": "2.5"}).request_read_seconds == 2.5
    for bad in ("0", "-1", "soon"):
        with pytest.raises(ConfigError, match="REQUEST_READ_SECONDS"):
            Settings.from_mapping({"request_read_seconds": bad})


def test_journal_and_retention_defaults() -> None:
    settings = Settings()
    assert settings.journal is True
    assert settings.retention == RetentionSettings(
        journal_days=7, journal_max_rows=1_000_000, events_days=90, audit_days=365
    )


def test_journal_and_retention_from_the_environment() -> None:
    settings = load_settings(
        {
            "ST_PROVIDER_JOURNAL": "off",
            "ST_PROVIDER_JOURNAL_DAYS": "3",
            "ST_PROVIDER_JOURNAL_MAX_ROWS": "5000",
            "ST_PROVIDER_EVENTS_DAYS": "30",
            "ST_PROVIDER_AUDIT_DAYS": "730",
        }
    )
    assert settings.journal is False
    assert settings.retention == RetentionSettings(
        journal_days=3, journal_max_rows=5000, events_days=30, audit_days=730
    )


def test_retention_must_be_positive() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(
            {
                "ST_PROVIDER_JOURNAL_DAYS": "0",
                "ST_PROVIDER_JOURNAL_MAX_ROWS": "-1",
                "ST_PROVIDER_JOURNAL": "x",
            }
        )
    message = str(caught.value)
    for name in ("ST_PROVIDER_JOURNAL_DAYS", "ST_PROVIDER_JOURNAL_MAX_ROWS", "ST_PROVIDER_JOURNAL:"):
        assert name in message


def test_console_defaults_are_on_with_a_30_minute_idle_timeout() -> None:
    console = Settings().console
    assert console.enabled is True
    assert console.session_idle_minutes == 30
    assert console.session_secret is None and console.admin_group is None and console.viewer_group is None


def test_console_settings_from_the_environment() -> None:
    secret = "k" * 40
    settings = load_settings(
        {
            "ST_PROVIDER_CONSOLE": "off",
            "ST_PROVIDER_ADMIN_GROUP": "cn=Provider Admins,ou=groups,dc=example,dc=org",
            "ST_PROVIDER_VIEWER_GROUP": "Helpdesk",
            "ST_PROVIDER_SESSION_SECRET": secret,
            "ST_PROVIDER_SESSION_IDLE_MINUTES": "5",
        }
    )
    console = settings.console
    assert console.enabled is False
    assert console.admin_group == "cn=Provider Admins,ou=groups,dc=example,dc=org"
    assert console.viewer_group == "Helpdesk"
    assert console.session_secret is not None and console.session_secret.reveal() == secret
    assert console.session_idle_minutes == 5
    assert secret not in repr(settings)


def test_console_settings_are_validated_without_repeating_the_secret() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(
            {
                "ST_PROVIDER_CONSOLE": "maybe",
                "ST_PROVIDER_SESSION_SECRET": "short-secret",
                "ST_PROVIDER_SESSION_IDLE_MINUTES": "0",
            }
        )
    message = str(caught.value)
    for name in ("ST_PROVIDER_CONSOLE:", "ST_PROVIDER_SESSION_SECRET", "ST_PROVIDER_SESSION_IDLE_MINUTES"):
        assert name in message
    assert "short-secret" not in message


def test_read_only_variables_come_from_st_provider_var_names() -> None:
    settings = load_settings(
        {"ST_PROVIDER_VAR_SUPPORT_PHONE": "+44 20 7946 0000", "ST_PROVIDER_VAR_Region": "eu", "OTHER": "x"}
    )
    assert dict(settings.read_only_vars) == {"support_phone": "+44 20 7946 0000", "region": "eu"}
    with pytest.raises(TypeError):
        settings.read_only_vars["region"] = "us"  # type: ignore[index]
    assert dict(Settings.from_mapping({}).read_only_vars) == {}


def test_a_read_only_variable_name_must_be_a_name() -> None:
    with pytest.raises(ConfigError, match="ST_PROVIDER_VAR_2X: a variable name is letters"):
        load_settings({"ST_PROVIDER_VAR_2X": "x"})
