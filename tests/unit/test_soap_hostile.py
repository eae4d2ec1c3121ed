"""Hostile and broken input, in-process: each case gets its status and fault, and the next call works.

The same cases run against gunicorn in tests/e2e/test_hostile_inputs.py; here they are
cheap enough to cover every variant and to look at the logs.
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import pytest

from provider.app import ProviderApplication, build_application
from provider.calls import Provider
from provider.domain import Operation
from provider.settings import Secret, Settings
from provider.soap.client import SoapFault, parse_answer
from provider.soap.contract import SOAP11_ENV, SOAP12_ENV
from tests.fixtures.server import AUTH, NAMESPACE, WsgiResult, soap_request, wsgi_call
from tests.support import WEB_SERVICE_PASSWORD

LIMIT = 4096
SECRET = "SuperSecret-portal-password-42"


@pytest.fixture
def app(tmp_path: Path) -> ProviderApplication:
    settings = Settings.from_mapping(
        {
            "web_service_password": WEB_SERVICE_PASSWORD,
            "database_url": f"sqlite:///{tmp_path / 'unused.db'}",
            "max_body_bytes": str(LIMIT),
        }
    )
    return build_application(settings, provider=Provider(Secret(WEB_SERVICE_PASSWORD)))


def envelope(inner: str, *, soap12: bool = False, prolog: str = "") -> bytes:
    env = SOAP12_ENV if soap12 else SOAP11_ENV
    return (
        f'{prolog}<soap:Envelope xmlns:soap="{env}"><soap:Body>{inner}</soap:Body></soap:Envelope>'.encode()
    )


def operation(values: str = AUTH, name: str = "StartChat", namespace: str = NAMESPACE) -> str:
    return (
        f'<{name} xmlns="{namespace}"><inputs><InputVariables><string>{values}</string>'
        f"</InputVariables></inputs></{name}>"
    )


LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    + "".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10 if i > 1 else "&lol;" * 10}">' for i in range(1, 10))
    + "]>"
)
XXE = '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'


def content_type(soap12: bool, charset: str | None = "utf-8") -> dict[str, str]:
    base = "application/soap+xml" if soap12 else "text/xml"
    return {"Content-Type": f"{base}; charset={charset}" if charset else base}


def assert_fault(
    result: WsgiResult, *, soap12: bool, status: int | None = None, code: str | None = None
) -> SoapFault:
    expected_status = status or (400 if soap12 else 500)
    assert result.status == expected_status
    assert (
        result.header("content-type")
        == ("application/soap+xml" if soap12 else "text/xml") + "; charset=utf-8"
    )
    with pytest.raises(SoapFault) as info:
        parse_answer(result.body, Operation.START_CHAT, status=result.status)
    fault = info.value
    assert fault.code == (code or ("soap:Sender" if soap12 else "soap:Client"))
    assert len(fault.message) < 120
    for leak in (b"Traceback", b"File ", b".py", b"/work", b"site-packages", b"root:", SECRET.encode()):
        assert leak not in result.body
    return fault


def assert_next_call_works(app: ProviderApplication, soap12: bool) -> None:
    body, headers = soap_request(Operation.START_CHAT, [AUTH], soap12=soap12)
    result = wsgi_call(app, body=body, headers=headers)
    assert result.status == 200
    assert parse_answer(result.body, Operation.START_CHAT).success is True


@dataclass(frozen=True)
class Case:
    body: str | bytes
    message: str
    reason: str
    charset: str | None = "utf-8"
    status: int | None = None
    code: str | None = None


def _cases(soap12: bool) -> dict[str, Case]:
    other = not soap12
    return {
        "malformed": Case(
            envelope(operation(f"authPW={SECRET}"), soap12=soap12)[:-20], "not well-formed", "malformed"
        ),
        "not-xml": Case(f"authPW={SECRET}", "not well-formed", "malformed"),
        "empty": Case(b"", "empty", "empty"),
        "whitespace": Case(b"  \r\n ", "empty", "empty"),
        "billion-laughs": Case(
            envelope(operation("&lol9;"), soap12=soap12, prolog=LAUGHS), "DOCTYPE", "doctype"
        ),
        "external-entity": Case(
            envelope(operation("&xxe;"), soap12=soap12, prolog=XXE), "DOCTYPE", "doctype"
        ),
        "bare-doctype": Case(
            envelope(operation(), soap12=soap12, prolog="<!DOCTYPE Envelope>"), "DOCTYPE", "doctype"
        ),
        "undefined-entity": Case(envelope(operation("&xxe;"), soap12=soap12), "not well-formed", "malformed"),
        "deep-nesting": Case(
            envelope(operation("<a>" * 400 + "</a>" * 400), soap12=soap12), "not well-formed", "malformed"
        ),
        "unknown-charset": Case(
            envelope(operation(), soap12=soap12), "charset", "charset", charset="klingon"
        ),
        "charset-mismatch": Case(
            envelope(operation(f"{AUTH};name=Zoë"), soap12=soap12).replace(
                "ë".encode(), "ë".encode("latin-1")
            ),
            "does not match its charset",
            "charset",
        ),
        "unknown-operation": Case(
            envelope(operation(name="DropTables"), soap12=soap12), "Unknown operation", "unknown_operation"
        ),
        "no-namespace": Case(
            envelope("<StartChat><inputs/></StartChat>", soap12=soap12),
            "Unknown operation",
            "unknown_operation",
        ),
        "type-mismatch": Case(
            envelope(
                f'<StartChat xmlns="{NAMESPACE}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
                'xmlns:xs="http://www.w3.org/2001/XMLSchema"><inputs><InputVariables>'
                '<string xsi:type="xs:int">not-a-number</string></InputVariables></inputs></StartChat>',
                soap12=soap12,
            ),
            "does not match the contract",
            "invalid",
        ),
        "empty-body": Case(envelope("", soap12=soap12), "no operation", "no_operation"),
        "not-an-envelope": Case(f"<StartChat xmlns='{NAMESPACE}'/>", "not a SOAP envelope", "not_envelope"),
        "version-mismatch": Case(
            envelope(operation(), soap12=other),
            "envelope sent with the SOAP",
            "version_mismatch",
            status=500,
            code="soap:VersionMismatch",
        ),
    }


CASE_NAMES = list(_cases(False))


@pytest.mark.parametrize("soap12", [False, True], ids=["soap11", "soap12"])
@pytest.mark.parametrize("name", CASE_NAMES)
def test_broken_request_gets_a_short_fault_in_its_soap_version(
    app: ProviderApplication, name: str, soap12: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    case = _cases(soap12)[name]
    body = case.body.encode() if isinstance(case.body, str) else case.body
    result = wsgi_call(app, body=body, headers=content_type(soap12, case.charset))
    fault = assert_fault(result, soap12=soap12, status=case.status, code=case.code)
    assert case.message in fault.message
    calls = [r for r in caplog.records if getattr(r, "event", None) == "soap.call"]
    assert [(r.outcome, r.fault) for r in calls] == [("fault", case.reason)]
    # Nothing logged the request (it can carry portal passwords), at any level.
    for record in caplog.records:
        assert SECRET not in json.dumps(vars(record), default=str) + record.getMessage()
    assert_next_call_works(app, soap12)


def test_wrong_content_type_is_415(app: ProviderApplication) -> None:
    body, _ = soap_request(Operation.START_CHAT, [AUTH])
    for headers in ({"Content-Type": "application/json"}, {"Content-Type": "application/xml"}, {}):
        result = wsgi_call(app, body=body, headers=headers)
        fault = assert_fault(result, soap12=False, status=415)
        assert "content type" in fault.message
    assert_next_call_works(app, False)


@pytest.mark.parametrize("method", ["PUT", "DELETE", "OPTIONS"])
def test_other_methods_are_405(app: ProviderApplication, method: str) -> None:
    result = wsgi_call(app, method)
    assert_fault(result, soap12=False, status=405)
    assert "POST" in (result.header("allow") or "")
    assert_next_call_works(app, False)


class RecordingStream:
    """A request body of ``size`` bytes that counts what is read from it."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.consumed = 0

    def read(self, n: int = -1) -> bytes:
        n = self.size - self.consumed if n < 0 else min(n, self.size - self.consumed)
        self.consumed += n
        return b"x" * n


def test_declared_length_over_the_limit_is_413_without_reading(app: ProviderApplication) -> None:
    stream = RecordingStream(50 * 1024 * 1024)
    headers = {**content_type(False), "Content-Length": str(stream.size)}
    result = wsgi_call(app, headers=headers, stream=stream)
    fault = assert_fault(result, soap12=False, status=413)
    assert str(LIMIT) in fault.message
    assert stream.consumed == 0
    assert_next_call_works(app, False)


@pytest.mark.parametrize("soap12", [False, True], ids=["soap11", "soap12"])
def test_chunked_body_over_the_limit_is_413_after_reading_just_past_it(
    app: ProviderApplication, soap12: bool
) -> None:
    stream = RecordingStream(50 * 1024 * 1024)
    result = wsgi_call(app, headers=content_type(soap12), stream=stream)
    assert_fault(result, soap12=soap12, status=413)
    assert stream.consumed == LIMIT + 1
    assert_next_call_works(app, soap12)


def test_chunked_body_within_the_limit_is_served(app: ProviderApplication) -> None:
    body, headers = soap_request(Operation.START_CHAT, [AUTH])
    result = wsgi_call(app, headers=headers, stream=io.BytesIO(body))
    assert result.status == 200 and parse_answer(result.body, Operation.START_CHAT).success is True


def test_a_body_of_exactly_the_limit_is_read(app: ProviderApplication) -> None:
    body, headers = soap_request(Operation.START_CHAT, [AUTH, "pad=" + "p" * LIMIT])
    filler = LIMIT - len(soap_request(Operation.START_CHAT, [AUTH, "pad="])[0])
    body, headers = soap_request(Operation.START_CHAT, [AUTH, "pad=" + "p" * filler])
    assert len(body) == LIMIT
    assert wsgi_call(app, body=body, headers=headers).status == 200
    body, headers = soap_request(Operation.START_CHAT, [AUTH, "pad=" + "p" * (filler + 1)])
    assert wsgi_call(app, body=body, headers=headers).status == 413


def test_invalid_content_length_is_400(app: ProviderApplication) -> None:
    result = wsgi_call(
        app, headers={**content_type(False), "Content-Length": "12abc"}, stream=io.BytesIO(b"<x/>")
    )
    assert_fault(result, soap12=False, status=400)
    assert_next_call_works(app, False)
