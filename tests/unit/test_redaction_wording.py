"""Redaction replaces values, never the words around them (issue 9 item 16).

One redaction module (:mod:`provider.redact`) serves partner texts in the channels, stored
delivery errors and log fields; each use must keep the wording of a message that holds no secret.
"""

from __future__ import annotations

import json
import logging

from provider.logging import JsonFormatter, TextFormatter
from provider.redact import REDACTED, Redactor, redact

#: what the worker records when a channel cannot be built for want of a variable
MISSING = (
    "channel 'sms': channel 'sms' setting 'application_key': environment variable SMS_APP_KEY is not set"
)


def test_stored_errors_keep_the_words_after_a_quoted_setting_name() -> None:
    assert redact(MISSING) == MISSING
    for name in ("password", "client_secret", "token"):
        text = f"channel 'c' setting {name!r}: environment variable X is not set"
        assert redact(text) == text


def test_stored_errors_still_redact_values_of_secret_names() -> None:
    text = "db_password=hunter2 {'token': 'abc'} \"client_secret\":\"s3\" Authorization: Bearer eyJx.y"
    assert redact(text) == (
        f"db_password={REDACTED} {{'token': '{REDACTED}'}} \"client_secret\":\"{REDACTED}\" "
        f"Authorization: Bearer {REDACTED}"
    )


def test_stored_errors_replace_known_secrets_only_as_whole_values() -> None:
    assert redact("unsupported: support", {"support"}) == f"unsupported: {REDACTED}"
    assert redact("key=abcd1234&k%3Dabcd1234", {"abcd1234"}) == f"key={REDACTED}&k%3D{REDACTED}"


def test_channel_redactor_keeps_words() -> None:
    redact_partner = Redactor(["environment", "key"])
    assert redact_partner("the environments keyring") == "the environments keyring"
    assert redact_partner("env=environment; key") == f"env={REDACTED}; {REDACTED}"


def _record(**extra: object) -> logging.LogRecord:
    record = logging.makeLogRecord({"msg": "channel cannot be built", "levelname": "ERROR", "name": "w"})
    record.__dict__.update(extra)
    return record


def test_log_fields_keep_the_message_wording() -> None:
    record = _record(event="worker.channel_unavailable", error=MISSING, password="hunter2")

    payload = json.loads(JsonFormatter().format(record))
    text = TextFormatter().format(record)

    assert payload["error"] == MISSING
    assert payload["password"] == REDACTED
    assert repr(MISSING) in text and "hunter2" not in text
