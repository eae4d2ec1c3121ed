"""Slow clients against the real gunicorn: they cannot take the service down.

Raw sockets play the slow clients (one byte of headers then silence, a byte every
half second, a body shorter than its Content-Length, a client that neither reads its
answer nor closes) while httpx makes normal SOAP
calls, each of which must be answered within a second. A request that stalls gets
408 after ``ST_PROVIDER_REQUEST_READ_SECONDS``.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, suppress

import httpx
import pytest

from provider.domain import Operation
from provider.soap.client import parse_answer
from tests.fixtures.server import soap_request
from tests.support import ServerProcess, base_env, serve

pytestmark = pytest.mark.e2e

# 2 workers x 4 threads: twice as many slow clients as threads.
SLOW_CLIENTS = 16
CALL_BUDGET = 1.0


def address(server: ServerProcess) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def soap_bytes(server: ServerProcess, *, close: bool = False) -> bytes:
    body, headers = soap_request(Operation.GET_CUSTOM_FIELD_OPTIONS)
    host, port = address(server)
    head = f"POST /ExternalProvider.asmx HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: {len(body)}\r\n"
    if close:
        head += "Connection: close\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return head.encode() + b"\r\n" + body


def call(client: httpx.Client, server: ServerProcess) -> float:
    """One normal SOAP call; its duration in seconds."""
    body, headers = soap_request(Operation.GET_CUSTOM_FIELD_OPTIONS)
    started = time.monotonic()
    response = client.post(server.endpoint, content=body, headers=headers)
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert parse_answer(response.content, Operation.GET_CUSTOM_FIELD_OPTIONS).success is True
    return elapsed


class Trickler:
    """Sends one more byte of each request every ``interval`` seconds until stopped."""

    def __init__(self, sockets: list[tuple[socket.socket, bytes]], interval: float) -> None:
        self._sockets = sockets
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Trickler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        position = 0
        while not self._stop.wait(self._interval):
            for sock, data in self._sockets:
                if position < len(data) - 1:  # never the last byte: the request stays open
                    with suppress(OSError):
                        sock.sendall(data[position : position + 1])
            position += 1


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The default read deadline (10 s): longer than the test holds its slow clients."""
    directory = tmp_path_factory.mktemp("slow")
    env = base_env(f"sqlite:///{directory / 'provider.db'}")
    with serve(env, directory / "server.log") as running:
        yield running


def test_normal_calls_are_answered_while_slow_clients_hold_connections(server: ServerProcess) -> None:
    request = soap_bytes(server)
    with ExitStack() as stack:
        stalled, trickling = [], []
        for index in range(SLOW_CLIENTS):
            sock = stack.enter_context(socket.create_connection(address(server), timeout=5))
            if index == 0:  # a body shorter than its Content-Length
                sock.sendall(request[:-20])
            elif index % 3 == 0:  # answered with Connection: close, but never reads or closes
                sock.sendall(soap_bytes(server, close=True))
            elif index % 3 == 1:  # one byte of the request line, then nothing
                sock.sendall(request[:1])
                stalled.append(sock)
            else:
                trickling.append((sock, request))
        with Trickler(trickling, 0.5), httpx.Client(timeout=5) as client:
            time.sleep(1.0)  # every slow client has started (and trickled a byte or two)
            durations = [call(client, server) for _ in range(4)]
            # New connections too, not only a kept-alive one.
            for _ in range(4):
                with httpx.Client(timeout=5) as fresh:
                    durations.append(call(fresh, server))
        assert max(durations) < CALL_BUDGET, durations
        # The slow clients were held, not refused: none of them has been answered.
        for sock in stalled:
            sock.setblocking(False)
            with pytest.raises(BlockingIOError):
                sock.recv(1)


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One worker (every connection meets the same event loop), a read deadline of 1 s."""
    directory = tmp_path_factory.mktemp("deadline")
    env = base_env(
        f"sqlite:///{directory / 'provider.db'}",
        ST_PROVIDER_REQUEST_READ_SECONDS="1",
        ST_PROVIDER_LOG_FORMAT="json",
    )
    with serve(env, directory / "server.log", workers=1) as running:
        yield running


def test_answered_clients_that_never_close_do_not_stall_the_worker(one_worker: ServerProcess) -> None:
    """gthread waits up to 2 s per such client in its event loop; 3 of them held it 6 s."""
    with ExitStack() as stack:
        for _ in range(3):
            sock = stack.enter_context(socket.create_connection(address(one_worker), timeout=5))
            sock.sendall(soap_bytes(one_worker, close=True))
        time.sleep(0.3)  # all three answered
        with httpx.Client(timeout=10) as client:
            durations = [call(client, one_worker) for _ in range(2)]
        assert max(durations) < CALL_BUDGET, durations


def test_a_stalled_request_gets_408_after_the_read_deadline(one_worker: ServerProcess) -> None:
    request = soap_bytes(one_worker)
    cases = {"headers": request[:10], "body": request[:-20], "nothing": b""}
    answers: dict[str, bytes] = {}
    with ExitStack() as stack:
        socks = {}
        for case, data in cases.items():
            sock = stack.enter_context(socket.create_connection(address(one_worker), timeout=6))
            sock.sendall(data)
            socks[case] = sock
        started = time.monotonic()
        for case, sock in socks.items():
            answers[case] = read_all(sock)
        waited = time.monotonic() - started
    # A kept-alive connection gets a fresh deadline for its next request.
    with socket.create_connection(address(one_worker), timeout=6) as sock:
        sock.sendall(request)
        first = read_response(sock)
        time.sleep(0.5)
        sock.sendall(request[:30])
        second = read_all(sock)
    log = one_worker.log()
    for case in ("headers", "body"):
        assert answers[case].startswith(b"HTTP/1.1 408 Request Timeout\r\n"), answers[case]
        assert b"\r\nConnection: close\r\n" in answers[case]
    assert answers["nothing"] == b""  # nothing sent: closed without an answer
    assert waited < 5
    assert first.startswith(b"HTTP/1.1 200 ")
    assert second.startswith(b"HTTP/1.1 408 ")
    events = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    timeouts = [e for e in events if e.get("event") == "http.request_timeout"]
    assert len(timeouts) == 3
    assert {e["headers_complete"] for e in timeouts} == {True, False}


def test_expect_continue_and_pipelined_requests(one_worker: ServerProcess) -> None:
    request = soap_bytes(one_worker)
    head, _, body = request.partition(b"\r\n\r\n")
    with socket.create_connection(address(one_worker), timeout=6) as sock:
        sock.sendall(head + b"\r\nExpect: 100-continue\r\n\r\n")
        assert sock.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        answer = read_response(sock)
        # Two requests in one write: both answered, in order, on the same connection.
        sock.sendall(request + request)
        second, third = read_response(sock), read_response(sock)
    assert answer.startswith(b"HTTP/1.1 200 ")  # one interim answer only, then the real one
    assert second.startswith(b"HTTP/1.1 200 ") and third.startswith(b"HTTP/1.1 200 ")


def read_response(sock: socket.socket) -> bytes:
    """One whole response with a Content-Length (the connection stays open; nothing read past it)."""
    data = b""
    while not data.endswith(b"\r\n\r\n"):
        data += sock.recv(1)
    length = int(data.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    while length:
        chunk = sock.recv(length)
        data, length = data + chunk, length - len(chunk)
    return data


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    parts = []
    while chunk := sock.recv(65536):
        parts.append(chunk)
    return b"".join(parts)
