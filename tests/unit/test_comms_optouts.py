"""E.164 and e-mail normalisation, the channel ``category`` setting, summary counting."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from provider.channels.policy import channel_policy, policy_problems
from provider.channels.specs import SPECS
from provider.channels.validation import check_settings
from provider.comms.addresses import InvalidAddress, normalise, normalise_email, normalise_phone
from provider.comms.optouts import applies, lookup_key, scope_of
from provider.errors import ProviderError, RulesFileError
from provider.events.summary import count
from provider.rules.loader import parse_rules


@pytest.mark.parametrize(
    ("written", "e164"),
    [
        ("+1 (415) 555-0123", "+14155550123"),
        ("+44 20 7946 0018", "+442079460018"),
        ("0044 20-7946-0018", "+442079460018"),
        (" +91.98765.43210 ", "+919876543210"),
        ("\uff0b\uff11 \uff14\uff11\uff15 5550123", "+14155550123"),  # full-width + and digits (NFKC)
        ("+123456789012345", "+123456789012345"),  # 15 digits: the E.164 maximum
    ],
)
def test_phone_numbers_become_e164(written: str, e164: str) -> None:
    assert normalise_phone(written) == e164


@pytest.mark.parametrize(
    "written",
    [
        "415 555 0123",  # no country code: never guessed
        "020 7946 0018",
        "+0 415 555 0123",  # a country code never starts with 0
        "+1234567",  # too short
        "+1234567890123456",  # 16 digits
        "+1 415 555 O123",  # a letter O
        "+1 415 555 0123 ext 4",
        "++14155550123",
        "+\u0661\u0664\u0661\u0665\u0665\u0665\u0665\u0660\u0661\u0662\u0663",  # Arabic-Indic digits
        "",
    ],
)
def test_invalid_phone_numbers_are_refused(written: str) -> None:
    with pytest.raises(InvalidAddress):
        normalise_phone(written)


def test_email_addresses_are_trimmed_and_lower_cased() -> None:
    assert normalise_email("  Ann.Lee@Example.ORG ") == "ann.lee@example.org"
    assert normalise("Bob@Example.com") == "bob@example.com"
    assert normalise("+1 415 555 0123") == "+14155550123"
    for bad in ("ann", "ann@", "@example.org", "ann@localhost", "a b@example.org", "a@b@example.org"):
        with pytest.raises(InvalidAddress):
            normalise_email(bad)


def test_recipients_written_for_uniphore_without_plus_still_match() -> None:
    assert lookup_key("14155550123", "sms") == "+14155550123"
    assert lookup_key("04155550123", "sms") is None  # a national number: cannot be matched
    assert lookup_key("ANN@example.org", "email") == "ann@example.org"


def test_scopes() -> None:
    assert scope_of(None, None) == "all"
    assert scope_of("sms", None) == "kind:sms"
    assert scope_of(None, 7) == "event:7"
    with pytest.raises(ProviderError):
        scope_of("sms", 7)
    with pytest.raises(ProviderError):
        scope_of("fax", None)


def test_category_is_a_validated_channel_setting() -> None:
    assert channel_policy("email", {}).category == "transactional"
    assert channel_policy("email", {"category": "OTP"}).category == "otp"
    assert channel_policy("uniphore-sms", {"category": "promotional"}).category == "promotional"
    assert policy_problems({"category": "marketing"}) == [
        "setting 'category': must be one of transactional, otp, promotional"
    ]
    settings = {"host": "mail", "from": "hd@example.org", "category": "otp"}
    assert check_settings(SPECS["email"], settings) == []
    assert check_settings(SPECS["email"], {**settings, "category": 1}) != []


def test_which_channels_the_list_applies_to() -> None:
    assert applies("uniphore-sms", "transactional")
    assert applies("email", "promotional")
    assert not applies("email", "otp")
    for other in ("webhook", "smartcomm", "smartconnect", "unknown"):
        assert not applies(other, "transactional")


def test_summary_counts_and_failure_rates() -> None:
    late = datetime(2024, 5, 1, 23, 59, tzinfo=UTC)
    early = datetime(2024, 5, 2, 0, 1, tzinfo=UTC)
    rows = [
        ("sms", "delivered", late, "otp-sms"),
        ("sms", "failed", late, "otp-sms"),
        ("sms", "failed", early, None),
        ("sms", "suppressed", early, None),
        ("mail", "pending", early, None),
        ("mail", "sending", early, None),
    ]
    by_channel = count(rows, "channel")
    assert [(r.group, r.total, r.failed, r.suppressed, r.pending, r.failure_rate) for r in by_channel] == [
        ("mail", 2, 0, 0, 2, None),
        ("sms", 4, 2, 1, 0, 0.6667),
    ]
    assert [(r.group, r.total) for r in count(rows, "day")] == [("2024-05-01", 2), ("2024-05-02", 4)]
    assert [r.group for r in count(rows, "status")] == [
        "delivered",
        "failed",
        "pending",
        "sending",
        "suppressed",
    ]
    assert [(r.group, r.total, r.failure_rate) for r in count(rows, "template")] == [
        ("(none)", 4, 1.0),
        ("otp-sms", 2, 0.5),
    ]
    with pytest.raises(ProviderError):
        count(rows, "week")


def test_a_rules_file_with_an_unknown_category_is_refused_at_its_channel() -> None:
    source = "channels:\n  mail:\n    type: email\n    host: mail\n    from: hd@example.org\n    category: %s\nrules: []\n"
    with pytest.raises(RulesFileError) as caught:
        parse_rules(source % "marketing")
    assert [(p.line, "'category'" in p.message) for p in caught.value.problems] == [(2, True)]
    [channel] = parse_rules(source % "otp").channels
    assert channel.settings["category"] == "otp"
