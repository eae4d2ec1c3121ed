"""Channel settings: validation without secrets, ${VAR} resolution, delivery policy defaults."""

from __future__ import annotations

from typing import Any

import pytest

from provider.channels.impl.email import EmailChannel, addresses
from provider.channels.impl.http import parse_retry_after
from provider.channels.impl.smartcomm import SmartCommChannel
from provider.channels.impl.uniphore_sms import UniphoreSmsChannel, classify, message_sid
from provider.channels.impl.webhook import WebhookChannel, signature
from provider.channels.policy import GENERIC_KEYS, channel_policy, parse_duration
from provider.channels.registry import (
    build_channel,
    channel_missing_variables,
    normalise_notify_params,
    validate_channel_settings,
    validate_notify_params,
)
from provider.channels.specs import CHANNEL_TYPES, SPECS
from provider.channels.validation import allowed_environment
from provider.errors import ChannelError, ConfigError
from provider.redact import Redactor
from provider.settings import WorkerSettings

VALID: dict[str, dict[str, Any]] = {
    "uniphore-sms": {
        "base_url": "https://gointeract.io",
        "account_id": "12345678",
        "application_key": "${SMS_APP_KEY}",
        "environment": "production",
    },
    "smartcomm": {
        "base_url": "https://eu10-sb.smartcommunications.cloud",
        "token_url": "https://eu10-sb.smartcommunications.cloud/one/oauth2/token",
        "client_id": "st-provider",
        "client_secret": "${SMARTCOMM_SECRET}",
        "batch_config_res_id": 1234,
    },
    "smartconnect": {
        "api_url": "https://api.smartconnect.com/v1",
        "customer_id": "42",
        "email": "integration@example.org",
        "password": "${SMARTCONNECT_PASSWORD}",
    },
    "webhook": {"url": "https://hooks.slack.com/services/T/B/X", "secret": "${HOOK_SECRET}"},
    "email": {
        "host": "smtp.example.org",
        "from": "helpdesk@example.org",
        "username": "n",
        "password": "${SMTP_PW}",
    },
}
ENVIRONMENT = {
    "SMS_APP_KEY": "sms-key-value",
    "SMARTCOMM_SECRET": "smartcomm-secret-value",
    "SMARTCONNECT_PASSWORD": "smartconnect-password-value",
    "HOOK_SECRET": "hook-secret-value",
    "SMTP_PW": "smtp-password-value",
}


@pytest.mark.parametrize("type_name", CHANNEL_TYPES)
def test_documented_settings_are_valid(type_name: str) -> None:
    assert validate_channel_settings(type_name, VALID[type_name]) == []


@pytest.mark.parametrize("type_name", CHANNEL_TYPES)
def test_every_type_builds_and_closes(type_name: str) -> None:
    channel = build_channel("c", type_name, VALID[type_name], environment=ENVIRONMENT, timeout=3)
    try:
        assert channel.type_name == type_name
    finally:
        channel.close()


def test_unknown_type() -> None:
    [problem] = validate_channel_settings("fax", {})
    assert "unknown channel type 'fax'" in problem
    with pytest.raises(ConfigError, match="unknown channel type"):
        build_channel("c", "fax", {}, environment={}, timeout=1)


def test_every_problem_is_reported_at_once() -> None:
    problems = validate_channel_settings(
        "smartcomm",
        {"base_url": "ftp://x", "client_secret": "literal-secret", "batch_config_res_id": "abc", "colour": 1},
    )

    text = "\n".join(problems)
    assert "unknown setting 'colour'" in text
    assert "setting 'token_url' is required" in text
    assert "setting 'client_id' is required" in text
    assert "'base_url'" in text and "http" in text
    assert "'batch_config_res_id'" in text
    assert "'client_secret' must be a ${VAR} reference" in text
    assert "literal-secret" not in text


def test_secret_settings_must_come_from_the_environment() -> None:
    settings = {**VALID["uniphore-sms"], "application_key": "53736e07e4b05772e6475c2d"}

    [problem] = validate_channel_settings("uniphore-sms", settings)

    assert "application_key" in problem
    assert "53736e07e4b05772e6475c2d" not in problem


def test_invalid_variable_names_are_reported() -> None:
    settings = {**VALID["webhook"], "secret": "${not a name}"}
    assert validate_channel_settings("webhook", settings)


def test_references_are_not_resolved_while_validating() -> None:
    # a ${VAR} in a URL is only checked once resolved, so validation needs no environment
    settings = {**VALID["webhook"], "url": "${HOOK_URL}", "headers": {"Authorization": "Bearer ${TOKEN}"}}
    assert validate_channel_settings("webhook", settings) == []


# --- which ${VAR} references are allowed (issue 9 item 5) -----------------------------


@pytest.mark.parametrize(
    ("type_name", "key", "value"),
    [
        ("email", "port", "${SMTP_PORT}"),
        ("email", "from", "${HOME}@example.org"),
        ("uniphore-sms", "account_id", "${SMS_ACCOUNT}"),
        ("webhook", "signature_header", "${HOME}"),
    ],
)
def test_references_only_in_fields_that_take_them(type_name: str, key: str, value: str) -> None:
    [problem] = validate_channel_settings(type_name, {**VALID[type_name], key: value})

    assert f"setting {key!r} may not hold ${{VAR}} references" in problem


@pytest.mark.parametrize(
    "settings",
    [
        {"url": "http://x/${ST_PROVIDER_WEB_SERVICE_PASSWORD}"},
        {"url": "https://hooks.example.org/", "headers": {"X-Db": "${ST_PROVIDER_DATABASE_URL}"}},
        {"url": "https://hooks.example.org/", "secret": "${st_provider_web_service_password}"},
    ],
)
def test_provider_settings_are_never_referenced(settings: dict[str, Any]) -> None:
    [problem] = validate_channel_settings("webhook", settings)
    assert "names a setting of the provider itself" in problem

    environment = {"ST_PROVIDER_WEB_SERVICE_PASSWORD": "wsp-value-1234", "ST_PROVIDER_DATABASE_URL": "db"}
    environment["st_provider_web_service_password"] = "wsp-value-1234"
    with pytest.raises(ConfigError) as info:
        build_channel("hook", "webhook", settings, environment=environment, timeout=1)
    assert "wsp-value-1234" not in str(info.value)


def test_admin_lists_the_variables_channels_may_reference() -> None:
    allowed = ("SMS_APP_KEY", "HOOK_*")
    settings = {"url": "https://${HOOK_HOST}/x", "headers": {"Authorization": "Bearer ${AWS_SECRET}"}}

    [problem] = validate_channel_settings("webhook", settings, secret_vars=allowed)

    assert "${AWS_SECRET} is not allowed by ST_PROVIDER_SECRET_VARS" in problem
    assert validate_channel_settings("uniphore-sms", VALID["uniphore-sms"], secret_vars=allowed) == []
    with pytest.raises(ConfigError, match="AWS_SECRET"):
        build_channel(
            "hook",
            "webhook",
            settings,
            environment={"HOOK_HOST": "h.example.org", "AWS_SECRET": "aws-secret-value"},
            timeout=1,
            secret_vars=allowed,
        )


def test_allowed_environment_drops_provider_settings_and_unlisted_names() -> None:
    environment = {"ST_PROVIDER_DATABASE_URL": "db", "SMS_APP_KEY": "k", "HOME": "/root", "HOOK_A": "a"}

    assert dict(allowed_environment(environment)) == {"SMS_APP_KEY": "k", "HOME": "/root", "HOOK_A": "a"}
    assert dict(allowed_environment(environment, ("SMS_*", "HOOK_A"))) == {"SMS_APP_KEY": "k", "HOOK_A": "a"}


def test_missing_variables_are_named_per_channel() -> None:
    settings = {**VALID["webhook"], "url": "https://${HOOK_HOST}/x", "headers": {"A": "${HOOK_SECRET}"}}

    assert channel_missing_variables("webhook", settings, {}) == ["HOOK_HOST", "HOOK_SECRET"]
    assert channel_missing_variables("webhook", settings, {"HOOK_HOST": "h", "HOOK_SECRET": "s"}) == []
    # a refused name is a validation problem, not a missing variable
    refused = {"url": "https://x/${ST_PROVIDER_X}"}
    assert channel_missing_variables("webhook", refused, {}) == []


def test_generic_keys_are_validated_and_ignored_by_channels() -> None:
    settings = {
        **VALID["smartcomm"],
        "retry_waits": {429: 90, "503": "5m"},
        "max_attempts": 5,
        "max_age": "12h",
        "rate_limit": "50/60s",
        "category": "promotional",
        "concurrency": 4,
    }
    assert validate_channel_settings("smartcomm", settings) == []
    channel = build_channel("c", "smartcomm", settings, environment=ENVIRONMENT, timeout=1)
    channel.close()
    assert {"retry_waits", "max_attempts", "max_age", "rate_limit", "category", "concurrency"} == GENERIC_KEYS


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("retry_waits", {"abc": 5}),
        ("retry_waits", {700: 5}),
        ("retry_waits", [429, 60]),
        ("max_attempts", 0),
        ("max_attempts", "many"),
        ("max_age", "tomorrow"),
        ("rate_limit", "fast"),
        ("rate_limit", {"calls": 0, "per": 60}),
    ],
)
def test_invalid_generic_keys(key: str, value: Any) -> None:
    [problem] = validate_channel_settings("webhook", {**VALID["webhook"], key: value})
    assert repr(key) in problem


def test_unset_variable_is_named_and_no_value_is_shown() -> None:
    environment = {k: v for k, v in ENVIRONMENT.items() if k != "SMARTCOMM_SECRET"}

    with pytest.raises(ConfigError) as info:
        build_channel("docs", "smartcomm", VALID["smartcomm"], environment=environment, timeout=1)

    message = str(info.value)
    assert "SMARTCOMM_SECRET" in message
    assert "'docs'" in message
    assert all(value not in message for value in ENVIRONMENT.values())


def test_variables_are_resolved_inside_strings_and_mappings() -> None:
    settings = {
        "url": "https://${HOOK_HOST}/events",
        "headers": {"Authorization": "Bearer ${HOOK_TOKEN}"},
    }
    channel = build_channel(
        "hook",
        "webhook",
        settings,
        environment={"HOOK_HOST": "hooks.example.org", "HOOK_TOKEN": "tkn"},
        timeout=1,
    )
    try:
        assert isinstance(channel, WebhookChannel)
        assert channel.url == "https://hooks.example.org/events"
    finally:
        channel.close()


def test_resolved_values_are_converted_and_checked() -> None:
    settings = {**VALID["email"], "host": "${SMTP_HOST}", "username": "${SMTP_USER}"}
    environment = {**ENVIRONMENT, "SMTP_HOST": "mail.example.org", "SMTP_USER": "notifier"}

    channel = build_channel("mail", "email", settings, environment=environment, timeout=1)

    assert isinstance(channel, EmailChannel)
    assert channel.host == "mail.example.org"
    hook = {**VALID["webhook"], "url": "${HOOK_URL}"}
    with pytest.raises(ConfigError, match="'url'"):
        build_channel("h", "webhook", hook, environment={**environment, "HOOK_URL": "smtp"}, timeout=1)


def test_secret_values_are_never_echoed_by_conversion_errors() -> None:
    settings = {**VALID["smartcomm"], "token_url": "${TOKEN_URL}"}
    with pytest.raises(ConfigError) as info:
        build_channel(
            "c", "smartcomm", settings, environment={**ENVIRONMENT, "TOKEN_URL": "no-url"}, timeout=1
        )
    assert "token_url" in str(info.value)
    assert "smartcomm-secret-value" not in str(info.value)


def test_channel_timeout_setting_overrides_the_worker_timeout() -> None:
    channel = build_channel(
        "c", "email", {**VALID["email"], "timeout": 2.5}, environment=ENVIRONMENT, timeout=10
    )
    assert isinstance(channel, EmailChannel)
    assert channel.timeout == 2.5
    default = build_channel("c", "email", VALID["email"], environment=ENVIRONMENT, timeout=10)
    assert isinstance(default, EmailChannel)
    assert default.timeout == 10


def test_uniphore_soap_transport_loads_the_wsdl_and_uses_the_default_soap_url() -> None:
    settings = {**VALID["uniphore-sms"], "transport": "soap"}
    channel = build_channel("sms", "uniphore-sms", settings, environment=ENVIRONMENT, timeout=1)
    try:
        assert isinstance(channel, UniphoreSmsChannel)
        assert channel.soap_url == "https://gointeract.io/interact/version/2/agent/soap"
    finally:
        channel.close()


def test_uniphore_soap_url_without_soap_transport_is_a_problem() -> None:
    problems = validate_channel_settings(
        "uniphore-sms", {**VALID["uniphore-sms"], "soap_url": "https://x.example"}
    )
    assert problems == ["setting 'soap_url' is only used with transport: soap"]


def test_webhook_reserved_headers_are_a_problem() -> None:
    problems = validate_channel_settings("webhook", {**VALID["webhook"], "headers": {"Content-Length": "5"}})
    assert len(problems) == 1


def test_email_username_needs_a_password() -> None:
    settings = {"host": "smtp.example.org", "from": "a@example.org", "username": "n"}
    assert validate_channel_settings("email", settings) == ["settings 'username' and 'password' go together"]


# --- delivery policy --------------------------------------------------------------------


def test_smartcomm_defaults_follow_its_documentation() -> None:
    defaults = SPECS["smartcomm"]
    assert defaults.rate_limit == (100, 60.0)
    assert dict(defaults.retry_waits) == {500: 5.0, 429: 60.0, 503: 120.0}


@pytest.mark.parametrize("type_name", ["uniphore-sms", "smartconnect", "webhook"])
def test_http_channels_pause_on_429_and_503_by_default(type_name: str) -> None:
    defaults = SPECS[type_name]
    assert defaults.rate_limit is None
    assert dict(defaults.retry_waits) == {429: 60.0, 503: 120.0}


def test_policy_merges_settings_over_defaults() -> None:
    policy = channel_policy(
        "smartcomm",
        {
            **VALID["smartcomm"],
            "retry_waits": {429: 90},
            "max_attempts": 3,
            "max_age": "2h",
            "rate_limit": [10, 1],
        },
    )

    assert dict(policy.retry_waits) == {500: 5.0, 429: 90.0, 503: 120.0}
    assert (policy.max_attempts, policy.max_age, policy.rate_limit) == (3, 7200.0, (10, 1.0))


def test_policy_without_generic_keys_leaves_limits_to_the_worker() -> None:
    worker = WorkerSettings(max_attempts=5, max_age_seconds=600)
    policy = channel_policy("webhook", VALID["webhook"], worker)
    assert (policy.max_attempts, policy.max_age, policy.rate_limit) == (5, 600.0, None)


def test_rate_limit_can_be_switched_off() -> None:
    assert channel_policy("smartcomm", {"rate_limit": "off"}).rate_limit is None
    assert channel_policy("smartcomm", {"rate_limit": {"calls": 5, "per": "1m"}}).rate_limit == (5, 60.0)


def test_invalid_policy_raises() -> None:
    with pytest.raises(ConfigError, match="max_attempts"):
        channel_policy("smartcomm", {"max_attempts": -1})


@pytest.mark.parametrize(
    ("text", "seconds"),
    [(30, 30.0), ("90s", 90.0), ("30m", 1800.0), ("24h", 86400.0), ("2d", 172800.0), ("1.5", 1.5)],
)
def test_durations(text: Any, seconds: float) -> None:
    assert parse_duration(text) == seconds


# --- notify parameters --------------------------------------------------------------------


def test_notify_parameter_names_are_checked_per_type() -> None:
    assert (
        validate_notify_params("uniphore-sms", {"channel": "sms", "campaign": "c", "to": "{{ args.phone }}"})
        == []
    )
    [problem] = validate_notify_params("uniphore-sms", {"campaign": "c", "too": "x"})
    assert "'too'" in problem
    assert validate_notify_params("webhook", {"anything": 1, "goes": 2}) == []
    assert validate_notify_params("smartcomm", {"data": {}, "data_type": "xml", "properties": {}}) == []
    assert validate_notify_params("email", {"to": "a", "subject": "s", "text": "t", "html": "h"}) == []


# --- small pure helpers -----------------------------------------------------------------


def test_message_sid_from_rest_and_soap_answers() -> None:
    assert message_sid(
        "Placed campaign {c1} in SMS queue messageSid: SM3ae49ea884e3494e903b13b2681aba3e"
    ) == ("SM3ae49ea884e3494e903b13b2681aba3e")
    assert message_sid('{"messageSid": "SM1"}') == "SM1"
    assert message_sid("no id here") is None


def test_failure_texts_are_classified_like_the_seed() -> None:
    assert classify("Missing or invalid parameter callerId") == ("invalid_parameter", True)
    assert classify("Campaign x was not found") == ("campaign_not_found", True)
    assert classify("Token expired") == ("token_expired", True)
    assert classify("Your Telephony provider is not defined, please contact") == (
        "telephony_not_configured",
        False,
    )


def test_retry_after_parsing() -> None:
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480.0 - 60) == 60.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480.0 + 60) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_redactor_removes_plain_and_url_encoded_secrets() -> None:
    redact = Redactor(["p@ss word/1"])
    assert redact("password=p%40ss%20word%2F1 and p@ss word/1 and p%40ss+word%2F1") == (
        "password=[redacted] and [redacted] and [redacted]"
    )


def test_redactor_replaces_values_never_the_words_around_them() -> None:
    # a webhook header value (X-Team: support) is redacted as a value, not inside other words
    redact = Redactor(["support", "envi"])
    assert redact("unsupported header; team support; environment variable SMS_APP_KEY is not set") == (
        "unsupported header; team [redacted]; environment variable SMS_APP_KEY is not set"
    )
    assert redact("?team=support&x=%3Dsupport") == "?team=[redacted]&x=%3D[redacted]"


def test_webhook_signature_is_hmac_sha256_hex() -> None:
    # RFC 4231 test case 2
    assert signature("Jefe", b"what do ya want for nothing?") == (
        "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    )


def test_smartcomm_request_body_and_size() -> None:
    channel = build_channel("docs", "smartcomm", VALID["smartcomm"], environment=ENVIRONMENT, timeout=1)
    try:
        assert isinstance(channel, SmartCommChannel)
        body = channel.build_request({"data": {"a": 1}, "properties": [{"name": "merge.pdf", "value": True}]})
    finally:
        channel.close()
    assert b'"transactionData": "eyJhIjogMX0="' in body
    assert b'"properties": [{"name": "merge.pdf", "value": "True"}]' in body


# --- SMS params: the string form (issue 9 item 10) -------------------------------------


def test_sms_params_string_form_becomes_one_template_per_value() -> None:
    params, problems = normalise_notify_params(
        "uniphore-sms",
        {
            "campaign": "c",
            "params": "ticketNumber={{ args.ticket }}&greeting=Hi%20{{ args.name }}&op={{ a & b }}",
        },
    )

    assert problems == []
    assert params["params"] == {
        "ticketNumber": "{{ args.ticket }}",
        "greeting": "Hi {{ args.name }}",
        "op": "{{ a & b }}",
    }


@pytest.mark.parametrize("text", ["{{ args.all_params }}", "ticket", "{{ name }}=1", "a={{ b", "a=1&a=2"])
def test_sms_params_string_form_that_is_not_pairs_is_refused(text: str) -> None:
    _, [problem] = normalise_notify_params("uniphore-sms", {"params": text})

    assert "write params as a mapping instead" in problem


# --- e-mail recipients: one rendered value is one address (issue 9 item 7) --------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("ann@example.org", ["ann@example.org"]),
        ("Ann Lee <ann@example.org>", ["ann@example.org"]),
        (["ann@example.org", "Bob <bob@example.org>"], ["ann@example.org", "bob@example.org"]),
        (None, []),
    ],
)
def test_email_recipients(value: Any, expected: list[str]) -> None:
    assert addresses(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "victim@example.org, attacker@evil.test",
        "victim@example.org; attacker@evil.test",
        "victim@example.org\r\nBcc: attacker@evil.test",
        "victim@example.org\nattacker@evil.test",
        "x@example.org%0d%0aBcc:attacker@evil.test",
        "Bcc: attacker@evil.test",
        "<victim@example.org> <attacker@evil.test>",
        "undisclosed: attacker@evil.test;",
        "not an address",
        ["ok@example.org", "a@x.org, b@y.org"],
    ],
)
def test_email_recipients_that_are_not_one_address_are_final(value: Any) -> None:
    with pytest.raises(ChannelError) as info:
        addresses(value, "cc")
    assert info.value.final
    assert "notify parameter 'cc'" in str(info.value)
