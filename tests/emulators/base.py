"""A small real HTTP server on loopback for partner emulators.

An :class:`Emulator` runs ``http.server.ThreadingHTTPServer`` in a daemon thread on
``127.0.0.1`` (a free port, kept across :meth:`Emulator.stop` / :meth:`Emulator.start`
so a test can take the partner down for a while and bring it back at the same URL).
Subclasses implement :meth:`Emulator.handle` from the seed documents. Every request
is recorded in :attr:`Emulator.received` (with the status it was answered with), so
tests in this process see what worker processes sent.

Failures are scripted with :meth:`Emulator.script`: ``script(429, 500, 200,
retry_after=3)`` answers the next three requests 429 (with ``Retry-After: 3``), 500,
and then normally (``200`` or ``None`` mean "let the emulator answer"); a
:class:`Reply` gives full control (body, headers, delay, or ``drop`` to close the
connection without answering). :attr:`Emulator.delay` slows every answer.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

MAX_BODY = 64 * 1024 * 1024
REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    413: "Payload Too Large",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


@dataclass
class Reply:
    """One answer. ``body`` may be bytes, str, or anything JSON-serialisable."""

    status: int = 200
    body: Any = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False
    content_type: str | None = None

    def encoded(self) -> tuple[bytes, str]:
        if isinstance(self.body, bytes):
            return self.body, self.content_type or "application/octet-stream"
        if isinstance(self.body, str):
            return self.body.encode("utf-8"), self.content_type or "text/plain; charset=utf-8"
        return json.dumps(self.body).encode("utf-8"), self.content_type or "application/json"


@dataclass(frozen=True)
class Request:
    """One request as received (header names lower-cased; query keys as sent)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body)

    def param(self, name: str) -> str | None:
        """A query parameter, matched case-insensitively (as .NET Web API binds them)."""
        for key, value in self.query.items():
            if key.lower() == name.lower():
                return value
        return None


@dataclass(frozen=True)
class Received(Request):
    """A recorded request and the status it was answered with (0: connection dropped)."""

    status: int = 0


@dataclass
class _Scripted:
    reply: Reply | None  # None: answer normally
    path: str | None


class Emulator:
    """Base class: subclasses implement :meth:`handle`. See the module docstring."""

    name = "emulator"

    def __init__(self, *, tls: ssl.SSLContext | None = None) -> None:
        self.received: list[Received] = []
        self.delay = 0.0
        self._tls = tls
        self._lock = threading.Lock()
        self._script: list[_Scripted] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._port = 0

    # --- lifecycle ----------------------------------------------------------------

    @property
    def url(self) -> str:
        scheme = "https" if self._tls else "http"
        return f"{scheme}://127.0.0.1:{self._port}"

    @property
    def port(self) -> int:
        return self._port

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> Emulator:
        """Start serving (again, on the same port after :meth:`stop`)."""
        if self._server is not None:
            return self
        self._stopping.clear()
        server = _Server(("127.0.0.1", self._port), _Handler)
        server.emulator = self
        if self._tls is not None:
            server.socket = self._tls.wrap_socket(server.socket, server_side=True)
        self._port = int(server.server_address[1])
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{self.name}-emulator",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and cut open connections: the partner is down until :meth:`start`."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        with self._lock:
            connections = list(self._connections)
            self._connections.clear()
        for conn in connections:
            with suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            with suppress(OSError):
                conn.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @contextmanager
    def down(self) -> Iterator[None]:
        """``with emulator.down(): ...``: the partner is unreachable inside the block."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- scripting and inspection ----------------------------------------------------

    def script(
        self,
        *replies: int | Reply | Sequence[int | Reply | None] | None,
        retry_after: float | str | None = None,
        path: str | None = None,
    ) -> None:
        """Queue answers for the next requests (to ``path`` only, when given).

        ``script(429, 500, 200)`` or ``script([429, 500, 200])``. An int is a status
        answered with the emulator's seed-like error body (:meth:`error_reply`); 200 or
        None lets the emulator answer normally. ``retry_after`` adds a ``Retry-After``
        header to 429 and 503 answers.
        """
        flat: list[int | Reply | None] = []
        for entry in replies:
            if isinstance(entry, list | tuple):
                flat.extend(entry)
            else:
                flat.append(entry)  # type: ignore[arg-type]
        with self._lock:
            for item in flat:
                if item is None or item == 200:
                    self._script.append(_Scripted(None, path))
                    continue
                reply = item if isinstance(item, Reply) else self.error_reply(int(item))
                if retry_after is not None and reply.status in (429, 503):
                    reply.headers.setdefault("Retry-After", str(retry_after))
                self._script.append(_Scripted(reply, path))

    def clear(self) -> None:
        """Forget received requests and pending scripted answers."""
        with self._lock:
            self.received.clear()
            self._script.clear()

    def requests_to(self, path_part: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if path_part.lower() in r.path.lower()]

    def wait_for(self, predicate: Callable[[], bool] | int, timeout: float = 10.0) -> bool:
        """Wait until ``predicate()`` (or ``len(received) >= n``); False on timeout."""
        if isinstance(predicate, int):
            count = predicate

            def check() -> bool:
                return len(self.received) >= count

        else:
            check = predicate
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return True
            time.sleep(0.02)
        return bool(check())

    # --- to implement ---------------------------------------------------------------

    def handle(self, request: Request) -> Reply:
        raise NotImplementedError

    def error_reply(self, status: int) -> Reply:
        """The emulator's answer for a scripted status (override for seed-like bodies)."""
        return Reply(status, REASONS.get(status, "error"))

    # --- internals ------------------------------------------------------------------

    def _next_scripted(self, path: str) -> _Scripted | None:
        with self._lock:
            for index, item in enumerate(self._script):
                if item.path is None or item.path.lower() in path.lower():
                    return self._script.pop(index)
        return None

    def _answer(self, request: Request) -> Reply:
        scripted = self._next_scripted(request.path)
        if scripted is not None and scripted.reply is not None:
            return scripted.reply
        return self.handle(request)

    def _record(self, request: Request, status: int) -> None:
        with self._lock:
            self.received.append(Received(**vars(request), status=status))

    def _sleep(self, seconds: float) -> bool:
        """Sleep unless stopped; True when the emulator is stopping."""
        return seconds > 0 and self._stopping.wait(seconds)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    emulator: Emulator

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Connection resets from clients that gave up are expected; stay quiet."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    timeout = 30

    def setup(self) -> None:
        super().setup()
        emulator = self.server.emulator
        with emulator._lock:
            emulator._connections.add(self.connection)

    def finish(self) -> None:
        emulator = self.server.emulator
        with emulator._lock:
            emulator._connections.discard(self.connection)
        with suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """No access log on stderr."""

    def _serve(self) -> None:
        emulator = self.server.emulator
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._write(Reply(413, "request too large"))
            self.close_connection = True
            return
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        request = Request(
            method=self.command,
            path=parts.path,
            query=dict(parse_qsl(parts.query, keep_blank_values=True)),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            at=time.time(),
        )
        try:
            reply = emulator._answer(request)
        except Exception as exc:  # an emulator bug must show up as a 500, not a hang
            reply = Reply(500, f"emulator error: {type(exc).__name__}: {exc}")
        if emulator._sleep(emulator.delay + reply.delay):
            emulator._record(request, 0)
            self.close_connection = True
            return
        if reply.drop:
            emulator._record(request, 0)
            self.close_connection = True
            with suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        emulator._record(request, reply.status)
        self._write(reply)

    def _write(self, reply: Reply) -> None:
        payload, content_type = reply.encoded()
        try:
            self.send_response(reply.status, REASONS.get(reply.status))
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
        except OSError:
            self.close_connection = True

    do_GET = _serve
    do_POST = _serve
    do_PUT = _serve
    do_DELETE = _serve
