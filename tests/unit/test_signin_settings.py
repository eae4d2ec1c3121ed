"""The sign-in code settings and the rules-only method ``RequestSignInCode``."""

from __future__ import annotations

import pytest

from provider.cli import load_settings
from provider.comms.signin_checks import otp_problems
from provider.domain import Operation, RulesMethod
from provider.errors import ConfigError, RulesFileError
from provider.rules.loader import parse_rules
from provider.settings import OtpSettings

ON = {"ST_PROVIDER_OTP": "on", "ST_PROVIDER_OTP_CHANNEL_EMAIL": "otp-mail"}


def test_codes_are_off_by_default_with_documented_defaults() -> None:
    otp = load_settings({}).otp
    assert otp == OtpSettings()
    assert (otp.enabled, otp.length, otp.alphabet, otp.ttl_seconds) == (False, 6, "numeric", 300)
    assert (otp.template_email, otp.template_sms) == ("otp-email", "otp-sms")
    assert (otp.max_per_address, otp.max_per_client, otp.window_seconds) == (3, 20, 900)


def test_settings_are_read_and_validated() -> None:
    otp = load_settings(
        {
            **ON,
            "ST_PROVIDER_OTP_LENGTH": "8",
            "ST_PROVIDER_OTP_ALPHABET": "AlphaNumeric",
            "ST_PROVIDER_OTP_CHANNEL_SMS": "sms",
        }
    ).otp
    assert (otp.enabled, otp.length, otp.alphabet, otp.channel_sms) == (True, 8, "alphanumeric", "sms")
    with pytest.raises(ConfigError) as caught:
        load_settings(
            {
                **ON,
                "ST_PROVIDER_OTP_LENGTH": "5",
                "ST_PROVIDER_OTP_ALPHABET": "hex",
                "ST_PROVIDER_OTP_TTL_SECONDS": "0",
            }
        )
    message = str(caught.value)
    assert "ST_PROVIDER_OTP_LENGTH: must be 4, 6 or 8" in message
    assert "ST_PROVIDER_OTP_ALPHABET" in message and "ST_PROVIDER_OTP_TTL_SECONDS" in message


def test_codes_need_a_channel() -> None:
    with pytest.raises(ConfigError, match="ST_PROVIDER_OTP_CHANNEL_EMAIL nor ST_PROVIDER_OTP_CHANNEL_SMS"):
        load_settings({"ST_PROVIDER_OTP": "on"})


RULES = """\
channels:
  otp-mail: {type: email, host: smtp.example.org, from: portal@example.org, category: otp}
  hook: {type: webhook, url: "https://hooks.example.org/sms"}
templates:
  otp-email: {kind: webhook, body: {code: "{{ code }}", minutes: "{{ minutes }}"}}
  otp-sms: {kind: webhook, body: {text: "{{ code }} for {{ user.display_name }}"}}
rules:
  - name: partners
    method: RequestSignInCode
    when: "email.endswith('@partner.example.org')"
    then: {stop: true}
  - name: deny-some
    method: [RequestSignInCode, Authenticate]
    when: "username == 'x@example.org'"
    then: {allow: false}
"""


def test_rules_accept_the_rules_only_method_and_templates_may_use_code() -> None:
    rules_file = parse_rules(RULES)
    assert rules_file.rules[0].methods == frozenset({RulesMethod.REQUEST_SIGN_IN_CODE})
    assert rules_file.rules[1].method_names() == ["Authenticate", "RequestSignInCode"]


def test_a_star_rule_does_not_apply_to_sign_in_codes() -> None:
    text = "rules:\n  - {name: all, method: '*', then: {stop: true}}\n"
    assert RulesMethod.REQUEST_SIGN_IN_CODE not in parse_rules(text).rules[0].methods
    assert parse_rules(text).rules[0].methods == frozenset(Operation)


def test_sign_in_code_rules_can_only_deny_or_stop() -> None:
    text = "rules:\n  - {name: r, method: RequestSignInCode, then: {message: hi}}\n"
    with pytest.raises(RulesFileError, match="'message' is not valid for RequestSignInCode"):
        parse_rules(text)


def test_the_method_is_no_soap_operation() -> None:
    assert "RequestSignInCode" not in {op.value for op in Operation}


def test_otp_problems_name_what_is_missing_or_mismatched() -> None:
    rules_file = parse_rules(RULES)
    settings = load_settings({**ON, "ST_PROVIDER_OTP_CHANNEL_SMS": "hook"})
    assert otp_problems(settings, rules_file.channels, rules_file.templates) == [
        "ST_PROVIDER_OTP_TEMPLATE_EMAIL: template 'otp-email' is written for webhook, channel 'otp-mail' is email",
        "ST_PROVIDER_OTP_CHANNEL_SMS: channel 'hook' is not 'category: otp', so opt-outs may stop sign-in codes",
    ]
    missing = load_settings({**ON, "ST_PROVIDER_OTP_CHANNEL_EMAIL": "nope"})
    assert otp_problems(missing, rules_file.channels, rules_file.templates) == [
        "ST_PROVIDER_OTP_CHANNEL_EMAIL: no channel named 'nope'"
    ]
    assert otp_problems(load_settings({}), rules_file.channels, rules_file.templates) == []
