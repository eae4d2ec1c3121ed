"""The SmartConnect channel against the loopback emulator (GetToken, validate, map runs)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
from lxml import etree

from provider.channels.base import Channel
from provider.channels.registry import build_channel
from provider.errors import ChannelError
from tests.emulators.base import Reply
from tests.emulators.smartconnect import SmartConnectEmulator, encoded_password

RUN = {"map_key": "SEND_NOTIFICATION", "variables": {"GBL_TICKET": "1042", "GBL_URGENT": "True"}}


def make_channel(
    emulator: SmartConnectEmulator, *, password: str | None = None, timeout: float = 5.0, **extra: Any
) -> Channel:
    settings = {
        "api_url": emulator.url,
        "customer_id": emulator.customer_id,
        "email": emulator.email,
        "password": "${SMARTCONNECT_PASSWORD}",
        **extra,
    }
    environment = {"SMARTCONNECT_PASSWORD": password if password is not None else emulator.password}
    return build_channel("erp", "smartconnect", settings, environment=environment, timeout=timeout)


@pytest.fixture
def channel(smartconnect_emulator: SmartConnectEmulator) -> Iterator[Channel]:
    ch = make_channel(smartconnect_emulator)
    yield ch
    ch.close()


def send_error(channel: Channel, params: dict[str, Any] | None = None) -> ChannelError:
    with pytest.raises(ChannelError) as info:
        channel.send(params if params is not None else RUN, delivery_key="d-1")
    return info.value


def test_runs_a_map_with_variables(channel: Channel, smartconnect_emulator: SmartConnectEmulator) -> None:
    result = channel.send(RUN, delivery_key="d-1")

    assert result.status == 200
    [run] = smartconnect_emulator.runs
    assert (run.map_key, run.kind, run.variables) == ("SEND_NOTIFICATION", "variables", RUN["variables"])
    token_request, run_request = smartconnect_emulator.received
    assert token_request.path == "/GetToken"
    assert token_request.query == {
        "email": smartconnect_emulator.email,
        "password": smartconnect_emulator.password,
        "companyID": smartconnect_emulator.customer_id,
    }
    assert run_request.path == "/RunMapWithVariables"
    assert run_request.query["mapKey"] == "SEND_NOTIFICATION"
    assert run_request.query["token"] in smartconnect_emulator.tokens
    assert run_request.json() == [
        {"Key": "GBL_TICKET", "Value": "1042"},
        {"Key": "GBL_URGENT", "Value": "True"},
    ]


def test_runs_a_map_with_xml(channel: Channel, smartconnect_emulator: SmartConnectEmulator) -> None:
    payload = "<DataSet><Table><accountnumber>C00070</accountnumber><name>A &amp; B</name></Table></DataSet>"

    channel.send({"map_key": "TICKET_SYNC", "xml": payload}, delivery_key="d-1")

    [run] = smartconnect_emulator.runs
    assert (run.kind, run.xml) == ("xml", payload)
    request = smartconnect_emulator.received[-1]
    assert request.path == "/runmapxml"
    assert request.query["mapkey"] == "TICKET_SYNC"
    root = etree.fromstring(request.body)
    assert root.tag == "RequestData"
    assert root.find("Variables") is not None
    assert b"&lt;DataSet&gt;" in request.body  # the payload is XML-encoded inside <Xml>


def test_token_is_cached(channel: Channel, smartconnect_emulator: SmartConnectEmulator) -> None:
    for _ in range(3):
        channel.send(RUN, delivery_key="d-1")

    assert smartconnect_emulator.token_requests == 1
    assert len(smartconnect_emulator.runs) == 3


def test_cached_token_is_revalidated_and_replaced_when_invalid(
    smartconnect_emulator: SmartConnectEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    channel = make_channel(smartconnect_emulator, revalidate_after=0.05)
    try:
        channel.send(RUN, delivery_key="d-1")
        time.sleep(0.1)
        channel.send(RUN, delivery_key="d-2")  # validated: still good
        smartconnect_emulator.expire_tokens()
        time.sleep(0.1)
        with caplog.at_level(logging.INFO):
            channel.send(RUN, delivery_key="d-3")  # validated: invalid, so a new one
    finally:
        channel.close()

    assert smartconnect_emulator.validations == 2
    assert smartconnect_emulator.token_requests == 2
    assert [r.status for r in smartconnect_emulator.requests_to("runmap")] == [200, 200, 200]
    assert "channel.token.invalid" in [getattr(r, "event", None) for r in caplog.records]


def test_run_refused_with_401_gets_a_new_token_once(
    channel: Channel, smartconnect_emulator: SmartConnectEmulator
) -> None:
    channel.send(RUN, delivery_key="d-1")
    smartconnect_emulator.expire_tokens()  # not re-validated yet (default 300 s)

    channel.send(RUN, delivery_key="d-2")

    assert smartconnect_emulator.token_requests == 2
    assert [r.status for r in smartconnect_emulator.requests_to("runmap")] == [200, 401, 200]


def test_wrong_password_is_final_and_never_shown(smartconnect_emulator: SmartConnectEmulator) -> None:
    channel = make_channel(smartconnect_emulator, password="wrong-password-99")
    try:
        error = send_error(channel)
    finally:
        channel.close()

    assert (error.status, error.final, error.partner_code) == (401, True, "token_refused")
    assert "wrong-password-99" not in str(error)
    assert smartconnect_emulator.runs == []


def test_encoded_password_option(smartconnect_emulator: SmartConnectEmulator) -> None:
    channel = make_channel(smartconnect_emulator, hash_password=True)
    try:
        channel.send(RUN, delivery_key="d-1")
    finally:
        channel.close()

    token_request = smartconnect_emulator.received[0]
    assert token_request.query["password"] == encoded_password(smartconnect_emulator.password)
    assert smartconnect_emulator.password not in token_request.text + str(token_request.query)


def test_map_that_did_not_run_is_final(channel: Channel, smartconnect_emulator: SmartConnectEmulator) -> None:
    smartconnect_emulator.failing_maps.add("SEND_NOTIFICATION")

    error = send_error(channel)

    assert (error.final, error.partner_code, error.status) == (True, "map_failed", 200)


def test_unknown_map_is_final(channel: Channel) -> None:
    error = send_error(channel, {"map_key": "NO_SUCH_MAP"})

    assert (error.status, error.final) == (404, True)


@pytest.mark.parametrize(
    ("status", "final", "pause"), [(500, False, False), (503, False, True), (429, False, True)]
)
def test_status_classes(
    channel: Channel, smartconnect_emulator: SmartConnectEmulator, status: int, final: bool, pause: bool
) -> None:
    smartconnect_emulator.script(status, path="RunMap", retry_after=30)

    error = send_error(channel)

    assert (error.status, error.final, error.pause_channel) == (status, final, pause)
    if pause:
        assert error.retry_after == 30.0


def test_token_never_appears_in_errors(channel: Channel, smartconnect_emulator: SmartConnectEmulator) -> None:
    channel.send(RUN, delivery_key="d-1")
    [token] = smartconnect_emulator.tokens
    smartconnect_emulator.script(Reply(500, f"Crash while running map for token={token}"), path="RunMap")

    error = send_error(channel)

    assert token not in str(error)
    assert "[redacted]" in str(error)


@pytest.mark.parametrize(
    "params",
    [
        {"variables": {"a": "1"}},
        {"map_key": "SEND_NOTIFICATION", "variables": "a=1"},
        {"map_key": "SEND_NOTIFICATION", "variables": {"a": 1}, "xml": "<a/>"},
    ],
)
def test_invalid_notify_parameters_are_final(
    channel: Channel, smartconnect_emulator: SmartConnectEmulator, params: dict[str, Any]
) -> None:
    error = send_error(channel, params)

    assert error.final
    assert smartconnect_emulator.runs == []


def test_partner_down_is_retryable(channel: Channel, smartconnect_emulator: SmartConnectEmulator) -> None:
    with smartconnect_emulator.down():
        error = send_error(channel)
    assert (error.final, error.partner_code) == (False, "connect")
