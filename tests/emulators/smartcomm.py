"""SmartCOMM DocGen emulator: OAuth2 client credentials and generateDocument, from the seed.

``POST /oauth/token`` (``grant_type=client_credentials``, client credentials by HTTP
Basic or in the form) issues bearer tokens living :attr:`token_ttl` seconds; wrong
credentials get 401 ``{"error": "invalid_client"}``. :meth:`expire_tokens` revokes
every issued token server-side (the client still believes in its cached one).

``POST /one/oauth2/api/v10/job/generateDocument`` checks the bearer token (401), the
size (413 over 10 MB), the body (400), ``batchConfigResId`` against
:attr:`batch_config_ids` and the transaction data (403 with SmartCOMM's ``id`` and
``msg``), the rate limit (429 with ``Retry-After: 60`` past :attr:`rate_limit`) and
maintenance (503 with ``Retry-After: 120``), then returns an envelope per transaction
with base64 document data. Accepted jobs are listed in :attr:`SmartCommEmulator.jobs`.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from lxml import etree

from tests.emulators.base import Emulator, Reply, Request

TOKEN_PATH = "/oauth/token"
GENERATE_PATH = "/one/oauth2/api/v10/job/generateDocument"
MAX_REQUEST_BYTES = 10 * 1024 * 1024


@dataclass(frozen=True)
class Job:
    """A generateDocument request the emulator accepted."""

    batch_config_res_id: int
    project_id: int | None
    data_type: str
    data: bytes
    properties: list[dict[str, str]]
    include_document_data: bool

    def json(self) -> Any:
        return json.loads(self.data)


class SmartCommEmulator(Emulator):
    name = "smartcomm"

    def __init__(
        self,
        *,
        client_id: str = "st-provider",
        client_secret: str = "smartcomm-client-secret",
        token_ttl: int = 3600,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_ttl = token_ttl
        self.batch_config_ids: set[int] | None = None  # None: any id is a template selector
        self.rate_limit: tuple[int, float] | None = None
        self.maintenance = False
        self.jobs: list[Job] = []
        self.token_requests = 0
        self._tokens: dict[str, float] = {}
        self._calls: deque[float] = deque()
        self._tokens_lock = threading.Lock()

    @property
    def token_url(self) -> str:
        return self.url + TOKEN_PATH

    def expire_tokens(self) -> None:
        """Revoke every issued token (the next generateDocument with one gets 401)."""
        with self._tokens_lock:
            self._tokens.clear()

    def error_reply(self, status: int) -> Reply:
        if status == 403:
            return Reply(403, {"id": 3010, "msg": "Generate Document has failed"})
        if status == 429:
            return Reply(429, {"error": "Too Many Requests"}, {"Retry-After": "60"})
        if status == 503:
            return Reply(503, {"error": "Service Unavailable: maintenance"}, {"Retry-After": "120"})
        if status == 500:
            return Reply(500, {"error": "Internal Server Error"})
        return Reply(status, {"error": str(status)})

    def handle(self, request: Request) -> Reply:
        if request.method == "POST" and request.path == TOKEN_PATH:
            return self._token(request)
        if request.method == "POST" and request.path == GENERATE_PATH:
            return self._generate(request)
        return Reply(404, {"error": "not found"})

    # --- OAuth2 ---------------------------------------------------------------------

    def _token(self, request: Request) -> Reply:
        self.token_requests += 1
        form = dict(parse_qsl(request.text))
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(auth[6:]).decode()
            except (binascii.Error, UnicodeDecodeError):
                decoded = ""
            client_id, _, client_secret = decoded.partition(":")
        if form.get("grant_type") != "client_credentials":
            return Reply(400, {"error": "unsupported_grant_type"})
        if client_id != self.client_id or client_secret != self.client_secret:
            return Reply(401, {"error": "invalid_client", "error_description": "Bad client credentials"})
        token = secrets.token_urlsafe(24)
        with self._tokens_lock:
            self._tokens[token] = time.monotonic() + self.token_ttl
        return Reply(200, {"access_token": token, "token_type": "bearer", "expires_in": self.token_ttl})

    def _valid(self, request: Request) -> bool:
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            return False
        with self._tokens_lock:
            expiry = self._tokens.get(auth[7:])
        return expiry is not None and time.monotonic() < expiry

    # --- generateDocument ------------------------------------------------------------

    def _limited(self) -> bool:
        if self.rate_limit is None:
            return False
        calls, period = self.rate_limit
        now = time.monotonic()
        with self._lock:
            while self._calls and now - self._calls[0] >= period:
                self._calls.popleft()
            if len(self._calls) >= calls:
                return True
            self._calls.append(now)
        return False

    def _generate(self, request: Request) -> Reply:
        if self.maintenance:
            return self.error_reply(503)
        if not self._valid(request):
            return Reply(
                401, {"error": "invalid_token", "error_description": "Access token expired or invalid"}
            )
        if len(request.body) > MAX_REQUEST_BYTES:
            return Reply(413, {"error": "Request Entity Too Large"})
        if self._limited():
            return self.error_reply(429)
        try:
            body = request.json()
        except ValueError:
            return Reply(400, {"error": "Bad Request", "message": "body is not JSON"})
        if not isinstance(body, dict):
            return Reply(400, {"error": "Bad Request", "message": "body is not a JSON object"})
        for required in ("includeDocumentData", "transactionData", "batchConfigResId"):
            if required not in body:
                return Reply(400, {"error": "Bad Request", "message": f"{required} is required"})
        batch = body["batchConfigResId"]
        if not isinstance(batch, int):
            return Reply(400, {"error": "Bad Request", "message": "batchConfigResId must be an integer"})
        if self.batch_config_ids is not None and batch not in self.batch_config_ids:
            return Reply(403, {"id": 2001, "msg": f"Resource {batch} is not a Template Selector"})
        data_type = body.get("transactionDataType") or "application/xml"
        try:
            data = base64.b64decode(body["transactionData"], validate=True)
        except (binascii.Error, TypeError, ValueError):
            return Reply(403, {"id": 3001, "msg": "transactionData is not valid base64"})
        transactions = self._transactions(data, data_type)
        if transactions is None:
            return Reply(403, {"id": 3002, "msg": f"transactionData is not valid {data_type}"})
        include = bool(body["includeDocumentData"])
        properties = body.get("properties") or []
        job = Job(batch, body.get("projectId"), data_type, data, properties, include)
        with self._lock:
            self.jobs.append(job)
        envelopes = []
        for index, transaction in enumerate(transactions):
            document = f"Document {index + 1} of batch {batch}: {transaction}".encode()
            primary: dict[str, Any] = {
                "startPage": 1,
                "pageCount": 1,
                "channelType": 4,
                "channelName": "TEXT",
                "properties": properties,
                "documentName": f"document-{index + 1}.txt",
                "mimeType": "text/plain",
                "channelId": 1,
            }
            if include:
                primary["data"] = base64.b64encode(document).decode()
            else:
                primary["partLocation"] = f"parts/{secrets.token_hex(8)}"
            envelopes.append({"primaryChannel": primary, "enclosureChannels": []})
        return Reply(
            200,
            {
                "exceptions": [],
                "numberTransactions": len(transactions),
                "envelopes": envelopes,
                "jobMessages": [{"msgID": 1, "msgType": "I", "msgText": "Job completed"}],
            },
        )

    @staticmethod
    def _transactions(data: bytes, data_type: str) -> list[str] | None:
        """One summary per transaction (a JSON array holds several), or None when unreadable."""
        if data_type == "application/json":
            try:
                parsed = json.loads(data)
            except ValueError:
                return None
            items = parsed if isinstance(parsed, list) else [parsed]
            return [json.dumps(item, sort_keys=True) for item in items]
        if data_type == "application/xml":
            parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
            try:
                root = etree.fromstring(data, parser)
            except etree.XMLSyntaxError:
                return None
            return [etree.tostring(root).decode()]
        return None
