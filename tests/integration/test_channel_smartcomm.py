"""The SmartCOMM DocGen channel against the loopback emulator (OAuth2 + generateDocument)."""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest

from provider.channels.base import Channel
from provider.channels.impl.smartcomm import GENERATE_PATH, MAX_REQUEST_BYTES
from provider.channels.registry import build_channel
from provider.channels.specs import SPECS
from provider.errors import ChannelError
from tests.emulators.base import Reply
from tests.emulators.smartcomm import TOKEN_PATH, SmartCommEmulator

DATA = {"Customer": {"name": "Ann Lee", "ticket": 1042}}


def make_channel(
    emulator: SmartCommEmulator, *, secret: str | None = None, timeout: float = 5.0, **extra: Any
) -> Channel:
    settings = {
        "base_url": emulator.url,
        "token_url": emulator.token_url,
        "client_id": emulator.client_id,
        "client_secret": "${SMARTCOMM_SECRET}",
        "batch_config_res_id": 5001,
        **extra,
    }
    environment = {"SMARTCOMM_SECRET": secret if secret is not None else emulator.client_secret}
    return build_channel("docs", "smartcomm", settings, environment=environment, timeout=timeout)


@pytest.fixture
def channel(smartcomm_emulator: SmartCommEmulator) -> Iterator[Channel]:
    ch = make_channel(smartcomm_emulator)
    yield ch
    ch.close()


def send_error(channel: Channel, params: dict[str, Any] | None = None) -> ChannelError:
    with pytest.raises(ChannelError) as info:
        channel.send(params if params is not None else {"data": DATA}, delivery_key="d-1")
    return info.value


def generate_requests(emulator: SmartCommEmulator) -> list[Any]:
    return emulator.requests_to(GENERATE_PATH)


def test_generates_documents_and_returns_them(
    channel: Channel, smartcomm_emulator: SmartCommEmulator
) -> None:
    result = channel.send(
        {"data": DATA, "project_id": "77", "properties": {"merge.pdf": "true"}}, delivery_key="d-1"
    )

    assert result.status == 200
    [document] = result.documents["documents"]
    assert document["role"] == "primary"
    assert document["mimeType"] == "text/plain"
    assert base64.b64decode(document["data"]).startswith(b"Document 1 of batch 5001")
    assert result.documents["numberTransactions"] == 1
    [request] = generate_requests(smartcomm_emulator)
    body = request.json()
    assert request.headers["authorization"].startswith("Bearer ")
    assert body["includeDocumentData"] is True
    assert body["batchConfigResId"] == 5001
    assert body["projectId"] == 77
    assert body["transactionDataType"] == "application/json"
    assert json.loads(base64.b64decode(body["transactionData"])) == DATA
    assert body["properties"] == [{"name": "merge.pdf", "value": "true"}]


def test_token_is_fetched_once_and_cached(channel: Channel, smartcomm_emulator: SmartCommEmulator) -> None:
    for _ in range(3):
        channel.send({"data": DATA}, delivery_key="d-1")

    assert smartcomm_emulator.token_requests == 1
    [token_request] = smartcomm_emulator.requests_to(TOKEN_PATH)
    assert token_request.text == "grant_type=client_credentials"
    assert token_request.headers["authorization"].startswith("Basic ")


def test_client_credentials_can_travel_in_the_form(smartcomm_emulator: SmartCommEmulator) -> None:
    channel = make_channel(smartcomm_emulator, client_auth="body")
    try:
        channel.send({"data": DATA}, delivery_key="d-1")
    finally:
        channel.close()

    [token_request] = smartcomm_emulator.requests_to(TOKEN_PATH)
    assert "client_secret=smartcomm-client-secret" in token_request.text
    assert "authorization" not in token_request.headers


def test_token_is_renewed_shortly_before_it_expires(smartcomm_emulator: SmartCommEmulator) -> None:
    smartcomm_emulator.token_ttl = 1
    channel = make_channel(smartcomm_emulator)
    try:
        channel.send({"data": DATA}, delivery_key="d-1")
        time.sleep(1.0)
        channel.send({"data": DATA}, delivery_key="d-2")
    finally:
        channel.close()

    assert smartcomm_emulator.token_requests == 2
    assert [r.status for r in generate_requests(smartcomm_emulator)] == [200, 200]  # never a 401


def test_revoked_token_is_refreshed_once_on_401(
    channel: Channel, smartcomm_emulator: SmartCommEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    channel.send({"data": DATA}, delivery_key="d-1")
    smartcomm_emulator.expire_tokens()

    with caplog.at_level(logging.INFO):
        result = channel.send({"data": DATA}, delivery_key="d-2")

    assert result.documents["documents"]
    assert smartcomm_emulator.token_requests == 2
    assert [r.status for r in generate_requests(smartcomm_emulator)] == [200, 401, 200]
    assert "channel.token.refresh" in [getattr(r, "event", None) for r in caplog.records]
    tokens = {r.headers["authorization"] for r in generate_requests(smartcomm_emulator)}
    assert all(token[7:] not in r.getMessage() for r in caplog.records for token in tokens)


def test_a_second_401_with_a_fresh_token_is_final(
    channel: Channel, smartcomm_emulator: SmartCommEmulator
) -> None:
    smartcomm_emulator.script(401, 401, path=GENERATE_PATH)

    error = send_error(channel)

    assert (error.status, error.final, error.partner_code) == (401, True, "unauthorized")
    assert smartcomm_emulator.token_requests == 2
    assert len(generate_requests(smartcomm_emulator)) == 2


def test_wrong_client_secret_is_final_and_never_shown(smartcomm_emulator: SmartCommEmulator) -> None:
    channel = make_channel(smartcomm_emulator, secret="not-the-client-secret")
    try:
        error = send_error(channel)
    finally:
        channel.close()

    assert (error.status, error.final, error.partner_code) == (401, True, "invalid_client")
    assert "not-the-client-secret" not in str(error)
    assert generate_requests(smartcomm_emulator) == []


def test_403_keeps_smartcomm_id_and_msg(channel: Channel, smartcomm_emulator: SmartCommEmulator) -> None:
    smartcomm_emulator.batch_config_ids = {1}

    error = send_error(channel)

    assert (error.status, error.final, error.partner_code) == (403, True, "2001")
    assert "Resource 5001 is not a Template Selector" in str(error)


def test_invalid_transaction_data_is_a_403_from_smartcomm(channel: Channel) -> None:
    error = send_error(channel, {"data": "{not json", "data_type": "json"})

    assert (error.status, error.final, error.partner_code) == (403, True, "3002")


@pytest.mark.parametrize(
    ("status", "final", "pause", "retry_after"),
    [
        (500, False, False, None),
        (502, False, False, None),
        (504, False, False, None),
        (429, False, True, 60.0),
        (503, False, True, 120.0),
        (400, True, False, None),
        (404, True, False, None),
        (413, True, False, None),
        (422, True, False, None),
    ],
)
def test_status_classes(
    channel: Channel,
    smartcomm_emulator: SmartCommEmulator,
    status: int,
    final: bool,
    pause: bool,
    retry_after: float | None,
) -> None:
    smartcomm_emulator.script(status, path=GENERATE_PATH)

    error = send_error(channel)

    assert (error.status, error.final, error.pause_channel, error.retry_after) == (
        status,
        final,
        pause,
        retry_after,
    )


def test_retry_after_from_the_partner_is_reported(
    channel: Channel, smartcomm_emulator: SmartCommEmulator
) -> None:
    smartcomm_emulator.script(Reply(503, {"error": "maintenance"}, {"Retry-After": "3600"}))

    error = send_error(channel)

    assert (error.pause_channel, error.retry_after) == (True, 3600.0)


def test_rate_limit_of_the_partner_pauses(channel: Channel, smartcomm_emulator: SmartCommEmulator) -> None:
    smartcomm_emulator.rate_limit = (2, 60.0)
    channel.send({"data": DATA}, delivery_key="d-1")
    channel.send({"data": DATA}, delivery_key="d-2")

    error = send_error(channel)

    assert (error.status, error.pause_channel, error.retry_after) == (429, True, 60.0)


def test_maintenance_on_the_token_endpoint_pauses(
    channel: Channel, smartcomm_emulator: SmartCommEmulator
) -> None:
    smartcomm_emulator.script(503, path=TOKEN_PATH)

    error = send_error(channel)

    assert (error.status, error.pause_channel, error.final) == (503, True, False)


def test_requests_over_10_mb_are_refused_before_sending(
    channel: Channel, smartcomm_emulator: SmartCommEmulator
) -> None:
    big = "x" * (MAX_REQUEST_BYTES * 3 // 4 + 1024)  # base64 makes it larger than 10 MB

    error = send_error(channel, {"data": {"blob": big}})

    assert error.final
    assert error.partner_code == "request_too_large"
    assert error.status is None
    assert smartcomm_emulator.received == []


def test_xml_data_is_serialised_as_xml(channel: Channel, smartcomm_emulator: SmartCommEmulator) -> None:
    channel.send(
        {"data": {"Ticket": {"id": 7, "tags": ["a", "b"], "urgent": True}}, "data_type": "xml"},
        delivery_key="d",
    )

    [job] = smartcomm_emulator.jobs
    assert job.data_type == "application/xml"
    assert job.data.endswith(b"<Ticket><id>7</id><tags>a</tags><tags>b</tags><urgent>true</urgent></Ticket>")


def test_template_string_data_is_sent_as_is(channel: Channel, smartcomm_emulator: SmartCommEmulator) -> None:
    xml = "<Letter><To>Ann</To></Letter>"
    channel.send({"data": xml}, delivery_key="d")

    [job] = smartcomm_emulator.jobs
    assert (job.data, job.data_type) == (xml.encode(), "application/xml")


def test_several_transactions_give_several_documents(channel: Channel) -> None:
    result = channel.send({"data": [{"n": 1}, {"n": 2}, {"n": 3}], "transaction_range": 1}, delivery_key="d")

    assert [d["envelope"] for d in result.documents["documents"]] == [0, 1, 2]


def test_parameters_override_channel_defaults(
    channel: Channel, smartcomm_emulator: SmartCommEmulator
) -> None:
    channel.send(
        {"data": DATA, "batch_config_res_id": "42", "include_document_data": "false"}, delivery_key="d"
    )

    [job] = smartcomm_emulator.jobs
    assert (job.batch_config_res_id, job.include_document_data) == (42, False)


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"data": DATA, "batch_config_res_id": "not-a-number"},
        {"data": DATA, "data_type": "yaml"},
        {"data": DATA, "properties": "merge=true"},
    ],
)
def test_invalid_notify_parameters_are_final_and_nothing_is_sent(
    channel: Channel, smartcomm_emulator: SmartCommEmulator, params: dict[str, Any]
) -> None:
    error = send_error(channel, params)

    assert error.final
    assert smartcomm_emulator.received == []


def test_missing_batch_config_res_id_is_final(smartcomm_emulator: SmartCommEmulator) -> None:
    channel = make_channel(smartcomm_emulator, batch_config_res_id=None)
    try:
        error = send_error(channel)
    finally:
        channel.close()
    assert error.final
    assert "batch_config_res_id" in str(error)


def test_slow_partner_times_out_as_retryable(smartcomm_emulator: SmartCommEmulator) -> None:
    channel = make_channel(smartcomm_emulator, timeout=0.3)
    try:
        channel.send({"data": DATA}, delivery_key="d-1")  # token cached while fast
        smartcomm_emulator.delay = 2.0
        error = send_error(channel)
    finally:
        channel.close()
    assert (error.final, error.partner_code) == (False, "timeout")


def test_documented_defaults_are_published_for_the_worker() -> None:
    defaults = SPECS["smartcomm"]

    assert defaults.rate_limit == (100, 60.0)
    assert dict(defaults.retry_waits) == {500: 5.0, 429: 60.0, 503: 120.0}
