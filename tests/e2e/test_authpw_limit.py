"""Wrong Web Service Passwords against a real gunicorn: 429 for that client address only.

The server trusts loopback as a proxy (the default ``ST_PROVIDER_TRUSTED_PROXIES``), so
the test speaks for several clients through ``X-Forwarded-For``, as nginx in front of
it would. One worker: the limit is counted per worker process (README), so one worker
makes "the sixth call is refused" exact.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from provider.calls import PERMISSION_DENIED
from provider.domain import Operation
from provider.soap.client import parse_answer
from tests.fixtures.server import AUTH, soap_request
from tests.support import base_env, serve

pytestmark = pytest.mark.e2e

LIMIT = 5
COOLDOWN = 60
WRONG = "authPW=Wrong-0815-never-logged"
ATTACKER = "203.0.113.7"


def post(http: httpx.Client, url: str, entry: str, forwarded: str | None) -> httpx.Response:
    body, headers = soap_request(Operation.START_CHAT, [entry])
    if forwarded is not None:
        headers["X-Forwarded-For"] = forwarded
    return http.post(url, content=body, headers=headers)


def answer(response: httpx.Response) -> tuple[bool, str | None]:
    assert response.status_code == 200, response.text[:300]
    result = parse_answer(response.content, Operation.START_CHAT)
    return result.success, result.message


def metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def events(log: str, name: str) -> list[dict[str, Any]]:
    entries = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    return [e for e in entries if e.get("event") == name]


def test_wrong_passwords_from_one_address_get_429_while_others_keep_working(
    sqlite_url: str, tmp_path: Path
) -> None:
    env = base_env(
        sqlite_url,
        ST_PROVIDER_AUTHPW_MAX_FAILURES=str(LIMIT),
        ST_PROVIDER_AUTHPW_COOLDOWN_SECONDS=str(COOLDOWN),
        ST_PROVIDER_LOG_FORMAT="json",
    )
    with serve(env, tmp_path / "server.log", workers=1) as server, httpx.Client(timeout=10) as http:
        for _ in range(LIMIT):
            assert answer(post(http, server.endpoint, WRONG, ATTACKER)) == (False, PERMISSION_DENIED)
        for entry in (WRONG, AUTH, AUTH):
            refused = post(http, server.endpoint, entry, ATTACKER)
            assert refused.status_code == 429
            assert 0 < int(refused.headers["retry-after"]) <= COOLDOWN
        # Another client behind the same proxy, and the proxy's own address, keep working.
        assert answer(post(http, server.endpoint, AUTH, "203.0.113.8")) == (True, "Chat Creation Successful")
        assert answer(post(http, server.endpoint, AUTH, None))[0] is True
        # The attacker cannot escape by naming another address before its own.
        assert post(http, server.endpoint, AUTH, f"198.51.100.1, {ATTACKER}").status_code == 429
        metrics = http.get(f"{server.url}/metrics").text
        assert metric(metrics, "st_provider_authpw_blocks_total") == 1
        assert metric(metrics, 'st_provider_soap_faults_total{reason="authpw_blocked"}') == 4
    log = server.log()
    (blocked,) = events(log, "security.authpw_blocked")
    assert (blocked["client"], blocked["failures"], blocked["cooldown_seconds"]) == (
        ATTACKER,
        LIMIT,
        COOLDOWN,
    )
    clients = [e["client"] for e in events(log, "soap.call")]
    assert clients == [ATTACKER] * LIMIT + ["203.0.113.8", "127.0.0.1"]
    assert "Wrong-0815" not in log
