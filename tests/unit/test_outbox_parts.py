"""Pure parts of the outbox and worker: recipients and the redaction of stored errors."""

from __future__ import annotations

from provider.events.outbox import recipient_of
from provider.redact import MAX_ERROR_CHARS, REDACTED, redact, secret_values


def test_recipient_from_common_params() -> None:
    assert recipient_of({"to": "+15550100", "campaign": "x"}) == "+15550100"
    assert recipient_of({"to": ["a@example.org", "b@example.org"]}) == "a@example.org, b@example.org"
    assert recipient_of({"callerId": "+15550101"}) == "+15550101"
    assert recipient_of({"to": "", "email": "c@example.org"}) == "c@example.org"
    assert recipient_of({"data": {"to": "nested"}}) is None


def test_recipient_is_bounded() -> None:
    assert len(recipient_of({"to": "x" * 1000}) or "") == 320


def test_secret_values_come_from_referenced_environment_only() -> None:
    settings = {
        "url": "https://${HOST}/hook",
        "client_secret": "${SC_SECRET}",
        "headers": {"Authorization": "Bearer ${TOKEN}"},
        "list": ["${IN_LIST}"],
        "short": "${SHORT}",
    }
    env = {
        "HOST": "hooks.example.org",
        "SC_SECRET": "s3cr3t-value",
        "TOKEN": "tok-123456",
        "IN_LIST": "listed-secret",
        "SHORT": "ab",
        "UNUSED": "never-referenced",
    }
    assert secret_values(settings, env) == {
        "hooks.example.org",
        "s3cr3t-value",
        "tok-123456",
        "listed-secret",
    }


def test_redact_removes_known_secrets_and_secret_looking_pairs() -> None:
    text = (
        "401 from https://api.example.org?client_secret=abc123&x=1 with s3cr3t-value; "
        'Authorization: Bearer eyJhbGciOi.xyz password=hunter2 {"access_token": "zzz"}'
    )
    cleaned = redact(text, {"s3cr3t-value"}) or ""
    for secret in ("s3cr3t-value", "abc123", "eyJhbGciOi", "hunter2", "zzz"):
        assert secret not in cleaned
    assert REDACTED in cleaned
    assert "x=1" in cleaned


def test_redact_bounds_length_and_keeps_none() -> None:
    assert redact(None) is None
    assert len(redact("e" * 5000) or "") == MAX_ERROR_CHARS
