"""A gunicorn worker that reads each request whole before a thread sees it.

gunicorn's gthread worker hands a connection to a thread as soon as its first byte
arrives; the thread then blocks reading the rest. Ten clients that send one byte,
or trickle a byte a second, or announce a longer body than they send, hold every
thread and the service stops answering. :class:`BufferingWorker` (a
:class:`gunicorn.workers.gthread.ThreadWorker`) puts the reading in the worker's
event loop instead, as a buffering reverse proxy would:

1. on accept, and when a kept-alive connection becomes readable, the connection is
   read without blocking, through the same selector the worker already polls, into
   a :class:`~provider.http_framing.RequestBuffer`, until the header block and the
   whole body have arrived (``Content-Length``, or chunked up to its terminator);
2. a request not arrived whole within ``Settings.request_read_seconds`` (measured
   from its first chance to arrive) is answered ``408 Request Timeout`` with
   ``Connection: close`` and closed; a connection that sent nothing is just closed;
3. only then does a thread get the connection, through :class:`BufferedSocket`,
   whose ``recv()`` serves the buffered bytes before the socket's, so gunicorn's
   parser and the application run unchanged and never wait for the client;
4. a ``Content-Length`` over ``Settings.max_body_bytes`` is handed over at once
   (the application answers 413 without reading it) and a chunked body as soon as
   more than that has arrived, so no request buffers more than its limits;
5. ``Expect: 100-continue`` is answered here, while the body is awaited (gunicorn's
   own interim answer is then not sent twice).

The connections being read count towards gunicorn's ``worker_connections`` (new
connections are not accepted beyond it), which with the per-request limits bounds
the worker's buffer memory. Thread-side socket operations time out after the same
``request_read_seconds`` (a client that stops reading its response cannot hold a
thread either). TLS terminated by gunicorn itself (``certfile``) is not buffered:
the worker then behaves as plain gthread; terminate TLS in a proxy instead.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import selectors
import socket
import time
from functools import partial
from typing import Any, Final

from gunicorn.workers.gthread import TConn, ThreadWorker

from provider.http_framing import Framing, RequestBuffer

log = logging.getLogger("provider.http")

CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
READ_SIZE: Final = 65536
# After a closing answer: how long, and how much, the client may still send (as gunicorn).
LINGER_SECONDS: Final = 2.0
LINGER_BYTES: Final = 65536
_TIMEOUT_BODY: Final = b"The request was not received in time.\n"
REQUEST_TIMEOUT: Final = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"Connection: close\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: " + str(len(_TIMEOUT_BODY)).encode() + b"\r\n\r\n" + _TIMEOUT_BODY
)


class BufferedSocket:
    """A client socket whose ``recv()`` returns bytes read ahead before the socket's.

    Everything else is the socket's, except ``setblocking(True)``, which sets the
    thread-side timeout instead of blocking forever, and one ``send()`` of the
    interim ``100 Continue`` when this layer has already sent it.
    """

    def __init__(self, sock: socket.socket, io_timeout: float) -> None:
        self._sock = sock
        self._io_timeout = io_timeout
        self._pending = b""
        self.continue_sent = False

    def push(self, data: bytes) -> None:
        """Serve ``data`` (before anything still pending) from the next ``recv()`` calls."""
        self._pending = data + self._pending

    def take_pending(self) -> bytes:
        """The read-ahead bytes no ``recv()`` has returned yet (and forget them)."""
        data, self._pending = self._pending, b""
        return data

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        if self._pending and not flags:
            data, self._pending = self._pending[:bufsize], self._pending[bufsize:]
            return data
        return self._sock.recv(bufsize, flags)

    def send(self, data: bytes, flags: int = 0) -> int:
        if self.continue_sent and bytes(data) == CONTINUE:
            self.continue_sent = False
            return len(data)
        return self._sock.send(data, flags)

    def setblocking(self, flag: bool) -> None:
        self._sock.settimeout(self._io_timeout if flag else 0.0)

    def fileno(self) -> int:
        return self._sock.fileno()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class BufferedConn(TConn):  # type: ignore[misc]
    """gunicorn's connection, plus whether its current request is read whole."""

    def __init__(self, cfg: Any, sock: BufferedSocket, client: Any, server: Any) -> None:
        super().__init__(cfg, sock, client, server)
        self.handed_over = False
        self.lingered = 0  # bytes drained after the last answer


class _Reading:
    """A request being read in the event loop."""

    __slots__ = ("buffer", "deadline")

    def __init__(self, buffer: RequestBuffer, deadline: float) -> None:
        self.buffer = buffer
        self.deadline = deadline


def _read_some(conn: BufferedConn) -> bytes | None:
    """Up to READ_SIZE bytes from ``conn``: ``b""`` when the client is gone, ``None`` when nothing is there yet."""
    try:
        data: bytes = conn.sock.recv(READ_SIZE)
    except (BlockingIOError, InterruptedError):
        return None
    except OSError:
        return b""
    return data


def _closes(fs: Any) -> bool:
    """Whether a finished ``handle()`` says: close the connection (it returns False then)."""
    return not fs.cancelled() and fs.exception() is None and not fs.result()


def request_limits(app: Any) -> tuple[float, int]:
    """``(request_read_seconds, max_body_bytes)`` of the provider's settings.

    ``st-provider serve`` passes its :class:`~provider.settings.Settings` on the
    gunicorn application; plain gunicorn (``deploy/gunicorn.conf.py``) reads them
    from the environment, as its application does (:func:`provider.cli.wsgi_application`).
    """
    from provider.settings import Settings

    settings = getattr(app, "settings", None)
    if not isinstance(settings, Settings):
        from provider.cli import load_settings

        settings = load_settings(os.environ)
    return settings.request_read_seconds, settings.max_body_bytes


class BufferingWorker(ThreadWorker):  # type: ignore[misc]
    """gthread, with requests read whole in the event loop (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.read_seconds, self.max_body_bytes = request_limits(self.app)
        self.max_header_bytes = (
            self.cfg.limit_request_line
            + 2
            + (self.cfg.limit_request_fields * (self.cfg.limit_request_field_size + 2) + 4)
        )
        # Insertion order is deadline order: every request gets the same read time.
        self.reading: dict[BufferedConn, _Reading] = {}
        # Answered connections waiting for the client to close (value: deadline).
        self.lingering: dict[BufferedConn, float] = {}
        self.buffering = not self.cfg.is_ssl

    def init_process(self) -> None:
        log.info(
            "web worker ready",
            extra={
                "event": "http.worker_ready",
                "pid": os.getpid(),
                "buffering": self.buffering,
                "read_seconds": self.read_seconds,
                "max_requests": self.cfg.max_requests,
            },
        )
        super().init_process()

    # --- connections in ---------------------------------------------------------------

    def accept(self, listener: socket.socket) -> None:
        """Accept a connection and start reading its first request (never in a thread)."""
        if not self.buffering:
            super().accept(listener)
            return
        try:
            client_sock, client_addr = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        sock = BufferedSocket(client_sock, self.read_seconds)
        self.enqueue_req(BufferedConn(self.cfg, sock, client_addr, listener.getsockname()))

    def enqueue_req(self, conn: Any) -> None:
        """A thread for a request read whole; reading first for one that is not."""
        if isinstance(conn, BufferedConn) and not conn.handed_over:
            self._start_reading(conn)
        else:
            super().enqueue_req(conn)

    def finish_request(self, conn: Any, fs: Any) -> None:
        """Back from a thread: read-ahead left over is the next request's start."""
        if isinstance(conn, BufferedConn):
            conn.handed_over = False
            conn.sock.continue_sent = False
            leftover = conn.sock.take_pending()
            if leftover and conn.parser is not None:
                unreader = conn.parser.unreader
                unreader.unread(unreader.take_buffered() + leftover)
        if isinstance(conn, BufferedConn) and _closes(fs):
            self._linger(conn)
            return
        super().finish_request(conn, fs)

    # --- reading ------------------------------------------------------------------------

    def _start_reading(self, conn: BufferedConn) -> None:
        buffer = RequestBuffer(max_header_bytes=self.max_header_bytes, max_body_bytes=self.max_body_bytes)
        reading = _Reading(buffer, time.monotonic() + self.read_seconds)
        ahead = conn.parser.unreader.take_buffered() if conn.parser is not None else b""
        ahead += conn.sock.take_pending()
        conn.sock.setblocking(False)
        if ahead and buffer.feed(ahead) is not Framing.NEED_MORE:
            self._hand_over(conn, buffer)
            return
        self._answer_continue(conn, buffer)
        self.reading[conn] = reading
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_readable, conn))
        self._on_readable(conn)

    def _on_readable(self, conn: BufferedConn, _fileobj: Any = None) -> None:
        reading = self.reading.get(conn)
        if reading is None:
            return
        data = _read_some(conn)
        if data is None:
            return
        if not data:  # the client went away before its request was whole
            self._stop_reading(conn)
            self._close(conn)
            return
        buffer = reading.buffer
        if buffer.feed(data) is not Framing.NEED_MORE:
            self._stop_reading(conn)
            self._hand_over(conn, buffer)
        else:
            self._answer_continue(conn, buffer)

    def _answer_continue(self, conn: BufferedConn, buffer: RequestBuffer) -> None:
        """``100 Continue`` once the headers asking for it are in and the body is awaited."""
        if buffer.expects_continue and buffer.body_expected and not conn.sock.continue_sent:
            self._send_quietly(conn, CONTINUE)
            conn.sock.continue_sent = True  # after: the socket swallows gunicorn's own one

    def _hand_over(self, conn: BufferedConn, buffer: RequestBuffer) -> None:
        conn.sock.push(bytes(buffer.data))
        conn.handed_over = True
        conn.data_ready = True  # gthread's own wait for a first byte is not needed
        self.enqueue_req(conn)

    def _stop_reading(self, conn: BufferedConn) -> None:
        self.reading.pop(conn, None)
        with contextlib.suppress(KeyError, ValueError, OSError):
            self.poller.unregister(conn.sock)

    def murder_pending(self) -> None:
        """Also answer 408 to requests past their read deadline (called by the main loop)."""
        super().murder_pending()
        now = time.monotonic()
        while self.reading:
            conn, reading = next(iter(self.reading.items()))
            if reading.deadline > now:
                break
            self._stop_reading(conn)
            received = len(reading.buffer.data)
            if received:
                log.info(
                    "request not received in time",
                    extra={
                        "event": "http.request_timeout",
                        "received_bytes": received,
                        "headers_complete": reading.buffer.headers_complete,
                    },
                )
                self._send_quietly(conn, REQUEST_TIMEOUT)
                self._linger(conn)
            else:
                self._close(conn)
        while self.lingering:
            conn, deadline = next(iter(self.lingering.items()))
            if deadline > now:
                break
            self._stop_lingering(conn)

    # --- closing ------------------------------------------------------------------------

    def _linger(self, conn: BufferedConn) -> None:
        """Close after the answer, without blocking the event loop (RFC 9112 section 9.6).

        gthread's graceful close waits for the client in the main loop, up to two seconds
        per connection: a client that keeps its end open would stall every connection.
        Here the write side is shut (the client sees the end of the answer), what the
        client still sends is drained as it comes, and the socket is closed when the
        client closes, after ``LINGER_BYTES`` or after ``LINGER_SECONDS``.
        """
        try:
            conn.sock.shutdown(socket.SHUT_WR)
            conn.sock.setblocking(False)
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_lingering, conn))
        except (OSError, ValueError, KeyError):
            self._close(conn)
            return
        self.lingering[conn] = time.monotonic() + LINGER_SECONDS
        conn.lingered = 0

    def _on_lingering(self, conn: BufferedConn, _fileobj: Any = None) -> None:
        data = _read_some(conn)
        if data is None:
            return
        conn.lingered += len(data)
        if not data or conn.lingered > LINGER_BYTES:
            self._stop_lingering(conn)

    def _stop_lingering(self, conn: BufferedConn) -> None:
        del self.lingering[conn]
        with contextlib.suppress(KeyError, ValueError, OSError):
            self.poller.unregister(conn.sock)
        self._close(conn)

    def _close(self, conn: BufferedConn) -> None:
        self.nr_conns -= 1
        conn.close()

    @staticmethod
    def _send_quietly(conn: BufferedConn, data: bytes) -> None:
        """Best effort: a short answer fits in the socket buffer; a full one is dropped."""
        with contextlib.suppress(OSError):
            conn.sock.send(data)
