"""SmartCOMM DocGen ``generateDocument`` with an OAuth2 client-credentials token.

The token comes from ``token_url`` (``grant_type=client_credentials``, the client
credentials sent with HTTP Basic, or in the form body with ``client_auth: body``),
is cached until shortly before ``expires_in`` runs out, and is fetched again once
when ``generateDocument`` answers 401 (a token revoked or expired early). A second
401 with a freshly issued token is final: the client is not allowed to generate.

``POST {base_url}/one/oauth2/api/v10/job/generateDocument`` carries
``{includeDocumentData, batchConfigResId, transactionData (base64), transactionDataType,
projectId, transactionRange, properties: [{name, value}]}``. Requests over 10 MB are
refused before sending (final, ``partner_code="request_too_large"``). A 403 keeps
SmartCOMM's ``id`` (as ``partner_code``) and ``msg``. The generated documents (base64
``data`` per channel result) come back in :attr:`SendResult.documents`.

Notify parameters: ``data`` (a mapping or list serialised as JSON or XML, or a string
sent as is), ``data_type`` (``json``/``xml`` or the media type), ``batch_config_res_id``,
``project_id``, ``transaction_range``, ``properties`` (a mapping or ``[{name, value}]``),
``include_document_data``.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from xml.etree import ElementTree as etree  # building only, never parsing

import httpx

from provider.channels.base import SendResult
from provider.channels.impl import http
from provider.channels.specs import parse_bool
from provider.errors import ChannelError
from provider.redact import Redactor

log = logging.getLogger(__name__)

TYPE_NAME = "smartcomm"
GENERATE_PATH = "/one/oauth2/api/v10/job/generateDocument"
MAX_REQUEST_BYTES = 10 * 1024 * 1024
JSON_TYPE = "application/json"
XML_TYPE = "application/xml"
DEFAULT_TOKEN_LIFETIME = 300.0


@dataclass(frozen=True)
class _Token:
    value: str
    refresh_at: float  # time.monotonic()


def _media_type(value: Any, data: Any) -> str:
    if value is None or str(value).strip() == "":
        if isinstance(data, str):
            return XML_TYPE if data.lstrip().startswith("<") else JSON_TYPE
        return JSON_TYPE
    text = str(value).strip().lower()
    if text in ("json", JSON_TYPE):
        return JSON_TYPE
    if text in ("xml", XML_TYPE, "text/xml"):
        return XML_TYPE
    raise ChannelError(f"{TYPE_NAME}: data_type must be json or xml, not {text!r}", final=True)


def _xml_children(parent: etree.Element, value: Any) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(item, list | tuple):
                for element in item:
                    _xml_children(etree.SubElement(parent, str(key)), element)
            else:
                _xml_children(etree.SubElement(parent, str(key)), item)
    elif isinstance(value, list | tuple):
        for element in value:
            _xml_children(etree.SubElement(parent, "item"), element)
    elif value is not None:
        parent.text = str(value).lower() if isinstance(value, bool) else str(value)


def to_xml(data: Any) -> bytes:
    """A mapping as XML: a single top-level key is the root element, else ``<Data>`` wraps it."""
    try:
        if isinstance(data, Mapping) and len(data) == 1:
            [(root_name, content)] = data.items()
            root = etree.Element(str(root_name))
            _xml_children(root, content)
        else:
            root = etree.Element("Data")
            _xml_children(root, data)
    except ValueError as exc:  # an invalid element name
        raise ChannelError(f"{TYPE_NAME}: data cannot be written as XML: {exc}", final=True) from exc
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def serialise(data: Any, media_type: str) -> bytes:
    """The transaction data bytes for ``data`` in ``media_type``."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode("utf-8")
    if media_type == XML_TYPE:
        return to_xml(data)
    try:
        return json.dumps(data, ensure_ascii=False, default=str).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise ChannelError(f"{TYPE_NAME}: data cannot be written as JSON: {exc}", final=True) from exc


def _properties(value: Any) -> list[dict[str, str]]:
    if value is None or value == "":
        return []
    if isinstance(value, Mapping):
        return [{"name": str(k), "value": "" if v is None else str(v)} for k, v in value.items()]
    if isinstance(value, Sequence) and not isinstance(value, str):
        out = []
        for item in value:
            if not isinstance(item, Mapping) or "name" not in item:
                raise ChannelError(
                    f"{TYPE_NAME}: properties must be [{{name, value}}] or a mapping", final=True
                )
            out.append(
                {"name": str(item["name"]), "value": "" if item.get("value") is None else str(item["value"])}
            )
        return out
    raise ChannelError(f"{TYPE_NAME}: properties must be [{{name, value}}] or a mapping", final=True)


def _integer(value: Any, name: str) -> int | None:
    if value is None or str(value).strip() == "":
        return None
    try:
        return int(str(value).strip())
    except ValueError:
        raise ChannelError(f"{TYPE_NAME}: {name} must be a whole number, not {value!r}", final=True) from None


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def partner_fault(body: Any) -> tuple[str | None, str | None]:
    """SmartCOMM's error ``id`` and ``msg`` from an answer (top level or ``exceptions[0]``)."""
    if not isinstance(body, Mapping):
        return None, None
    candidates: list[Any] = [body]
    exceptions = body.get("exceptions")
    if isinstance(exceptions, list):
        candidates.extend(exceptions)
    for item in candidates:
        if isinstance(item, Mapping) and ("id" in item or "msg" in item):
            ident = item.get("id")
            msg = item.get("msg")
            return (None if ident is None else str(ident)), (None if msg is None else str(msg))
    return None, None


def documents_of(body: Mapping[str, Any]) -> dict[str, Any]:
    """The generated documents of a generateDocument answer, flattened per channel result."""
    documents: list[dict[str, Any]] = []
    envelopes = body.get("envelopes") or []
    for index, envelope in enumerate(envelopes if isinstance(envelopes, list) else []):
        if not isinstance(envelope, Mapping):
            continue
        parts: list[tuple[str, Any]] = [("primary", envelope.get("primaryChannel"))]
        enclosures = envelope.get("enclosureChannels") or []
        parts.extend(("enclosure", e) for e in (enclosures if isinstance(enclosures, list) else []))
        for role, part in parts:
            if isinstance(part, Mapping):
                documents.append({"envelope": index, "role": role, **dict(part)})
    out: dict[str, Any] = {"documents": documents}
    for key in ("numberTransactions", "previewKey", "dataModelValuesLocation", "jobMessages", "exceptions"):
        if body.get(key):
            out[key] = body[key]
    return out


class SmartCommChannel:
    """Generates documents with SmartCOMM DocGen; see the module docstring."""

    type_name = TYPE_NAME

    def __init__(
        self,
        name: str,
        *,
        base_url: str,
        token_url: str,
        client_id: str,
        client_secret: str,
        batch_config_res_id: int | None = None,
        project_id: int | None = None,
        scope: str | None = None,
        client_auth: str = "basic",
        include_document_data: bool = True,
        ca_file: str | None = None,
        proxy: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.name = name
        self.generate_url = base_url.rstrip("/") + GENERATE_PATH
        self.token_url = token_url
        self.batch_config_res_id = batch_config_res_id
        self.project_id = project_id
        self.include_document_data = include_document_data
        self._client_id = client_id
        self._client_secret = client_secret
        self._scope = scope
        self._client_auth = client_auth
        self._redact = Redactor([client_secret])
        self._client = http.make_client(timeout=timeout, ca_file=ca_file, proxy=proxy)
        self._lock = threading.Lock()
        self._token: _Token | None = None
        self.tokens_fetched = 0

    # --- token ----------------------------------------------------------------------

    def _fetch_token(self) -> _Token:
        form = {"grant_type": "client_credentials"}
        if self._scope:
            form["scope"] = self._scope
        auth: tuple[str, str] | None = None
        if self._client_auth == "body":
            form.update(client_id=self._client_id, client_secret=self._client_secret)
        else:
            auth = (self._client_id, self._client_secret)
        response = http.send(
            self._client,
            TYPE_NAME,
            self._redact,
            "POST",
            self.token_url,
            data=form,
            auth=auth,
            headers={"Accept": JSON_TYPE},
        )
        body = _json(response)
        if response.status_code != 200:
            error = body.get("error") if isinstance(body, Mapping) else None
            if response.status_code in (400, 401, 403):
                raise http.status_error(
                    TYPE_NAME,
                    response,
                    self._redact,
                    message=f"token request refused ({error or 'wrong client_id or client_secret'})",
                    partner_code=str(error) if error else "token_refused",
                    final=True,
                )
            raise http.status_error(
                TYPE_NAME, response, self._redact, message="token request failed", partner_code="token"
            )
        value = body.get("access_token") if isinstance(body, Mapping) else None
        if not isinstance(value, str) or not value:
            raise ChannelError(
                f"{TYPE_NAME}: the token endpoint answered without an access_token", status=200
            )
        expires_in = body.get("expires_in")
        try:
            lifetime = DEFAULT_TOKEN_LIFETIME if expires_in is None else max(0.0, float(expires_in))
        except (TypeError, ValueError):
            lifetime = DEFAULT_TOKEN_LIFETIME
        margin = min(60.0, lifetime * 0.1)
        self._redact.add(value)
        self.tokens_fetched += 1
        log.info(
            "SmartCOMM token fetched",
            extra={"event": "channel.token.fetched", "channel": self.name, "expires_in": lifetime},
        )
        return _Token(value=value, refresh_at=time.monotonic() + max(0.0, lifetime - margin))

    def _current_token(self, *, stale: str | None = None) -> str:
        """The cached token, fetched when absent, near expiry, or equal to ``stale``."""
        with self._lock:
            token = self._token
            if token is None or time.monotonic() >= token.refresh_at or token.value == stale:
                fresh = self._fetch_token()
                if token is not None:
                    self._redact.discard(token.value)
                self._token = token = fresh
            return token.value

    # --- sending --------------------------------------------------------------------

    def build_request(self, params: Mapping[str, Any]) -> bytes:
        """The generateDocument JSON body for ``params``; raises ChannelError (final) when invalid."""
        if "data" not in params or params["data"] is None:
            raise ChannelError(f"{TYPE_NAME}: notify parameter 'data' is required", final=True)
        data = params["data"]
        media_type = _media_type(params.get("data_type"), data)
        batch = _integer(params.get("batch_config_res_id"), "batch_config_res_id")
        if batch is None:
            batch = self.batch_config_res_id
        if batch is None:
            raise ChannelError(
                f"{TYPE_NAME}: batch_config_res_id is required (notify parameter or channel setting)",
                final=True,
            )
        project = _integer(params.get("project_id"), "project_id")
        if project is None:
            project = self.project_id
        include = params.get("include_document_data")
        request: dict[str, Any] = {
            "includeDocumentData": self.include_document_data
            if include in (None, "")
            else parse_bool(include),
            "batchConfigResId": batch,
            "transactionData": base64.b64encode(serialise(data, media_type)).decode("ascii"),
            "transactionDataType": media_type,
        }
        if project is not None:
            request["projectId"] = project
        transaction_range = _integer(params.get("transaction_range"), "transaction_range")
        if transaction_range is not None:
            request["transactionRange"] = transaction_range
        properties = _properties(params.get("properties"))
        if properties:
            request["properties"] = properties
        return json.dumps(request).encode("utf-8")

    def send(self, params: Mapping[str, Any], *, delivery_key: str) -> SendResult:
        """Generate the documents; returns them in ``documents``. Raises ChannelError."""
        try:
            body = self.build_request(params)
        except ValueError as exc:
            raise ChannelError(f"{TYPE_NAME}: invalid notify parameters: {exc}", final=True) from exc
        if len(body) > MAX_REQUEST_BYTES:
            raise ChannelError(
                f"{TYPE_NAME}: request of {len(body)} bytes is over SmartCOMM's 10 MB limit; not sent",
                final=True,
                partner_code="request_too_large",
            )
        token = self._current_token()
        response = self._post(body, token)
        if response.status_code == 401:
            log.info(
                "SmartCOMM token rejected, fetching a new one",
                extra={"event": "channel.token.refresh", "channel": self.name},
            )
            token = self._current_token(stale=token)
            response = self._post(body, token)
            if response.status_code == 401:
                raise http.status_error(
                    TYPE_NAME,
                    response,
                    self._redact,
                    message="a freshly issued token was refused (client not allowed to generate documents)",
                    partner_code="unauthorized",
                    final=True,
                )
        answer = _json(response)
        if response.status_code != 200:
            ident, msg = partner_fault(answer)
            message = None
            if response.status_code == 403 or ident is not None:
                shown = http.excerpt(msg or "?", self._redact)
                message = f"Generate Document has failed: id={ident or '?'} msg={shown}"
            raise http.status_error(TYPE_NAME, response, self._redact, message=message, partner_code=ident)
        if not isinstance(answer, Mapping):
            raise ChannelError(f"{TYPE_NAME}: HTTP 200 without a JSON document answer", status=200)
        documents = documents_of(answer)
        if not documents["documents"] and answer.get("exceptions"):
            ident, msg = partner_fault(answer)
            raise ChannelError(
                f"{TYPE_NAME}: Generate Document has failed: "
                f"id={ident or '?'} msg={http.excerpt(msg or '?', self._redact)}",
                final=True,
                status=200,
                partner_code=ident,
            )
        partner_id = answer.get("previewKey")
        count = len(documents["documents"])
        return SendResult(
            partner_id=str(partner_id) if partner_id else None,
            status=200,
            detail=f"{count} document(s) generated",
            documents=documents,
        )

    def _post(self, body: bytes, token: str) -> httpx.Response:
        return http.send(
            self._client,
            TYPE_NAME,
            self._redact,
            "POST",
            self.generate_url,
            content=body,
            headers={"Authorization": f"Bearer {token}", "Content-Type": JSON_TYPE, "Accept": JSON_TYPE},
        )

    def close(self) -> None:
        self._client.close()


def build(name: str, settings: Mapping[str, Any], timeout: float) -> SmartCommChannel:
    return SmartCommChannel(
        name,
        base_url=settings["base_url"],
        token_url=settings["token_url"],
        client_id=settings["client_id"],
        client_secret=settings["client_secret"],
        batch_config_res_id=settings["batch_config_res_id"],
        project_id=settings["project_id"],
        scope=settings["scope"],
        client_auth=settings["client_auth"],
        include_document_data=settings["include_document_data"],
        ca_file=settings["ca_file"],
        proxy=settings["proxy"],
        timeout=settings["timeout"] or timeout,
    )
