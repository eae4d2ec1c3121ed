"""Uniphore (Jacada) Interact Send SMS v3 emulator: REST and SOAP, from the seed document.

REST ``POST /interact/version/3/account/{accountId}/resources/campaign/sms/{campaignId}``
checks the ``Tenant-Id`` / ``Application-Key`` / ``Environment-Name`` headers (401 with
``Unauthenticated-Reason`` and the seed's JSON), the body (400 ``missing or invalid
parameter <p>``), the campaign (404), the jpToken (403 ``Token expired``) and the
telephony provider (500), then answers 200 ``Placed campaign {<id>} in SMS queue
messageSid: SM...``.

SOAP ``POST /interact/version/2/agent/soap`` takes ``CampaignSMSRequest`` and answers
like the seed: ``CampaignSMSResponse`` on success; for failures a
``GetInteractionUniqueIdResponse`` carrying the error text inside an HTTP 200 answer,
and a SOAP fault ``0x7000000`` for wrong credentials (HTTP :attr:`soap_fault_status`).
``GET /interact/version/2/agent/soap/agent.wsdl`` serves the WSDL from ``wsdl/``.

Accepted messages are listed in :attr:`UniphoreEmulator.messages`.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote
from xml.sax.saxutils import escape

from lxml import etree

from tests.emulators.base import Emulator, Reply, Request

NS = "http://com/jacada/interact/agent/soap"
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
REST_PATH = re.compile(
    r"^/interact/version/3/account/([^/]+)/resources/campaign/sms/([^/]+)(?:/callerid/([^/]+))?$"
)
SOAP_PATH = "/interact/version/2/agent/soap"
WSDL_FILE = Path(__file__).resolve().parents[2] / "wsdl" / "uniphore-agent.wsdl"
UNAUTHORIZED_JSON = (
    '{ "code":"0x7000000", "message": "Request is unauthorized, missing or wrong credentials", '
    '"moreInfoUrl":"http://support.uniphore.com", }'
)
TELEPHONY = (
    "Your Telephony provider is not defined, please contact Uniphore Support and read the following +link+"
)


@dataclass(frozen=True)
class SmsMessage:
    """An SMS the emulator accepted."""

    transport: str
    campaign: str
    caller_id: str
    sender: str | None
    jp_token: str | None
    additional_params: str | None
    send_from_master_account: bool | None
    message_sid: str


def _envelope(body: str) -> str:
    return (
        f'<SOAP-ENV:Envelope xmlns:SOAP-ENV="{SOAP_ENV}"><SOAP-ENV:Header/>'
        f"<SOAP-ENV:Body>{body}</SOAP-ENV:Body></SOAP-ENV:Envelope>"
    )


def soap_failure(text: str) -> Reply:
    """The seed's 'failure inside a 200 answer'."""
    body = (
        f'<ns2:GetInteractionUniqueIdResponse xmlns:ns2="{NS}">'
        f"<ns2:uniqueId>{escape(text)}</ns2:uniqueId></ns2:GetInteractionUniqueIdResponse>"
    )
    return Reply(200, _envelope(body), content_type="text/xml; charset=utf-8")


class UniphoreEmulator(Emulator):
    name = "uniphore"

    def __init__(
        self,
        *,
        account_id: str = "12345678",
        tenant_id: str | None = None,
        application_key: str = "53736e07e4b05772e6475c2d",
        environment: str | None = "production",
        campaigns: set[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.account_id = account_id
        self.tenant_id = tenant_id or account_id
        self.application_key = application_key
        self.environment = environment
        self.campaigns = campaigns if campaigns is not None else {"campaign1", "camp 1"}
        self.expired_jp_tokens: set[str] = set()
        self.telephony_configured = True
        self.require_jp_token = True  # REST: the seed does not mark jpToken optional
        self.soap_fault_status = 500
        self.messages: list[SmsMessage] = []

    @property
    def soap_url(self) -> str:
        return self.url + SOAP_PATH

    def _authorised(self, request: Request) -> str | None:
        """None when the security headers are right, else the Unauthenticated-Reason."""
        headers = request.headers
        if headers.get("tenant-id") != self.tenant_id:
            return "Tenant-Id"
        if headers.get("application-key") != self.application_key:
            return "Application-Key"
        if self.environment is not None and headers.get("environment-name") != self.environment:
            return "Environment-Name"
        return None

    def _accept(self, transport: str, campaign: str, caller_id: str, fields: dict[str, Any]) -> str:
        sid = "SM" + uuid.uuid4().hex
        with self._lock:
            self.messages.append(
                SmsMessage(
                    transport=transport,
                    campaign=campaign,
                    caller_id=caller_id,
                    sender=fields.get("from"),
                    jp_token=fields.get("jpToken"),
                    additional_params=fields.get("additionalParams"),
                    send_from_master_account=fields.get("sendFromMasterAccount"),
                    message_sid=sid,
                )
            )
        return sid

    def error_reply(self, status: int) -> Reply:
        if status == 401:
            return Reply(
                401,
                UNAUTHORIZED_JSON,
                {"Unauthenticated-Reason": "Application-Key"},
                content_type="application/json",
            )
        if status == 403:
            return Reply(403, "Token expired")
        if status == 404:
            return Reply(404, "Campaign <campaign id> was not found")
        if status == 500:
            return Reply(500, TELEPHONY)
        return super().error_reply(status)

    def handle(self, request: Request) -> Reply:
        if request.method == "GET" and request.path.endswith("/agent.wsdl"):
            return Reply(200, WSDL_FILE.read_bytes(), content_type="text/xml")
        if request.method == "POST" and request.path.rstrip("/") == SOAP_PATH:
            return self._soap(request)
        match = REST_PATH.match(request.path)
        if request.method == "POST" and match:
            return self._rest(request, unquote(match.group(1)), unquote(match.group(2)), match.group(3))
        return Reply(404, "not found")

    # --- REST ---------------------------------------------------------------------

    def _rest(self, request: Request, account: str, campaign: str, caller_in_path: str | None) -> Reply:
        reason = self._authorised(request)
        if reason is not None or account != self.account_id:
            return Reply(
                401,
                UNAUTHORIZED_JSON,
                {"Unauthenticated-Reason": reason or "account"},
                content_type="application/json",
            )
        try:
            body = json.loads(request.body or b"{}")
        except ValueError:
            return Reply(400, "missing or invalid parameter body")
        if not isinstance(body, dict):
            return Reply(400, "missing or invalid parameter body")
        caller_id = body.get("callerId") or (unquote(caller_in_path) if caller_in_path else None)
        if not isinstance(caller_id, str) or not caller_id.strip():
            return Reply(400, "missing or invalid parameter callerId")
        token = body.get("jpToken")
        if self.require_jp_token and (not isinstance(token, str) or not token):
            return Reply(400, "missing or invalid parameter jpToken")
        for optional in ("from", "additionalParams"):
            if optional in body and not isinstance(body[optional], str):
                return Reply(400, f"missing or invalid parameter {optional}")
        if campaign not in self.campaigns:
            return Reply(404, f"Campaign {campaign} was not found")
        if token in self.expired_jp_tokens:
            return Reply(403, "Token expired")
        if not self.telephony_configured:
            return Reply(500, TELEPHONY)
        sid = self._accept("rest", campaign, caller_id, body)
        return Reply(200, f"Placed campaign {{{campaign}}} in SMS queue messageSid: {sid}")

    # --- SOAP ---------------------------------------------------------------------

    def _soap(self, request: Request) -> Reply:
        if self._authorised(request) is not None:
            fault = (
                "<SOAP-ENV:Fault><faultcode>0x7000000</faultcode>"
                "<faultstring>Request is unauthorized, missing or wrong credentials</faultstring>"
                "</SOAP-ENV:Fault>"
            )
            return Reply(self.soap_fault_status, _envelope(fault), content_type="text/xml; charset=utf-8")
        parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
        try:
            root = etree.fromstring(request.body, parser)
        except etree.XMLSyntaxError:
            return Reply(500, "<exception>Unparseable request</exception>", content_type="text/xml")
        node = root.find(f"{{{SOAP_ENV}}}Body/{{{NS}}}CampaignSMSRequest")
        if node is None:
            return soap_failure("Missing or invalid parameter CampaignSMSRequest")
        fields: dict[str, Any] = {}
        for child in node:
            fields[etree.QName(child).localname] = child.text or ""
        campaign = fields.get("campaignId", "").strip()
        caller_id = fields.get("callerId", "").strip()
        if not campaign:
            return soap_failure("Missing or invalid parameter campaignId")
        if not caller_id:
            return soap_failure("Missing or invalid parameter callerId")
        master = fields.get("sendFromMasterAccount")
        if master is not None:
            if master not in ("true", "false", "1", "0"):
                return soap_failure("Missing or invalid parameter sendFromMasterAccount")
            fields["sendFromMasterAccount"] = master in ("true", "1")
        if campaign not in self.campaigns:
            return soap_failure(f"Campaign {campaign} was not found")
        if not self.telephony_configured:
            return soap_failure(TELEPHONY)
        sid = self._accept("soap", campaign, caller_id, fields)
        body = (
            f'<ns2:CampaignSMSResponse xmlns:ns2="{NS}"><ns2:message>message: Campaign {escape(campaign)} '
            f"was sent to queue messageSid: {sid}</ns2:message></ns2:CampaignSMSResponse>"
        )
        return Reply(200, _envelope(body), content_type="text/xml; charset=utf-8")
