"""SmartConnect.com web service emulator (GetToken, validate, RunMapWithVariables, runmapxml).

Follows the seed: every call is a POST with query parameters (matched
case-insensitively, as the .NET service binds them). ``GetToken`` takes ``email``,
``password`` (plain, or SmartConnect's documented HMAC encoding) and ``companyID`` and
answers the token as a JSON string; wrong credentials get 401. ``validate`` answers
``true``/``false``. ``RunMapWithVariables`` takes ``[{"Key", "Value"}]``, ``runmapxml``
a ``<RequestData><Variables/><Xml>`` document; both answer ``true``, or ``false`` for a
map listed in :attr:`failing_maps`. An unknown or expired token gets 401, an unknown
map 404. The seed documents no error statuses; these are the emulator's choices.

Runs are listed in :attr:`SmartConnectEmulator.runs`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Any

from lxml import etree

from tests.emulators.base import Emulator, Reply, Request

HASH_KEY = "6clDgmNok3WtR8GKYW6N"


def encoded_password(password: str) -> str:
    digest = hmac.new(HASH_KEY.encode(), f"{password}:{HASH_KEY}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


@dataclass(frozen=True)
class MapRun:
    map_key: str
    kind: str  # "variables" or "xml"
    variables: dict[str, str]
    xml: str | None


class SmartConnectEmulator(Emulator):
    name = "smartconnect"

    def __init__(
        self,
        *,
        customer_id: str = "eone-42",
        email: str = "integration@example.org",
        password: str = "smartconnect-password",
        maps: set[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.customer_id = customer_id
        self.email = email
        self.password = password
        self.maps = maps if maps is not None else {"SEND_NOTIFICATION", "TICKET_SYNC"}
        self.failing_maps: set[str] = set()
        self.tokens: set[str] = set()
        self.runs: list[MapRun] = []
        self.token_requests = 0
        self.validations = 0

    def expire_tokens(self) -> None:
        """Every issued token becomes invalid (validate says false, runs get 401)."""
        with self._lock:
            self.tokens.clear()

    def handle(self, request: Request) -> Reply:
        if request.method != "POST":
            return Reply(405, "POST only")
        endpoint = request.path.strip("/").lower()
        if endpoint == "gettoken":
            return self._get_token(request)
        if endpoint == "validate":
            self.validations += 1
            return Reply(
                200, json.dumps(request.param("token") in self.tokens), content_type="application/json"
            )
        if endpoint in ("runmapwithvariables", "runmapxml"):
            if request.param("token") not in self.tokens:
                return Reply(401, "Authorization has been denied for this request.")
            map_key = request.param("mapKey") or ""
            if map_key not in self.maps:
                return Reply(404, f"Map {map_key} was not found")
            run = (
                self._variables(request, map_key)
                if endpoint == "runmapwithvariables"
                else self._xml(request, map_key)
            )
            if isinstance(run, Reply):
                return run
            with self._lock:
                self.runs.append(run)
            return Reply(200, json.dumps(map_key not in self.failing_maps), content_type="application/json")
        return Reply(404, "not found")

    def _get_token(self, request: Request) -> Reply:
        self.token_requests += 1
        password = request.param("password")
        ok = (
            request.param("email") == self.email
            and request.param("companyID") == self.customer_id
            and password in (self.password, encoded_password(self.password))
        )
        if not ok:
            return Reply(401, "Invalid email, password or company")
        token = secrets.token_hex(16)
        with self._lock:
            self.tokens.add(token)
        return Reply(200, json.dumps(token), content_type="application/json")

    @staticmethod
    def _variables(request: Request, map_key: str) -> MapRun | Reply:
        try:
            items = request.json()
        except ValueError:
            return Reply(400, "The request body is not valid JSON")
        if not isinstance(items, list) or not all(isinstance(i, dict) and "Key" in i for i in items):
            return Reply(400, 'Expected [{"Key": ..., "Value": ...}]')
        return MapRun(map_key, "variables", {str(i["Key"]): str(i.get("Value")) for i in items}, None)

    @staticmethod
    def _xml(request: Request, map_key: str) -> MapRun | Reply:
        parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
        try:
            root = etree.fromstring(request.body, parser)
        except etree.XMLSyntaxError:
            return Reply(400, "The request body is not valid XML")
        if etree.QName(root).localname != "RequestData" or root.find("Xml") is None:
            return Reply(400, "Expected <RequestData><Variables/><Xml>...</Xml></RequestData>")
        payload = root.findtext("Xml") or ""
        try:
            etree.fromstring(payload.encode(), parser)
        except etree.XMLSyntaxError:
            return Reply(400, "The Xml element does not hold an XML document")
        return MapRun(map_key, "xml", {}, payload)
