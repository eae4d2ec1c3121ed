"""Hostile and broken input against gunicorn: status, fault, and the next normal call still works.

Body-limit cases use raw sockets, so the test controls exactly how much of a large
body is sent: the server must answer 413 without waiting for (or reading) the rest.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator

import httpx
import pytest

from provider.domain import Operation
from provider.soap.client import SoapFault, parse_answer
from provider.soap.contract import SOAP11_ENV, SOAP12_ENV
from tests.fixtures.server import AUTH, NAMESPACE, soap_request
from tests.support import ServerProcess, base_env, serve

pytestmark = pytest.mark.e2e

LIMIT = 65536
SECRET = "SuperSecret-portal-password-42"
LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    + "".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10 if i > 1 else "&lol;" * 10}">' for i in range(1, 10))
    + "]>"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp("hostile")
    env = base_env(f"sqlite:///{directory / 'provider.db'}", ST_PROVIDER_MAX_BODY_BYTES=str(LIMIT))
    with serve(env, directory / "server.log") as running:
        yield running
        log = running.log()
    # The workers were never replaced, and nothing logged a request body.
    assert len(re.findall(r"Booting worker", log)) == 2, log
    assert SECRET not in log
    assert "Traceback" not in log


def envelope(inner: str, *, soap12: bool = False, prolog: str = "") -> bytes:
    env = SOAP12_ENV if soap12 else SOAP11_ENV
    return (
        f'{prolog}<soap:Envelope xmlns:soap="{env}"><soap:Body>{inner}</soap:Body></soap:Envelope>'.encode()
    )


def op(values: str = AUTH, name: str = "StartChat") -> str:
    return (
        f'<{name} xmlns="{NAMESPACE}"><inputs><InputVariables><string>{values}</string>'
        f"</InputVariables></inputs></{name}>"
    )


def content_type(soap12: bool, charset: str | None = "utf-8") -> str:
    base = "application/soap+xml" if soap12 else "text/xml"
    return f"{base}; charset={charset}" if charset else base


def assert_next_call_works(server: ServerProcess, soap12: bool = False) -> None:
    body, headers = soap_request(Operation.GET_CUSTOM_FIELD_OPTIONS, [AUTH], soap12=soap12)
    response = httpx.post(server.endpoint, content=body, headers=headers, timeout=10)
    assert response.status_code == 200
    assert parse_answer(response.content, Operation.GET_CUSTOM_FIELD_OPTIONS).success is True


def assert_fault(response: httpx.Response, *, soap12: bool, status: int, text: str) -> None:
    assert response.status_code == status
    assert response.headers["content-type"] == content_type(soap12)
    with pytest.raises(SoapFault) as info:
        parse_answer(response.content, Operation.START_CHAT, status=response.status_code)
    assert info.value.code == ("soap:Sender" if soap12 else "soap:Client")
    assert text in info.value.message
    for leak in (b"Traceback", b".py", b"/work", SECRET.encode(), b"root:"):
        assert leak not in response.content


CASES = {
    "malformed": (lambda s: envelope(op(f"authPW={SECRET}"), soap12=s)[:-30], None, "not well-formed"),
    "empty": (lambda s: b"", None, "empty"),
    "billion-laughs": (lambda s: envelope(op("&lol9;"), soap12=s, prolog=LAUGHS), None, "DOCTYPE"),
    "external-entity": (
        lambda s: envelope(
            op("&x;"), soap12=s, prolog='<!DOCTYPE e [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        ),
        None,
        "DOCTYPE",
    ),
    "unknown-charset": (lambda s: envelope(op(), soap12=s), "klingon", "charset"),
    "charset-mismatch": (
        lambda s: envelope(op("name=Zo\xeb"), soap12=s).replace(b"\xc3\xab", b"\xeb"),
        "utf-8",
        "charset",
    ),
    "unknown-operation": (lambda s: envelope(op(name="DropTables"), soap12=s), None, "Unknown operation"),
}


@pytest.mark.parametrize("soap12", [False, True], ids=["soap11", "soap12"])
@pytest.mark.parametrize("case", list(CASES))
def test_broken_requests(server: ServerProcess, case: str, soap12: bool) -> None:
    build, charset, text = CASES[case]
    headers = {"Content-Type": content_type(soap12, charset or "utf-8")}
    response = httpx.post(server.endpoint, content=build(soap12), headers=headers, timeout=10)
    assert_fault(response, soap12=soap12, status=400 if soap12 else 500, text=text)
    assert_next_call_works(server, soap12)


def test_wrong_content_type(server: ServerProcess) -> None:
    body, _ = soap_request(Operation.START_CHAT, [AUTH])
    response = httpx.post(
        server.endpoint, content=body, headers={"Content-Type": "application/json"}, timeout=10
    )
    assert_fault(response, soap12=False, status=415, text="content type")
    assert_next_call_works(server)


def test_get_without_wsdl_is_the_help_page_and_other_methods_405(server: ServerProcess) -> None:
    response = httpx.get(server.endpoint, timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["allow"] == "GET, HEAD, POST"
    response = httpx.put(server.endpoint, timeout=10)
    assert_fault(response, soap12=False, status=405, text="POST")
    assert response.headers["allow"] == "GET, HEAD, POST"
    assert_next_call_works(server)


def _raw_exchange(server: ServerProcess, head: bytes, chunks: Iterator[bytes]) -> bytes:
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head)
        try:
            for chunk in chunks:
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may stop reading and close: that is what is being tested
        received = b""
        while b"\r\n\r\n" not in received:
            data = sock.recv(65536)
            if not data:
                break
            received += data
        return received


def test_declared_oversized_body_is_413_before_it_is_sent(server: ServerProcess) -> None:
    declared = 100 * 1024 * 1024
    head = (
        f"POST /ExternalProvider.asmx HTTP/1.1\r\nHost: {server.url[7:]}\r\n"
        f"Content-Type: text/xml; charset=utf-8\r\nContent-Length: {declared}\r\n\r\n"
    ).encode()
    # Only 1 KiB of the declared 100 MiB is ever sent; the answer must come anyway.
    answer = _raw_exchange(server, head, iter([b"<" * 1024]))
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert_next_call_works(server)


@pytest.mark.parametrize("soap12", [False, True], ids=["soap11", "soap12"])
def test_chunked_oversized_body_is_413(server: ServerProcess, soap12: bool) -> None:
    head = (
        f"POST /ExternalProvider.asmx HTTP/1.1\r\nHost: {server.url[7:]}\r\n"
        f"Content-Type: {content_type(soap12)}\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    piece = b"x" * 8192
    chunks = iter([b"2000\r\n" + piece + b"\r\n"] * ((LIMIT // 8192) + 4) + [b"0\r\n\r\n"])
    answer = _raw_exchange(server, head, chunks)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    expected = b"application/soap+xml" if soap12 else b"text/xml"
    assert b"Content-Type: " + expected in answer
    assert_next_call_works(server, soap12)


def test_chunked_body_within_the_limit_is_served(server: ServerProcess) -> None:
    body, headers = soap_request(Operation.START_CHAT, [AUTH])

    def stream() -> Iterator[bytes]:
        for i in range(0, len(body), 100):
            yield body[i : i + 100]

    response = httpx.post(server.endpoint, content=stream(), headers=headers, timeout=10)
    assert response.status_code == 200
    assert parse_answer(response.content, Operation.START_CHAT).success is True


def test_a_forged_host_does_not_poison_later_wsdls(server: ServerProcess) -> None:
    # Enough requests that every worker (and thread) sees the forged Host first.
    for _ in range(8):
        forged = httpx.get(f"{server.endpoint}?wsdl", headers={"Host": "attacker.example"}, timeout=10)
        assert b"http://attacker.example/ExternalProvider.asmx" in forged.content
    for _ in range(8):
        honest = httpx.get(f"{server.endpoint}?wsdl", timeout=10)
        assert b"attacker" not in honest.content
        assert honest.content.count(f"{server.endpoint}".encode()) == 2
