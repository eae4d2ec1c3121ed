"""The webhook channel against a loopback receiver that verifies HMAC-SHA256 signatures."""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from provider.channels.base import Channel
from provider.channels.registry import build_channel
from provider.errors import ChannelError
from tests.emulators.base import Reply
from tests.emulators.tls import TlsFiles
from tests.emulators.webhook import WebhookReceiver

SECRET = "webhook-secret"
EVENT = {"body": {"event": "Ticket Created", "ticket": {"number": "ABC-1042", "subject": "Prïnter on fire"}}}


def make_channel(url: str, *, secret: str | None = SECRET, timeout: float = 5.0, **extra: Any) -> Channel:
    settings: dict[str, Any] = {"url": url, **extra}
    environment = {"HOOK_TOKEN": "hook-bearer-token-123"}
    if secret is not None:
        settings["secret"] = "${WEBHOOK_SECRET}"
        environment["WEBHOOK_SECRET"] = secret
    return build_channel("hook", "webhook", settings, environment=environment, timeout=timeout)


@pytest.fixture
def channel(webhook_receiver: WebhookReceiver) -> Iterator[Channel]:
    ch = make_channel(webhook_receiver.url + "/events")
    yield ch
    ch.close()


def send_error(channel: Channel, params: dict[str, Any] | None = None) -> ChannelError:
    with pytest.raises(ChannelError) as info:
        channel.send(params if params is not None else EVENT, delivery_key="d-1")
    return info.value


def test_posts_the_json_body_signed(channel: Channel, webhook_receiver: WebhookReceiver) -> None:
    result = channel.send(EVENT, delivery_key="delivery-17")

    assert result.status == 200
    [request] = webhook_receiver.accepted
    assert request.path == "/events"
    assert request.json() == EVENT["body"]
    assert request.headers["content-type"] == "application/json"
    assert request.headers["idempotency-key"] == "delivery-17"
    expected = hmac.new(SECRET.encode(), request.body, hashlib.sha256).hexdigest()
    assert request.headers["x-signature-256"] == f"sha256={expected}"


def test_without_body_every_parameter_but_headers_is_the_body(
    channel: Channel, webhook_receiver: WebhookReceiver
) -> None:
    channel.send({"text": "Ticket ABC-1042 created", "headers": {"X-Extra": "1"}}, delivery_key="d")

    [request] = webhook_receiver.accepted
    assert request.json() == {"text": "Ticket ABC-1042 created"}
    assert request.headers["x-extra"] == "1"


def test_configured_headers_are_sent_with_secrets_from_the_environment(
    webhook_receiver: WebhookReceiver,
) -> None:
    channel = make_channel(
        webhook_receiver.url,
        headers={"Authorization": "Bearer ${HOOK_TOKEN}", "X-Team": "support"},
        signature_header="X-Hub-Signature-256",
    )
    webhook_receiver.signature_header = "X-Hub-Signature-256"
    try:
        channel.send(EVENT, delivery_key="d")
    finally:
        channel.close()

    [request] = webhook_receiver.accepted
    assert request.headers["authorization"] == "Bearer hook-bearer-token-123"
    assert request.headers["x-team"] == "support"
    assert "x-signature-256" not in request.headers


def test_wrong_secret_is_refused_by_the_receiver_and_final(webhook_receiver: WebhookReceiver) -> None:
    channel = make_channel(webhook_receiver.url, secret="some-other-secret")
    try:
        error = send_error(channel)
    finally:
        channel.close()

    assert (error.status, error.final) == (401, True)
    assert "some-other-secret" not in str(error)
    assert webhook_receiver.accepted == []


def test_unsigned_when_no_secret(webhook_receiver: WebhookReceiver) -> None:
    webhook_receiver.secret = None
    channel = make_channel(webhook_receiver.url, secret=None)
    try:
        channel.send(EVENT, delivery_key="d")
    finally:
        channel.close()

    [request] = webhook_receiver.accepted
    assert "x-signature-256" not in request.headers


def test_credentials_in_the_url_are_sent_as_basic_auth(webhook_receiver: WebhookReceiver) -> None:
    host = webhook_receiver.url.split("://", 1)[1]
    channel = make_channel(f"http://hook%20user:p%40ss@{host}/events")
    try:
        channel.send(EVENT, delivery_key="d")
    finally:
        channel.close()

    [request] = webhook_receiver.accepted
    expected = base64.b64encode(b"hook user:p@ss").decode("ascii")
    assert request.headers["authorization"] == f"Basic {expected}"


def test_signature_covers_the_exact_bytes(channel: Channel, webhook_receiver: WebhookReceiver) -> None:
    channel.send(EVENT, delivery_key="d")
    [request] = webhook_receiver.accepted

    assert webhook_receiver.verify(request)
    tampered = type(request)(**{**vars(request), "body": request.body.replace(b"1042", b"1043")})
    assert not webhook_receiver.verify(tampered)
    assert "Prïnter".encode() in request.body  # UTF-8, not \\u escapes


@pytest.mark.parametrize(
    ("status", "final", "pause"),
    [
        (301, True, False),
        (400, True, False),
        (403, True, False),
        (404, True, False),
        (410, True, False),
        (413, True, False),
        (422, True, False),
        (408, False, False),
        (429, False, True),
        (500, False, False),
        (502, False, False),
        (503, False, True),
        (504, False, False),
    ],
)
def test_status_classes(
    channel: Channel, webhook_receiver: WebhookReceiver, status: int, final: bool, pause: bool
) -> None:
    webhook_receiver.script(status, retry_after=9)

    error = send_error(channel)

    assert (error.status, error.final, error.pause_channel) == (status, final, pause)
    assert error.retry_after == (9.0 if status in (429, 503) else None)


def test_retry_after_as_an_http_date(channel: Channel, webhook_receiver: WebhookReceiver) -> None:
    when = email.utils.formatdate(time.time() + 120, usegmt=True)
    webhook_receiver.script(Reply(503, "maintenance", {"Retry-After": when}))

    error = send_error(channel)

    assert error.retry_after is not None
    assert 100 <= error.retry_after <= 121


def test_dropped_connection_is_retryable(channel: Channel, webhook_receiver: WebhookReceiver) -> None:
    webhook_receiver.script(Reply(drop=True))

    error = send_error(channel)

    assert not error.final
    assert error.status is None


def test_receiver_down_then_back(channel: Channel, webhook_receiver: WebhookReceiver) -> None:
    with webhook_receiver.down():
        assert not send_error(channel).final
    channel.send(EVENT, delivery_key="d-1")
    assert len(webhook_receiver.accepted) == 1


def test_any_2xx_is_success(channel: Channel, webhook_receiver: WebhookReceiver) -> None:
    webhook_receiver.status = 202

    assert channel.send(EVENT, delivery_key="d").status == 202


def test_partner_text_echoing_a_secret_is_redacted(webhook_receiver: WebhookReceiver) -> None:
    channel = make_channel(webhook_receiver.url, headers={"Authorization": "Bearer ${HOOK_TOKEN}"})
    webhook_receiver.script(Reply(400, "bad header Authorization: Bearer hook-bearer-token-123"))
    try:
        error = send_error(channel)
    finally:
        channel.close()

    assert "hook-bearer-token-123" not in str(error)
    assert error.final


def test_body_that_is_not_json_serialisable_is_final(
    channel: Channel, webhook_receiver: WebhookReceiver
) -> None:
    error = send_error(channel, {"body": {1j: "a key JSON cannot hold"}})

    assert error.final
    assert webhook_receiver.received == []


def test_tls_is_verified(tls_files: TlsFiles) -> None:
    with WebhookReceiver(tls=tls_files.server_context()) as receiver:
        assert receiver.url.startswith("https://")
        untrusting = make_channel(receiver.url, secret=None)
        trusting = make_channel(receiver.url, secret=None, ca_file=str(tls_files.ca_file))
        try:
            error = send_error(untrusting)
            result = trusting.send(EVENT, delivery_key="d")
        finally:
            untrusting.close()
            trusting.close()

    assert (error.final, error.partner_code) == (True, "tls")
    assert result.status == 200
    assert json.loads(receiver.accepted[0].body) == EVENT["body"]


@pytest.mark.parametrize("headers", [{"X-Line": "a\nb"}, {"X-Name": "Prïnter"}, {"Bad Name": "1"}])
def test_headers_that_cannot_be_sent_are_final(
    channel: Channel, webhook_receiver: WebhookReceiver, headers: dict[str, str]
) -> None:
    error = send_error(channel, {**EVENT, "headers": headers})

    assert (error.final, error.partner_code) == (True, "invalid_request")
    assert webhook_receiver.received == []


def test_scripted_status_sequence_then_normal_answers(
    channel: Channel, webhook_receiver: WebhookReceiver
) -> None:
    webhook_receiver.script([429, 500, 200], retry_after=1)

    outcomes = []
    for _ in range(4):
        try:
            outcomes.append(channel.send(EVENT, delivery_key="d").status)
        except ChannelError as exc:
            outcomes.append(exc.status)

    assert outcomes == [429, 500, 200, 200]
    assert [r.status for r in webhook_receiver.received] == [429, 500, 200, 200]
    assert webhook_receiver.received[0].headers.get("idempotency-key") == "d"
