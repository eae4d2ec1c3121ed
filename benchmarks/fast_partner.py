"""A fast loopback HTTP partner for the delivery benchmarks (asyncio, one process, keep-alive).

The test suite's emulators (``tests/emulators``) are thread-per-connection
``http.server`` servers: faithful, but at a few hundred requests per second they, not
the worker, would be measured. This partner answers every ``POST`` with a small JSON
body as soon as it has read the request (or after ``delay`` seconds, or with another
``status``), counting the requests it accepted.

Control (the same protocol as ``events.py``'s receiver): ``POST /_control?delay=S&status=N``
sets the delay and status of later answers; ``POST /_stats`` answers ``{"accepted": N,
"received": N}``. Run ``python benchmarks/fast_partner.py``: it prints ``PORT n`` and serves
until SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from urllib.parse import parse_qsl, urlsplit


class State:
    delay = 0.0
    status = 200
    accepted = 0
    received = 0


REASONS = {200: "OK", 429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}


def answer(status: int, body: bytes) -> bytes:
    head = (
        f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("ascii") + body


class Partner(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            self.respond(head.split(" ", 2)[1])

    def respond(self, target: str) -> None:
        assert self.transport is not None
        url = urlsplit(target)
        query = dict(parse_qsl(url.query))
        if url.path == "/_control":
            State.delay = float(query.get("delay", State.delay))
            State.status = int(query.get("status", State.status))
            self.transport.write(answer(200, json.dumps({"delay": State.delay}).encode()))
            return
        if url.path == "/_stats":
            stats = {"accepted": State.accepted, "received": State.received}
            self.transport.write(answer(200, json.dumps(stats).encode()))
            return
        State.received += 1
        status = State.status
        if status == 200:
            State.accepted += 1
        reply = answer(status, b'{"ok":true}')
        if State.delay > 0:
            asyncio.get_running_loop().call_later(State.delay, self.transport.write, reply)
        else:
            self.transport.write(reply)


async def serve() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Partner, "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    print(f"PORT {port}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(serve())
    sys.exit(0)
