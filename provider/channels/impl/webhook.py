"""Webhooks: a JSON document POSTed to a URL (Slack, Teams, or any system that takes events).

The body is the notify parameter ``body`` (a rendered mapping, list or value) or, when
there is no ``body``, every notify parameter except ``headers``; it is serialised once
and those exact bytes are sent. With a ``secret`` the request carries
``X-Signature-256: sha256=<hex HMAC-SHA256 of the body bytes>`` (header name set by
``signature_header``), so a receiver verifies with its copy of the secret. Every request
carries ``Idempotency-Key: <delivery key>`` (stable across retries) so a receiver can
drop the duplicate an at-least-once delivery may produce.

Headers come from the ``headers`` setting, then the notify parameter ``headers``.
Any 2xx is success; other statuses map as in :mod:`provider.channels.impl.http`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

from provider.channels.base import SendResult
from provider.channels.impl import http
from provider.channels.specs import DEFAULT_SIGNATURE_HEADER, WEBHOOK_RESERVED_HEADERS
from provider.errors import ChannelError
from provider.redact import Redactor

TYPE_NAME = "webhook"


def signature(secret: str, body: bytes) -> str:
    """The signature header value for ``body``: ``sha256=<hex>``."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def encode_body(params: Mapping[str, Any]) -> bytes:
    """The exact JSON bytes sent for ``params`` (see the module docstring)."""
    body = params["body"] if "body" in params else {k: v for k, v in params.items() if k != "headers"}
    try:
        return json.dumps(body, ensure_ascii=False, separators=(",", ":"), default=str).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise ChannelError(f"{TYPE_NAME}: body cannot be written as JSON: {exc}", final=True) from exc


class WebhookChannel:
    """POSTs JSON to one URL, optionally signed; see the module docstring."""

    type_name = TYPE_NAME

    def __init__(
        self,
        name: str,
        *,
        url: str,
        headers: Mapping[str, str] | None = None,
        secret: str | None = None,
        signature_header: str = DEFAULT_SIGNATURE_HEADER,
        method: str = "POST",
        ca_file: str | None = None,
        proxy: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.name = name
        self.url = url
        self.method = method.upper()
        self.signature_header = signature_header
        self._headers = dict(headers or {})
        self._secret = secret
        self._redact = Redactor([secret, *self._headers.values()])
        self._endpoint = http.Endpoint(url, timeout=timeout, ca_file=ca_file, proxy=proxy)

    def send(self, params: Mapping[str, Any], *, delivery_key: str) -> SendResult:
        """POST the JSON body; raises ChannelError for a non-2xx answer or no answer."""
        body = encode_body(params)
        headers = {"Content-Type": "application/json", **self._headers}
        extra = params.get("headers")
        if extra is not None:
            if not isinstance(extra, Mapping):
                raise ChannelError(f"{TYPE_NAME}: notify parameter 'headers' must be a mapping", final=True)
            headers.update({str(k): str(v) for k, v in extra.items()})
        headers = {k: v for k, v in headers.items() if k.lower() not in WEBHOOK_RESERVED_HEADERS}
        headers["Idempotency-Key"] = delivery_key
        if self._secret:
            headers[self.signature_header] = signature(self._secret, body)
        response = self._endpoint.send(TYPE_NAME, self._redact, self.method, content=body, headers=headers)
        if 200 <= response.status_code < 300:
            partner_id = response.headers.get("X-Request-Id") or response.headers.get("X-Message-Id")
            return SendResult(
                partner_id=partner_id,
                status=response.status_code,
                detail=http.excerpt(http.response_text(response), self._redact) or None,
            )
        raise http.status_error(TYPE_NAME, response, self._redact)

    def close(self) -> None:
        self._endpoint.close()


def build(name: str, settings: Mapping[str, Any], timeout: float) -> WebhookChannel:
    return WebhookChannel(
        name,
        url=settings["url"],
        headers=settings["headers"],
        secret=settings["secret"],
        signature_header=settings["signature_header"],
        method=settings["method"],
        ca_file=settings["ca_file"],
        proxy=settings["proxy"],
        timeout=settings["timeout"] or timeout,
    )
