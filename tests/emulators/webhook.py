"""A webhook receiver: records JSON posts and verifies their HMAC-SHA256 signature.

With :attr:`secret` set, a request whose ``X-Signature-256`` (or
:attr:`signature_header`) is not ``sha256=<hex HMAC of the exact body bytes>`` is
answered 401 and not counted as delivered. Any path is accepted. :attr:`deliveries`
holds the parsed bodies of accepted requests; :meth:`by_key` groups them by their
``Idempotency-Key`` (to count duplicates).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections import defaultdict
from typing import Any

from tests.emulators.base import Emulator, Received, Reply, Request


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookReceiver(Emulator):
    name = "webhook"

    def __init__(
        self, *, secret: str | None = None, signature_header: str = "X-Signature-256", **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.secret = secret
        self.signature_header = signature_header
        self.status = 200

    def verify(self, request: Request) -> bool:
        """Whether ``request`` carries a valid signature for :attr:`secret`."""
        if self.secret is None:
            return True
        given = request.headers.get(self.signature_header.lower(), "")
        return hmac.compare_digest(given, sign(self.secret, request.body))

    def handle(self, request: Request) -> Reply:
        if request.method not in ("POST", "PUT"):
            return Reply(405, {"error": "method not allowed"})
        if not self.verify(request):
            return Reply(401, {"error": "bad signature"})
        if "json" not in request.headers.get("content-type", ""):
            return Reply(415, {"error": "expected application/json"})
        try:
            json.loads(request.body)
        except ValueError:
            return Reply(400, {"error": "body is not JSON"})
        return Reply(self.status, {"ok": True})

    @property
    def accepted(self) -> list[Received]:
        with self._lock:
            return [r for r in self.received if 200 <= r.status < 300]

    @property
    def deliveries(self) -> list[Any]:
        return [r.json() for r in self.accepted]

    def by_key(self) -> dict[str, list[Received]]:
        groups: dict[str, list[Received]] = defaultdict(list)
        for r in self.accepted:
            groups[r.headers.get("idempotency-key", "")].append(r)
        return dict(groups)
