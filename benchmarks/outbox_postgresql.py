"""NotifyEventFired's transaction on PostgreSQL: the pipeline against SQLAlchemy Core, near and far.

Usage::

    python benchmarks/outbox_postgresql.py [--calls N] [--rounds N] [--rtt-ms MS]
                                           [--pg-admin-dsn DSN] [--json]

On a scratch PostgreSQL database (created through ``--pg-admin-dsn``, default
``$ST_TEST_PG_DSN`` or the test suite's, dropped on every exit path) it times
``Outbox.accept`` (wall clock, SmarterTrack waits for it) for a repeat inside the window and
for a new event with 0, 1 and 5 deliveries, in alternating rounds (best of ``--rounds``):

* **pipeline**: the outbox as the service runs it on PostgreSQL (psycopg's pipeline mode,
  :meth:`~provider.db.session.Database.pipeline_transaction`);
* **Core**: the same outbox on its SQLAlchemy Core statements (what it ran before, and still
  runs through a libpq without pipeline mode): the baseline;

each straight to the server on loopback and through a delay line: a TCP proxy on loopback that
hands every byte on ``--rtt-ms / 2`` after it arrived, each way, as a database on another host
would (default 2 ms round trip). The extra time through the delay line divided by the round
trip is the number of round trips an accept waits for, the pool's check of the connection
(``pool_pre_ping``) included. Nothing is asserted; exit status 0 when measured, 2 when no
scratch database could be created. About a minute.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.event_store import EVENT, notifications
from benchmarks.scaleout import add_pg_admin_dsn, scratch_database
from provider.calls import Provider
from provider.db.migrate import upgrade
from provider.db.session import Database
from provider.domain import IncomingEvent
from provider.events.outbox import Outbox
from provider.settings import Secret
from provider.variables import InputVariables

ROWS = ("repeat", "new event, no delivery", "new event, 1 delivery", "new event, 5 deliveries")
DELIVERIES = {"new event, no delivery": 0, "new event, 1 delivery": 1, "new event, 5 deliveries": 5}


class DelayLine:
    """A TCP proxy on 127.0.0.1 delivering every byte ``one_way`` seconds after it arrived, in
    both directions, in order and without a bandwidth limit (a link's latency, not its speed)."""

    def __init__(self, target: tuple[str, int], one_way: float) -> None:
        self._target = target
        self._delay = one_way
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            upstream = socket.create_connection(self._target)
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sockets += [client, upstream]
            self._pipe(client, upstream)
            self._pipe(upstream, client)

    def _pipe(self, source: socket.socket, target: socket.socket) -> None:
        line: queue.Queue[tuple[float, bytes]] = queue.Queue()

        def read() -> None:
            with contextlib.suppress(OSError):
                while data := source.recv(65536):
                    line.put((time.monotonic() + self._delay, data))
            line.put((0.0, b""))

        def write() -> None:
            with contextlib.suppress(OSError):
                while True:
                    due, data = line.get()
                    if not data:
                        target.shutdown(socket.SHUT_WR)
                        return
                    pause = due - time.monotonic()
                    if pause > 0:
                        time.sleep(pause)
                    target.sendall(data)

        threading.Thread(target=read, daemon=True).start()
        threading.Thread(target=write, daemon=True).start()

    def close(self) -> None:
        self._listener.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()


def through(url: str, port: int) -> str:
    """``url`` with its host and port replaced by the delay line's."""
    parts = urlsplit(url)
    credentials = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return urlunsplit(parts._replace(netloc=f"{credentials}127.0.0.1:{port}"))


def wall_per_call(fn: Callable[[], object], calls: int) -> float:
    """Mean wall-clock seconds per call of ``fn`` over ``calls`` calls (after two to warm up)."""
    for _ in range(2):
        fn()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def outboxes(database: Database) -> dict[str, Outbox]:
    """The outbox as the service builds it, and the same one on its Core statements."""
    pipeline = Outbox(database)
    if pipeline._on_driver is None:
        raise RuntimeError("this libpq has no pipeline mode: nothing to compare")
    core = Outbox(database)
    core._on_driver = None  # the Core path (what a libpq without pipeline mode runs)
    return {"pipeline": pipeline, "Core": core}


def events(provider: Provider, tag: str) -> Iterator[IncomingEvent]:
    """New events, each with its own fingerprint."""
    n = 0
    while True:
        n += 1
        yield provider.incoming_event(InputVariables.parse([*EVENT, f"args_n={tag}-{n}"]))


def measure(database_url: str, *, calls: int, rounds: int, rtt: float) -> dict[str, dict[str, float]]:
    """Microseconds per accept by path ("pipeline near", "Core far", ...) and row (best of rounds)."""
    upgrade(database_url)
    parts = urlsplit(database_url)
    line = DelayLine((parts.hostname or "127.0.0.1", parts.port or 5432), rtt / 2)
    databases = {"near": Database(database_url), "far": Database(through(database_url, line.port))}
    best: dict[str, dict[str, float]] = {}
    try:
        provider = Provider(Secret("bench"))
        repeated = provider.incoming_event(InputVariables.parse([*EVENT, "args_n=repeated"]))
        stacks = {
            f"{path} {distance}": outbox
            for distance, database in databases.items()
            for path, outbox in outboxes(database).items()
        }
        next(iter(stacks.values())).accept(repeated, [])
        fresh = {label: events(provider, label) for label in stacks}
        for index in range(rounds):
            for row in ROWS:
                for label in stacks if index % 2 == 0 else reversed(list(stacks)):
                    outbox = stacks[label]
                    if row == "repeat":

                        def call(outbox: Outbox = outbox) -> object:
                            return outbox.accept(repeated, [])
                    else:
                        notes = notifications(DELIVERIES[row])
                        source = fresh[label]

                        def call(outbox: Outbox = outbox, notes: Any = notes, source: Any = source) -> object:
                            return outbox.accept(next(source), notes)

                    count = max(10, calls // 10) if label.endswith("far") else calls
                    micros = wall_per_call(call, count) * 1e6
                    row_best = best.setdefault(label, {})
                    row_best[row] = min(row_best.get(row, float("inf")), micros)
    finally:
        for database in databases.values():
            database.dispose()
        line.close()
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--calls", type=int, default=400, help="accepts per row and round near (far: a tenth)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (3)")
    parser.add_argument("--rtt-ms", type=float, default=2.0, help="the delay line's round trip, ms (2)")
    add_pg_admin_dsn(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)
    rtt = args.rtt_ms / 1000
    try:
        with scratch_database(args.pg_admin_dsn) as url:
            best = measure(url, calls=args.calls, rounds=args.rounds, rtt=rtt)
    except RuntimeError as exc:
        print(f"outbox_postgresql: {exc}", file=sys.stderr)
        return 2
    trips = {
        path: {row: (best[f"{path} far"][row] - best[f"{path} near"][row]) / (rtt * 1e6) for row in ROWS}
        for path in ("pipeline", "Core")
    }
    if args.json:
        print(json.dumps({"microseconds": best, "round_trips": trips, "rtt_ms": args.rtt_ms}, indent=2))
        return 0
    print(
        f"Outbox.accept on PostgreSQL, wall clock per call, us (best of {args.rounds} rounds);"
        f" far: through a delay line of {args.rtt_ms:g} ms round trip (pid {os.getpid()})"
    )
    print(
        f"  {'row':<26}{'Core near':>11}{'pipeline':>10}{'ratio':>7}"
        f"{'Core far':>11}{'pipeline':>10}{'ratio':>7}   round trips, Core -> pipeline"
    )
    for row in ROWS:
        near = best["Core near"][row], best["pipeline near"][row]
        far = best["Core far"][row], best["pipeline far"][row]
        print(
            f"  {row:<26}{near[0]:>11.0f}{near[1]:>10.0f}{near[1] / near[0]:>7.2f}"
            f"{far[0]:>11.0f}{far[1]:>10.0f}{far[1] / far[0]:>7.2f}"
            f"   {trips['Core'][row]:.1f} -> {trips['pipeline'][row]:.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
