"""Uniphore (Jacada) Interact "Send SMS" v3: a campaign SMS to one phone number.

REST (default): ``POST {base_url}/interact/version/3/account/{account_id}/resources/campaign/sms/{campaign}``
with the headers ``Tenant-Id``, ``Application-Key``, ``Environment-Name`` and the JSON
body ``{from, callerId, jpToken, additionalParams}``. The answer's text carries the
``messageSid``, returned as :attr:`SendResult.partner_id`.

SOAP (``transport: soap``): ``CampaignSMSRequest`` built and parsed by zeep from
``wsdl/uniphore-agent.wsdl``, posted (with the same HTTP headers) to
``{base_url}/interact/version/2/agent/soap`` or ``soap_url``. The service reports a
failed send inside an HTTP 200 answer (a ``GetInteractionUniqueIdResponse`` whose
``uniqueId`` holds the error text): those are failures, classified like their REST
statuses (invalid parameter / unknown campaign: final; telephony provider not
configured: retryable). A SOAP fault ``0x7000000`` means wrong credentials (final).

Notify parameters: ``campaign`` and ``to`` (required), ``from``, ``params``
(``additionalParams``: a mapping, each value URL-encoded, or a string ``a=1&b=2``),
``jp_token``, ``send_from_master_account`` (SOAP only).

A rules file's string form is turned into the mapping form when the rules are loaded
(:func:`provider.channels.sms_params.normalise_params`): ``ticketNumber={{ args.ticket }}&who=me`` becomes
``{ticketNumber: "{{ args.ticket }}", who: "me"}``, so each rendered value is encoded on
its own and a value such as ``1&evil=x`` cannot add parameters. A string given to the
channel directly is sent as is.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import zeep
import zeep.exceptions
import zeep.plugins
import zeep.transports

from provider.channels.base import SendResult
from provider.channels.impl import http
from provider.channels.policy import PAUSE_STATUSES
from provider.errors import ChannelError, ConfigError
from provider.redact import Redactor
from provider.resources import WSDL_DIR

TYPE_NAME = "uniphore-sms"
SOAP_NS = "http://com/jacada/interact/agent/soap"
BINDING = f"{{{SOAP_NS}}}AgentSoap11"
FAILURE_ELEMENT = f"{{{SOAP_NS}}}GetInteractionUniqueIdResponse"
AUTH_FAULT_CODE = "0x7000000"
DEFAULT_WSDL = WSDL_DIR / "uniphore-agent.wsdl"

_SID = re.compile(r"messageSid\W{0,4}([A-Za-z0-9]+)")
_CODE = re.compile(r'"code"\s*:\s*"([^"]*)"')
_MESSAGE = re.compile(r'"message"\s*:\s*"([^"]*)"')


def message_sid(text: str) -> str | None:
    """The ``messageSid`` in a Send SMS answer (plain text or JSON), if any."""
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, Mapping) and isinstance(data.get("messageSid"), str):
        return str(data["messageSid"])
    match = _SID.search(text)
    return match.group(1) if match else None


def classify(text: str) -> tuple[str, bool]:
    """``(partner_code, final)`` for a failure text of the service (seed's answer table)."""
    lowered = text.lower()
    if "missing or invalid parameter" in lowered:
        return "invalid_parameter", True
    if "was not found" in lowered:
        return "campaign_not_found", True
    if "token expired" in lowered:
        return "token_expired", True
    if "telephony provider" in lowered:
        return "telephony_not_configured", False
    if "unauthorized" in lowered or "credentials" in lowered:
        return AUTH_FAULT_CODE, True
    return "failed", False


def _additional_params(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, Mapping):
        return urlencode({str(k): "" if v is None else str(v) for k, v in value.items()})
    return str(value)


def _required(params: Mapping[str, Any], name: str) -> str:
    value = params.get(name)
    if value is None or str(value).strip() == "":
        raise ChannelError(f"{TYPE_NAME}: notify parameter {name!r} is required", final=True)
    return str(value).strip()


def _optional(params: Mapping[str, Any], name: str) -> str | None:
    value = params.get(name)
    return None if value is None or str(value).strip() == "" else str(value).strip()


class _ReportedFailure(Exception):
    """The SOAP service answered 200 with an error text instead of CampaignSMSResponse."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class _FailureAnswerPlugin(zeep.plugins.Plugin):
    """Spots the 'failure inside a 200 answer' element before zeep deserialises the body."""

    def __init__(self) -> None:
        self.client: zeep.Client | None = None

    def ingress(self, envelope: Any, http_headers: Any, operation: Any) -> tuple[Any, Any]:
        body = envelope.find("{http://schemas.xmlsoap.org/soap/envelope/}Body")
        node = None if body is None else next(iter(body), None)
        if node is not None and node.tag == FAILURE_ELEMENT:
            text = node.findtext(f"{{{SOAP_NS}}}uniqueId") or ""
            if self.client is not None:
                element = self.client.get_element(FAILURE_ELEMENT)  # type: ignore[no-untyped-call]
                parsed = element.parse(node, self.client.wsdl.types)
                text = str(parsed.uniqueId or text)
            raise _ReportedFailure(text)
        return envelope, http_headers


class _HttpxTransport(zeep.transports.Transport):
    """zeep's transport over our httpx client: local WSDL only, HTTP errors converted."""

    def __init__(self, client: httpx.Client, headers: Mapping[str, str], redact: Redactor) -> None:
        super().__init__(cache=None)  # type: ignore[no-untyped-call]
        self.session.close()  # zeep's requests session is never used
        self._client = client
        self._headers = dict(headers)
        self._redact = redact
        self.last = threading.local()

    def load(self, url: str) -> bytes:
        if "://" in url and not url.startswith("file://"):
            raise ConfigError(f"{TYPE_NAME}: the WSDL must not import remote documents ({url})")
        path = url.removeprefix("file://")
        return Path(path).read_bytes()

    def post(self, address: str, message: bytes, headers: Mapping[str, str]) -> httpx.Response:
        merged = {**dict(headers), **self._headers}
        response = http.send(
            self._client, TYPE_NAME, self._redact, "POST", address, content=message, headers=merged
        )
        self.last.status = response.status_code
        content_type = response.headers.get("Content-Type", "")
        looks_xml = "xml" in content_type or response.content.lstrip().startswith(b"<")
        if response.status_code in PAUSE_STATUSES or response.status_code in (502, 504):
            raise http.status_error(TYPE_NAME, response, self._redact)
        if response.status_code != 200 and not looks_xml:
            text = http.response_text(response)
            code, _ = classify(text)
            raise http.status_error(TYPE_NAME, response, self._redact, partner_code=code)
        return response

    def get(self, address: str, params: Any, headers: Any) -> Any:
        raise ConfigError(f"{TYPE_NAME}: no GET requests are made by this channel")


class UniphoreSmsChannel:
    """Sends campaign SMS through Uniphore Interact (REST or SOAP); see the module docstring."""

    type_name = TYPE_NAME

    def __init__(
        self,
        name: str,
        *,
        base_url: str,
        account_id: str,
        application_key: str,
        tenant_id: str | None = None,
        environment: str | None = None,
        transport: str = "rest",
        soap_url: str | None = None,
        wsdl_path: str | Path | None = None,
        ca_file: str | None = None,
        proxy: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.account_id = account_id
        self.transport = transport
        self.soap_url = soap_url or f"{self.base_url}/interact/version/2/agent/soap"
        self._redact = Redactor([application_key])
        self._headers = {"Tenant-Id": tenant_id or account_id, "Application-Key": application_key}
        if environment:
            self._headers["Environment-Name"] = environment
        self._client = http.make_client(timeout=timeout, ca_file=ca_file, proxy=proxy)
        self._soap: zeep.proxy.ServiceProxy | None = None
        self._zeep: zeep.Client | None = None
        self._zeep_transport: _HttpxTransport | None = None
        if transport == "soap":
            self._load_wsdl(Path(wsdl_path) if wsdl_path else DEFAULT_WSDL)

    def _load_wsdl(self, path: Path) -> None:
        transport = _HttpxTransport(self._client, self._headers, self._redact)
        plugin = _FailureAnswerPlugin()
        try:
            client = zeep.Client(  # type: ignore[no-untyped-call]
                str(path),
                transport=transport,
                plugins=[plugin],
                settings=zeep.Settings(
                    strict=True, forbid_dtd=True, forbid_entities=True, forbid_external=True
                ),
            )
        except (OSError, ValueError, zeep.exceptions.Error) as exc:
            raise ConfigError(f"channel {self.name!r}: cannot load the SMS WSDL {path}: {exc}") from exc
        plugin.client = client
        self._zeep = client
        self._zeep_transport = transport
        self._soap = client.create_service(BINDING, self.soap_url)  # type: ignore[no-untyped-call]

    # --- sending ------------------------------------------------------------------

    def send(self, params: Mapping[str, Any], *, delivery_key: str) -> SendResult:
        """Send one SMS; returns its ``messageSid``. Raises ChannelError (see module docstring)."""
        campaign = _required(params, "campaign")
        caller_id = _required(params, "to")
        if self.transport == "soap":
            return self._send_soap(params, campaign, caller_id)
        return self._send_rest(params, campaign, caller_id)

    def _send_rest(self, params: Mapping[str, Any], campaign: str, caller_id: str) -> SendResult:
        url = (
            f"{self.base_url}/interact/version/3/account/{quote(self.account_id, safe='')}"
            f"/resources/campaign/sms/{quote(campaign, safe='')}"
        )
        body: dict[str, str] = {}
        sender = _optional(params, "from")
        if sender:
            body["from"] = sender
        body["callerId"] = caller_id
        token = _optional(params, "jp_token")
        if token:
            body["jpToken"] = token
        extra = _additional_params(params.get("params"))
        if extra is not None:
            body["additionalParams"] = extra
        response = http.send(
            self._client,
            TYPE_NAME,
            self._redact,
            "POST",
            url,
            content=json.dumps(body).encode("utf-8"),
            headers={
                **self._headers,
                "Content-Type": "application/json",
                "Accept": "application/json, text/plain",
            },
        )
        text = http.response_text(response)
        if response.status_code == 200:
            return SendResult(
                partner_id=message_sid(text), status=200, detail=http.excerpt(text, self._redact)
            )
        if response.status_code == 401:
            code_match = _CODE.search(text)
            message_match = _MESSAGE.search(text)
            reason = response.headers.get("Unauthenticated-Reason")
            detail = message_match.group(1) if message_match else "missing or wrong credentials"
            if reason:
                detail += f" ({reason})"
            raise http.status_error(
                TYPE_NAME,
                response,
                self._redact,
                message=detail,
                partner_code=code_match.group(1) if code_match else AUTH_FAULT_CODE,
            )
        code, _ = classify(text)
        raise http.status_error(TYPE_NAME, response, self._redact, partner_code=code)

    def _send_soap(self, params: Mapping[str, Any], campaign: str, caller_id: str) -> SendResult:
        assert self._soap is not None
        assert self._zeep_transport is not None
        request: dict[str, Any] = {"campaignId": campaign, "callerId": caller_id}
        extra = _additional_params(params.get("params"))
        if extra is not None:
            request["additionalParams"] = extra
        sender = _optional(params, "from")
        if sender:
            request["from"] = sender
        master = params.get("send_from_master_account")
        if master is not None and master != "":
            request["sendFromMasterAccount"] = str(master).strip().lower() in {"1", "true", "yes", "on"}
        token = _optional(params, "jp_token")
        if token:
            request["jpToken"] = token
        self._zeep_transport.last.status = None
        try:
            message = self._soap.CampaignSMS(**request)
        except _ReportedFailure as failure:
            code, final = classify(failure.text)
            raise ChannelError(
                f"{TYPE_NAME}: SMS not sent: {http.excerpt(failure.text, self._redact)}",
                final=final,
                status=200,
                partner_code=code,
            ) from None
        except zeep.exceptions.Fault as fault:
            raise self._fault_error(fault) from fault
        except zeep.exceptions.TransportError as exc:
            status = int(exc.status_code or 0) or None
            final = status is not None and http.is_final_status(status)
            raise ChannelError(
                f"{TYPE_NAME}: HTTP {status}: unexpected SOAP answer", final=final, status=status
            ) from exc
        except zeep.exceptions.ValidationError as exc:
            raise ChannelError(
                f"{TYPE_NAME}: invalid SMS request: {http.excerpt(str(exc), self._redact)}", final=True
            ) from exc
        except (zeep.exceptions.Error, ValueError) as exc:
            raise ChannelError(
                f"{TYPE_NAME}: unreadable SOAP answer ({type(exc).__name__})",
                status=getattr(self._zeep_transport.last, "status", None),
            ) from exc
        text = str(message or "")
        return SendResult(partner_id=message_sid(text), status=200, detail=http.excerpt(text, self._redact))

    def _fault_error(self, fault: zeep.exceptions.Fault) -> ChannelError:
        assert self._zeep_transport is not None
        status = getattr(self._zeep_transport.last, "status", None)
        code = str(fault.code or "").strip()
        text = str(fault.message or "")
        local = code.rsplit(":", 1)[-1]
        if code == AUTH_FAULT_CODE or local == "Client":
            final = True
        else:
            _, final = classify(text)
        return ChannelError(
            f"{TYPE_NAME}: SOAP fault {code or '?'}: {http.excerpt(text, self._redact)}",
            final=final,
            status=status,
            partner_code=code or None,
        )

    def close(self) -> None:
        self._client.close()


def build(name: str, settings: Mapping[str, Any], timeout: float) -> UniphoreSmsChannel:
    return UniphoreSmsChannel(
        name,
        base_url=settings["base_url"],
        account_id=settings["account_id"],
        application_key=settings["application_key"],
        tenant_id=settings["tenant_id"],
        environment=settings["environment"],
        transport=settings["transport"],
        soap_url=settings["soap_url"],
        wsdl_path=settings["wsdl"],
        ca_file=settings["ca_file"],
        proxy=settings["proxy"],
        timeout=settings["timeout"] or timeout,
    )
