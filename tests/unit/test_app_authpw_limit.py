"""Wrong Web Service Passwords through the real WSGI application: 429 per client address."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from provider.app import ProviderApplication, build_application
from provider.calls import PERMISSION_DENIED, Provider
from provider.domain import Operation
from provider.password_limiter import PasswordFailureLimiter
from provider.settings import Secret, Settings
from provider.soap.client import parse_answer
from tests.fixtures.server import AUTH, WsgiResult, soap_request, wsgi_call
from tests.support import WEB_SERVICE_PASSWORD

WRONG = "authPW=wrong"


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def make_app(tmp_path: Path, clock: Clock, **values: object) -> ProviderApplication:
    settings = Settings.from_mapping(
        {
            "web_service_password": WEB_SERVICE_PASSWORD,
            "database_url": f"sqlite:///{tmp_path / 'unused.db'}",
            "authpw_max_failures": 3,
            "authpw_cooldown_seconds": 45,
            **values,
        }
    )
    app = build_application(settings, provider=Provider(Secret(WEB_SERVICE_PASSWORD)))
    assert app.limiter is not None and app.limiter.max_failures == settings.password_limit.max_failures
    app.limiter = PasswordFailureLimiter.from_settings(settings.password_limit, clock=clock)
    return app


def call(
    app: ProviderApplication, entry: str, *, peer: str = "192.0.2.10", forwarded: str | None = None
) -> WsgiResult:
    body, headers = soap_request(Operation.START_CHAT, [entry])
    if forwarded is not None:
        headers["X-Forwarded-For"] = forwarded
    return wsgi_call(app, body=body, headers=headers, remote_addr=peer)


def succeeded(result: WsgiResult) -> bool:
    return result.status == 200 and parse_answer(result.body, Operation.START_CHAT).success


def blocks_total() -> float:
    return REGISTRY.get_sample_value("st_provider_authpw_blocks_total") or 0.0


def refused_total() -> float:
    return REGISTRY.get_sample_value("st_provider_soap_faults_total", {"reason": "authpw_blocked"}) or 0.0


def test_wrong_passwords_block_the_address_with_retry_after(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    clock = Clock()
    app = make_app(tmp_path, clock)
    blocks, refused = blocks_total(), refused_total()
    for _ in range(3):
        answer = call(app, WRONG)
        assert answer.status == 200
        assert parse_answer(answer.body, Operation.START_CHAT).message == PERMISSION_DENIED
    clock.now += 5
    for _ in range(4):
        # The correct password too: the block would mean nothing otherwise.
        blocked = call(app, AUTH)
        assert blocked.status == 429
        assert blocked.header("retry-after") == "40"
        assert blocked.header("content-type") == "text/plain; charset=utf-8"
        assert blocked.header("x-request-id")
        assert b"Permission" not in blocked.body and WEB_SERVICE_PASSWORD.encode() not in blocked.body
    # Logged once per block (not per refused request), counted per block and per request.
    events = [r for r in caplog.records if getattr(r, "event", None) == "security.authpw_blocked"]
    assert [(r.client, r.failures, r.cooldown_seconds) for r in events] == [("192.0.2.10", 3, 45)]
    assert [r.outcome for r in caplog.records if getattr(r, "event", None) == "soap.call"] == ["failure"] * 3
    assert blocks_total() - blocks == 1
    assert refused_total() - refused == 4
    # Other addresses keep working.
    assert succeeded(call(app, AUTH, peer="192.0.2.11"))
    # After the cooldown the address works again.
    clock.now += 40
    assert succeeded(call(app, AUTH))


def test_the_body_of_a_blocked_request_is_not_read(tmp_path: Path) -> None:
    clock = Clock()
    app = make_app(tmp_path, clock)
    for _ in range(3):
        call(app, WRONG)
    body, headers = soap_request(Operation.START_CHAT, [AUTH])
    stream = io.BytesIO(body)
    result = wsgi_call(app, headers={**headers, "Content-Length": str(len(body))}, stream=stream)
    assert result.status == 429
    assert stream.tell() == 0


def test_correct_passwords_and_other_failures_are_not_counted(tmp_path: Path) -> None:
    clock = Clock()
    app = make_app(tmp_path, clock)
    body = b"<not-xml"
    for _ in range(10):
        assert succeeded(call(app, AUTH))
        assert wsgi_call(app, body=body, headers={"Content-Type": "text/xml"}).status == 500
    assert call(app, WRONG).status == 200
    assert len(app.limiter or []) == 1


def test_the_client_behind_a_trusted_proxy_is_the_forwarded_address(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    clock = Clock()
    app = make_app(tmp_path, clock, trusted_proxies="10.0.0.5")
    for _ in range(3):
        call(app, WRONG, peer="10.0.0.5", forwarded="1.1.1.1, 203.0.113.7")
    assert call(app, AUTH, peer="10.0.0.5", forwarded="203.0.113.7").status == 429
    # Another client behind the same proxy, and the proxy itself, keep working.
    assert succeeded(call(app, AUTH, peer="10.0.0.5", forwarded="203.0.113.8"))
    assert succeeded(call(app, AUTH, peer="10.0.0.5"))
    # An untrusted peer cannot claim the blocked address, nor escape by naming another.
    assert succeeded(call(app, AUTH, peer="192.0.2.99", forwarded="203.0.113.7"))
    clients = {r.client for r in caplog.records if getattr(r, "event", None) == "soap.call"}
    assert clients == {"203.0.113.7", "203.0.113.8", "10.0.0.5", "192.0.2.99"}


def test_zero_turns_the_limit_off(tmp_path: Path) -> None:
    app = make_app(tmp_path, Clock(), authpw_max_failures=0)
    for _ in range(30):
        assert call(app, WRONG).status == 200
    assert succeeded(call(app, AUTH))
