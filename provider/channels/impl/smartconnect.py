"""SmartConnect.com web service: run a map (integration process) with variables or XML.

Authentication: ``POST {api_url}/GetToken?email=&password=&companyID=`` gives a token
(valid for months). It is cached; once it is older than ``revalidate_after`` seconds
(default 300) it is checked with ``POST {api_url}/validate?token=`` before use and
fetched again when SmartConnect says it is no longer valid. A 401 on a run drops the
token and fetches a new one once. With ``hash_password: true`` the password is sent as
``base64(HMAC-SHA256("<password>:<key>", key))`` as SmartConnect's documentation allows,
instead of in plain text.

Runs: ``POST {api_url}/RunMapWithVariables?token=&mapKey=`` with ``[{"Key", "Value"}]``
(notify parameter ``variables``: a mapping or that list), or
``POST {api_url}/runmapxml?token=&mapkey=`` with ``<RequestData><Variables/><Xml>...``
(notify parameter ``xml``: the payload, XML-escaped into ``<Xml>``). ``map_key`` is
required. An answer of ``false`` means SmartConnect did not run the map: final.

The token and password travel in query strings (SmartConnect's design); they are
redacted from every message, and httpx's request logging is held at WARNING.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any
from xml.sax.saxutils import escape

import httpx

from provider.channels.base import SendResult
from provider.channels.impl import http
from provider.errors import ChannelError
from provider.redact import Redactor

log = logging.getLogger(__name__)

TYPE_NAME = "smartconnect"
#: the shared key of SmartConnect's documented password hashing (public, from its docs)
PASSWORD_HASH_KEY = "6clDgmNok3WtR8GKYW6N"  # noqa: S105 (published, not a secret)
XSI = "http://www.w3.org/2001/XMLSchema-instance"


def encode_password(password: str) -> str:
    """SmartConnect's optional encoded password: base64(HMAC-SHA256("password:key", key))."""
    digest = hmac.new(
        PASSWORD_HASH_KEY.encode(), f"{password}:{PASSWORD_HASH_KEY}".encode(), hashlib.sha256
    ).digest()
    return base64.b64encode(digest).decode("ascii")


def _answer(response: httpx.Response) -> Any:
    text = http.response_text(response).strip()
    try:
        return json.loads(text)
    except ValueError:
        return text


def variables_body(value: Any) -> list[dict[str, str]]:
    """``[{"Key", "Value"}]`` from a mapping or such a list."""
    if isinstance(value, Mapping):
        return [{"Key": str(k), "Value": "" if v is None else str(v)} for k, v in value.items()]
    if isinstance(value, Sequence) and not isinstance(value, str):
        out = []
        for item in value:
            if not isinstance(item, Mapping) or "Key" not in item:
                break
            out.append(
                {"Key": str(item["Key"]), "Value": "" if item.get("Value") is None else str(item["Value"])}
            )
        else:
            return out
    raise ChannelError(f"{TYPE_NAME}: variables must be a mapping or a list of {{Key, Value}}", final=True)


def xml_body(payload: str) -> bytes:
    """The runmapxml request: the payload XML-escaped inside ``<Xml>``."""
    return (f'<RequestData xmlns:i="{XSI}"><Variables/><Xml>{escape(payload)}</Xml></RequestData>').encode()


class SmartConnectChannel:
    """Runs SmartConnect maps; see the module docstring."""

    type_name = TYPE_NAME

    def __init__(
        self,
        name: str,
        *,
        api_url: str,
        customer_id: str,
        email: str,
        password: str,
        hash_password: bool = False,
        revalidate_after: float = 300.0,
        ca_file: str | None = None,
        proxy: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.name = name
        self.api_url = api_url.rstrip("/")
        self.customer_id = customer_id
        self.email = email
        self._password = encode_password(password) if hash_password else password
        self.revalidate_after = revalidate_after
        self._redact = Redactor([password, self._password])
        self._client = http.make_client(timeout=timeout, ca_file=ca_file, proxy=proxy)
        self._lock = threading.Lock()
        self._token: str | None = None
        self._checked_at = 0.0
        self.tokens_fetched = 0

    def _call(self, path: str, params: Mapping[str, str], **kwargs: Any) -> httpx.Response:
        return http.send(
            self._client, TYPE_NAME, self._redact, "POST", f"{self.api_url}/{path}", params=params, **kwargs
        )

    # --- token ----------------------------------------------------------------------

    def _fetch_token(self) -> str:
        response = self._call(
            "GetToken", {"email": self.email, "password": self._password, "companyID": self.customer_id}
        )
        answer = _answer(response)
        if response.status_code in (400, 401, 403):
            raise http.status_error(
                TYPE_NAME,
                response,
                self._redact,
                message="GetToken refused: wrong email, password or customer id",
                partner_code="token_refused",
            )
        if response.status_code != 200:
            raise http.status_error(TYPE_NAME, response, self._redact, partner_code="token")
        if not isinstance(answer, str) or not answer or answer.lower() in ("false", "null"):
            raise ChannelError(
                f"{TYPE_NAME}: GetToken gave no token: wrong email, password or customer id",
                final=True,
                status=200,
                partner_code="token_refused",
            )
        self._redact.add(answer)
        self.tokens_fetched += 1
        log.info("SmartConnect token fetched", extra={"event": "channel.token.fetched", "channel": self.name})
        return answer

    def _validate(self, token: str) -> bool:
        response = self._call("validate", {"token": token})
        if response.status_code != 200:
            if response.status_code == 401:
                return False
            raise http.status_error(TYPE_NAME, response, self._redact, partner_code="validate")
        answer = _answer(response)
        return answer is True or (isinstance(answer, str) and answer.lower() == "true")

    def _current_token(self, *, stale: str | None = None) -> str:
        with self._lock:
            now = time.monotonic()
            token = self._token
            if token is not None and token != stale and now - self._checked_at >= self.revalidate_after:
                if not self._validate(token):
                    log.info(
                        "SmartConnect token no longer valid",
                        extra={"event": "channel.token.invalid", "channel": self.name},
                    )
                    token = None
                else:
                    self._checked_at = now
            if token is None or token == stale:
                fresh = self._fetch_token()
                if self._token is not None:
                    self._redact.discard(self._token)
                self._token = token = fresh
                self._checked_at = time.monotonic()
            return token

    # --- sending --------------------------------------------------------------------

    def send(self, params: Mapping[str, Any], *, delivery_key: str) -> SendResult:
        """Run the map; raises ChannelError when SmartConnect refuses or fails."""
        map_key = params.get("map_key")
        if map_key is None or str(map_key).strip() == "":
            raise ChannelError(f"{TYPE_NAME}: notify parameter 'map_key' is required", final=True)
        map_key = str(map_key).strip()
        xml = params.get("xml")
        if xml is not None and str(xml).strip() != "":
            if params.get("variables"):
                raise ChannelError(f"{TYPE_NAME}: give either 'variables' or 'xml', not both", final=True)
            path, key_name = "runmapxml", "mapkey"
            body = xml_body(str(xml))
            headers = {"Content-Type": "application/xml"}
        else:
            path, key_name = "RunMapWithVariables", "mapKey"
            body = json.dumps(variables_body(params.get("variables") or {})).encode("utf-8")
            headers = {"Content-Type": "application/json"}
        token = self._current_token()
        response = self._call(path, {"token": token, key_name: map_key}, content=body, headers=headers)
        if response.status_code == 401:
            token = self._current_token(stale=token)
            response = self._call(path, {"token": token, key_name: map_key}, content=body, headers=headers)
        if response.status_code != 200:
            raise http.status_error(TYPE_NAME, response, self._redact)
        answer = _answer(response)
        if answer is False or (isinstance(answer, str) and answer.lower() == "false"):
            raise ChannelError(
                f"{TYPE_NAME}: map {map_key!r} did not run (SmartConnect answered false)",
                final=True,
                status=200,
                partner_code="map_failed",
            )
        detail = http.excerpt(json.dumps(answer) if not isinstance(answer, str) else answer, self._redact)
        return SendResult(partner_id=None, status=200, detail=detail)

    def close(self) -> None:
        self._client.close()


def build(name: str, settings: Mapping[str, Any], timeout: float) -> SmartConnectChannel:
    return SmartConnectChannel(
        name,
        api_url=settings["api_url"],
        customer_id=settings["customer_id"],
        email=settings["email"],
        password=settings["password"],
        hash_password=settings["hash_password"],
        revalidate_after=settings["revalidate_after"],
        ca_file=settings["ca_file"],
        proxy=settings["proxy"],
        timeout=settings["timeout"] or timeout,
    )
