"""The Uniphore Send SMS channel (REST and SOAP) against the loopback emulator of the seed's API."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from lxml import etree

from provider.channels.base import Channel
from provider.channels.registry import build_channel
from provider.errors import ChannelError
from tests.emulators.base import Reply
from tests.emulators.uniphore import NS, TELEPHONY, UniphoreEmulator, soap_failure
from tests.support import free_port

KEY_VAR = "SMS_APP_KEY"
SMS = {"campaign": "campaign1", "to": "+972 54 4696388", "jp_token": "Aejhib7", "from": "+12121234567"}


def make_channel(
    emulator: UniphoreEmulator, *, key: str | None = None, timeout: float = 5.0, **extra: Any
) -> Channel:
    settings = {
        "base_url": emulator.url,
        "account_id": emulator.account_id,
        "application_key": "${SMS_APP_KEY}",
        "environment": emulator.environment,
        **extra,
    }
    environment = {KEY_VAR: key if key is not None else emulator.application_key}
    return build_channel("sms", "uniphore-sms", settings, environment=environment, timeout=timeout)


@pytest.fixture(params=["rest", "soap"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def channel(uniphore_emulator: UniphoreEmulator, transport: str) -> Iterator[Channel]:
    ch = make_channel(uniphore_emulator, transport=transport)
    yield ch
    ch.close()


def send_error(channel: Channel, params: dict[str, Any] | None = None) -> ChannelError:
    with pytest.raises(ChannelError) as info:
        channel.send(params if params is not None else SMS, delivery_key="d-1")
    return info.value


# --- both transports ------------------------------------------------------------------


def test_sends_an_sms_and_returns_its_message_sid(
    channel: Channel, uniphore_emulator: UniphoreEmulator, transport: str
) -> None:
    result = channel.send({**SMS, "params": {"ticket": "42", "name": "A B"}}, delivery_key="d-1")

    [sms] = uniphore_emulator.messages
    assert result.partner_id == sms.message_sid
    assert result.partner_id.startswith("SM")
    assert result.status == 200
    assert (sms.transport, sms.campaign, sms.caller_id) == (transport, "campaign1", "+972 54 4696388")
    assert (sms.sender, sms.jp_token, sms.additional_params) == (
        "+12121234567",
        "Aejhib7",
        "ticket=42&name=A+B",
    )
    [request] = uniphore_emulator.received
    assert request.headers["tenant-id"] == uniphore_emulator.account_id
    assert request.headers["application-key"] == uniphore_emulator.application_key
    assert request.headers["environment-name"] == "production"


def test_unknown_campaign_is_final(
    channel: Channel, uniphore_emulator: UniphoreEmulator, transport: str
) -> None:
    error = send_error(channel, {**SMS, "campaign": "no-such-campaign"})

    assert error.final
    assert error.partner_code == "campaign_not_found"
    assert error.status == (404 if transport == "rest" else 200)
    assert "no-such-campaign" in str(error)
    assert uniphore_emulator.messages == []


def test_unconfigured_telephony_provider_is_retryable(
    channel: Channel, uniphore_emulator: UniphoreEmulator, transport: str
) -> None:
    uniphore_emulator.telephony_configured = False

    error = send_error(channel)

    assert not error.final
    assert not error.pause_channel
    assert error.partner_code == "telephony_not_configured"
    assert error.status == (500 if transport == "rest" else 200)


def test_wrong_application_key_is_final_and_never_shown(
    uniphore_emulator: UniphoreEmulator, transport: str
) -> None:
    wrong = "wrong-application-key-123"
    channel = make_channel(uniphore_emulator, key=wrong, transport=transport)
    try:
        error = send_error(channel)
    finally:
        channel.close()

    assert error.final
    assert error.partner_code == "0x7000000"
    assert wrong not in str(error)
    assert uniphore_emulator.messages == []


@pytest.mark.parametrize(("status", "pause"), [(429, True), (503, True)])
def test_throttling_and_maintenance_pause_the_channel(
    channel: Channel, uniphore_emulator: UniphoreEmulator, status: int, pause: bool
) -> None:
    uniphore_emulator.script(status, retry_after=42)

    error = send_error(channel)

    assert (error.status, error.final, error.pause_channel, error.retry_after) == (status, False, pause, 42.0)
    assert channel.send(SMS, delivery_key="d-1").partner_id  # the script is used up: next one passes


@pytest.mark.parametrize("status", [502, 504])
def test_gateway_errors_are_retryable(
    channel: Channel, uniphore_emulator: UniphoreEmulator, status: int
) -> None:
    uniphore_emulator.script(status)

    error = send_error(channel)

    assert (error.status, error.final, error.pause_channel) == (status, False, False)


def test_no_answer_within_the_timeout_is_retryable(
    uniphore_emulator: UniphoreEmulator, transport: str
) -> None:
    uniphore_emulator.delay = 2.0
    channel = make_channel(uniphore_emulator, transport=transport, timeout=0.3)
    try:
        error = send_error(channel)
    finally:
        channel.close()

    assert not error.final
    assert error.partner_code == "timeout"


def test_partner_down_is_retryable(channel: Channel, uniphore_emulator: UniphoreEmulator) -> None:
    with uniphore_emulator.down():
        error = send_error(channel)
    assert not error.final
    assert error.partner_code == "connect"
    assert channel.send(SMS, delivery_key="d-1").partner_id  # back at the same URL


def test_missing_notify_parameters_are_final_and_nothing_is_sent(
    channel: Channel, uniphore_emulator: UniphoreEmulator
) -> None:
    error = send_error(channel, {"campaign": "campaign1"})

    assert error.final
    assert "'to'" in str(error)
    assert uniphore_emulator.received == []


# --- REST only --------------------------------------------------------------------------


def test_rest_request_follows_the_seed(uniphore_emulator: UniphoreEmulator) -> None:
    channel = make_channel(uniphore_emulator)
    try:
        channel.send({**SMS, "campaign": "camp 1", "params": "var1=value1&var2=value"}, delivery_key="d-1")
    finally:
        channel.close()

    [request] = uniphore_emulator.received
    assert request.method == "POST"
    assert request.path == "/interact/version/3/account/12345678/resources/campaign/sms/camp%201"
    assert request.headers["content-type"] == "application/json"
    assert request.json() == {
        "from": "+12121234567",
        "callerId": "+972 54 4696388",
        "jpToken": "Aejhib7",
        "additionalParams": "var1=value1&var2=value",
    }


@pytest.mark.parametrize(
    ("params", "code"),
    [({"jp_token": None}, "invalid_parameter")],
)
def test_rest_invalid_body_is_final(
    uniphore_emulator: UniphoreEmulator, params: dict[str, Any], code: str
) -> None:
    channel = make_channel(uniphore_emulator)
    try:
        error = send_error(channel, {**SMS, **params})
    finally:
        channel.close()

    assert (error.status, error.final, error.partner_code) == (400, True, code)
    assert "jpToken" in str(error)


def test_rest_expired_interaction_token_is_final(uniphore_emulator: UniphoreEmulator) -> None:
    uniphore_emulator.expired_jp_tokens.add("Aejhib7")
    channel = make_channel(uniphore_emulator)
    try:
        error = send_error(channel)
    finally:
        channel.close()

    assert (error.status, error.final, error.partner_code) == (403, True, "token_expired")


def test_rest_unauthorised_answer_reports_the_reason(uniphore_emulator: UniphoreEmulator) -> None:
    channel = make_channel(uniphore_emulator)
    uniphore_emulator.environment = "staging"  # our Environment-Name no longer matches
    try:
        error = send_error(channel)
    finally:
        channel.close()

    assert (error.status, error.final, error.partner_code) == (401, True, "0x7000000")
    assert "Environment-Name" in str(error)


def test_rest_tenant_id_defaults_to_the_account_and_can_be_set(uniphore_emulator: UniphoreEmulator) -> None:
    uniphore_emulator.tenant_id = "tenant-7"
    channel = make_channel(uniphore_emulator)
    try:
        assert send_error(channel).status == 401
        channel.close()
        channel = make_channel(uniphore_emulator, tenant_id="tenant-7")
        assert channel.send(SMS, delivery_key="d-1").partner_id
    finally:
        channel.close()


def test_rest_answer_without_message_sid_is_still_a_success(uniphore_emulator: UniphoreEmulator) -> None:
    uniphore_emulator.script(Reply(200, "Placed campaign {campaign1} in SMS queue"))
    channel = make_channel(uniphore_emulator)
    try:
        result = channel.send(SMS, delivery_key="d-1")
    finally:
        channel.close()

    assert result.partner_id is None
    assert "Placed campaign" in (result.detail or "")


# --- SOAP only --------------------------------------------------------------------------


def test_soap_request_is_the_seeds_campaign_sms_request(uniphore_emulator: UniphoreEmulator) -> None:
    channel = make_channel(uniphore_emulator, transport="soap")
    try:
        channel.send(
            {**SMS, "params": "Variable1=Value1", "send_from_master_account": "false"}, delivery_key="d"
        )
    finally:
        channel.close()

    [request] = uniphore_emulator.received
    assert request.path == "/interact/version/2/agent/soap"
    assert "xml" in request.headers["content-type"]
    root = etree.fromstring(request.body)
    node = root.find(f"{{http://schemas.xmlsoap.org/soap/envelope/}}Body/{{{NS}}}CampaignSMSRequest")
    assert node is not None
    values = {etree.QName(child).localname: child.text for child in node}
    assert values == {
        "campaignId": "campaign1",
        "additionalParams": "Variable1=Value1",
        "callerId": "+972 54 4696388",
        "from": "+12121234567",
        "sendFromMasterAccount": "false",
        "jpToken": "Aejhib7",
    }
    assert uniphore_emulator.messages[0].send_from_master_account is False


@pytest.mark.parametrize(
    ("text", "code", "final"),
    [
        ("Missing or invalid parameter callerId", "invalid_parameter", True),
        ("Campaign campaign1 was not found", "campaign_not_found", True),
        (TELEPHONY, "telephony_not_configured", False),
        ("Something unexpected happened", "failed", False),
    ],
)
def test_soap_failures_inside_a_200_answer_are_failures(
    uniphore_emulator: UniphoreEmulator, text: str, code: str, final: bool
) -> None:
    uniphore_emulator.script(soap_failure(text))
    channel = make_channel(uniphore_emulator, transport="soap")
    try:
        error = send_error(channel)
    finally:
        channel.close()

    assert (error.status, error.partner_code, error.final) == (200, code, final)
    assert text[:20] in str(error)


@pytest.mark.parametrize("fault_status", [500, 200])
def test_soap_credentials_fault_is_final_whatever_the_http_status(
    uniphore_emulator: UniphoreEmulator, fault_status: int
) -> None:
    uniphore_emulator.soap_fault_status = fault_status
    channel = make_channel(uniphore_emulator, key="wrong-key-0000", transport="soap")
    try:
        error = send_error(channel)
    finally:
        channel.close()

    assert (error.final, error.partner_code, error.status) == (True, "0x7000000", fault_status)
    assert "wrong-key-0000" not in str(error)


def test_soap_general_exception_answer_is_retryable(uniphore_emulator: UniphoreEmulator) -> None:
    uniphore_emulator.script(Reply(500, "exception"))
    channel = make_channel(uniphore_emulator, transport="soap")
    try:
        error = send_error(channel)
    finally:
        channel.close()

    assert (error.status, error.final) == (500, False)


def test_soap_unreadable_200_answer_is_retryable(uniphore_emulator: UniphoreEmulator) -> None:
    uniphore_emulator.script(Reply(200, "<exception>java.lang.NullPointerException", content_type="text/xml"))
    channel = make_channel(uniphore_emulator, transport="soap")
    try:
        error = send_error(channel)
    finally:
        channel.close()

    assert not error.final
    assert uniphore_emulator.messages == []


def test_soap_url_setting_overrides_the_base_url(uniphore_emulator: UniphoreEmulator) -> None:
    settings = {
        "base_url": f"http://127.0.0.1:{free_port()}",  # nothing listens there
        "account_id": uniphore_emulator.account_id,
        "application_key": "${SMS_APP_KEY}",
        "environment": "production",
        "transport": "soap",
        "soap_url": uniphore_emulator.soap_url,
    }
    channel = build_channel(
        "sms", "uniphore-sms", settings, environment={KEY_VAR: uniphore_emulator.application_key}, timeout=5
    )
    try:
        result = channel.send(SMS, delivery_key="d-1")
    finally:
        channel.close()

    assert result.partner_id == uniphore_emulator.messages[0].message_sid


def test_emulator_serves_the_wsdl_the_channel_uses(uniphore_emulator: UniphoreEmulator) -> None:
    response = httpx.get(uniphore_emulator.soap_url + "/agent.wsdl", timeout=5)
    assert response.status_code == 200
    assert b"CampaignSMSRequest" in response.content
