"""Slow clients: normal SOAP calls while many connections send their requests slowly.

Usage::

    python benchmarks/slow_clients.py [--slow N] [--duration S] [--workers N] [--threads N]
                                      [--read-seconds S] [--json]

Starts ``st-provider serve --no-worker`` (gunicorn, ``--workers`` x ``--threads``, a fresh
SQLite database, ``ST_PROVIDER_REQUEST_READ_SECONDS`` = ``--read-seconds``), then, in the same
run:

=============  ===================================================================================
row            what runs
=============  ===================================================================================
baseline       ``GetCustomFieldOptions`` calls one after another on new connections, nothing else
slow clients   the same calls while ``--slow`` connections (default 200) are held: a third send
               one byte of a request and stop, a third trickle a byte every half second, a third
               send a body shorter than its ``Content-Length``; each is opened again when the
               server closes it (408 after the read deadline)
=============  ===================================================================================

It prints calls, failed calls, p50, p99 and the longest call per row, and how many slow
connections got 408. Nothing is asserted; with plain gthread workers the slow row has only
failures (every thread is held). Exit status 0 when measured, 2 when the server did not start.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import percentile, provider_env, provider_server
from provider.domain import Operation
from provider.soap.client import build_envelope, request_headers

PASSWORD = "benchmark-slow-clients-password"
OPERATION = Operation.GET_CUSTOM_FIELD_OPTIONS


def raw_request(port: int) -> bytes:
    body = build_envelope(OPERATION, [f"authPW={PASSWORD}"], namespace="http://tempuri.org/")
    headers = request_headers(OPERATION, namespace="http://tempuri.org/")
    head = (
        f"POST /ExternalProvider.asmx HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {len(body)}\r\n"
    )
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return head.encode() + b"\r\n" + body


class SlowClients:
    """``count`` slow connections, reopened when the server closes them, in one thread."""

    def __init__(self, port: int, count: int) -> None:
        self.port = port
        self.request = raw_request(port)
        self.count = count
        self.timeouts = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.conns: list[tuple[socket.socket, int, int]] = []  # socket, kind, bytes sent

    def open(self, kind: int) -> tuple[socket.socket, int, int]:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        first = self.request[:-20] if kind == 2 else self.request[:1]
        sock.sendall(first)
        sock.setblocking(False)
        return sock, kind, len(first)

    def run(self) -> None:
        self.conns = [self.open(i % 3) for i in range(self.count)]
        while not self.stop.wait(0.5):
            for index, (sock, kind, sent) in enumerate(self.conns):
                try:
                    answer = sock.recv(4096)
                except BlockingIOError:
                    answer = None
                except OSError:
                    answer = b""
                if answer is not None:  # answered (408) or closed: open another
                    self.timeouts += answer.startswith(b"HTTP/1.1 408")
                    sock.close()
                    self.conns[index] = self.open(kind)
                elif kind == 1 and sent < len(self.request) - 1:
                    try:
                        sock.send(self.request[sent : sent + 1])
                        self.conns[index] = (sock, kind, sent + 1)
                    except OSError:
                        pass
        for sock, _, _ in self.conns:
            sock.close()

    def __enter__(self) -> SlowClients:
        self.thread.start()
        time.sleep(1.5)  # all opened, some bytes trickled
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


def calls(endpoint: str, seconds: float) -> dict[str, object]:
    body = build_envelope(OPERATION, [f"authPW={PASSWORD}"], namespace="http://tempuri.org/")
    headers = request_headers(OPERATION, namespace="http://tempuri.org/")
    latencies: list[float] = []
    failed = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.monotonic()
        try:
            with httpx.Client(timeout=5) as client:
                ok = client.post(endpoint, content=body, headers=headers).status_code == 200
        except httpx.HTTPError:
            ok = False
        if ok:
            latencies.append(time.monotonic() - started)
        else:
            failed += 1
    ms = [1000 * x for x in latencies]
    return {
        "calls": len(latencies),
        "failed": failed,
        "p50_ms": round(percentile(ms, 50), 1) if ms else None,
        "p99_ms": round(percentile(ms, 99), 1) if ms else None,
        "max_ms": round(max(ms), 1) if ms else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--slow", type=int, default=200)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--read-seconds", type=float, default=10.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="st-bench-slow-") as tmp:
        env = provider_env(
            PASSWORD,
            f"sqlite:///{Path(tmp) / 'provider.db'}",
            ST_PROVIDER_REQUEST_READ_SECONDS=str(args.read_seconds),
        )
        try:
            with provider_server(
                env, Path(tmp) / "server.log", workers=args.workers, threads=args.threads, no_worker=True
            ) as server:
                calls(server.endpoint, 1.0)  # warm-up: each worker's first calls build caches
                rows = {"baseline": calls(server.endpoint, args.duration)}
                with SlowClients(server.port, args.slow) as slow:
                    rows["slow clients"] = calls(server.endpoint, args.duration)
                rows["slow clients"]["slow_408"] = slow.timeouts
        except RuntimeError as exc:
            print(exc, file=sys.stderr)
            return 2
    if args.json:
        print(json.dumps({"slow": args.slow, "rows": rows}))
        return 0
    print(f"{args.slow} slow connections, {args.workers} workers x {args.threads} threads")
    print(f"{'row':<14}{'calls':>7}{'failed':>8}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'408s':>7}")
    for name, row in rows.items():
        cells = [
            row["calls"],
            row["failed"],
            row["p50_ms"],
            row["p99_ms"],
            row["max_ms"],
            row.get("slow_408", ""),
        ]
        print(f"{name:<14}" + "".join(f"{c!s:>{w}}" for c, w in zip(cells, (7, 8, 9, 9, 9, 7), strict=True)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
