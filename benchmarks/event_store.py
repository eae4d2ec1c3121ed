"""The database work of a SOAP call, in process: storing a NotifyEventFired, the call journal's insert.

Usage::

    python benchmarks/event_store.py [--rounds N] [--calls N] [--json]

On a fresh SQLite file (WAL, as the service runs it) it measures the CPU time of the process
per unit of work, best of ``--rounds`` alternating rounds:

===================================  ==================================================================
row                                  what runs
===================================  ==================================================================
accept, repeat                       ``Outbox.accept`` of a call already accepted in the window
                                     (what ``soap_operations.py`` times: it repeats one call)
accept, new event                    ``Outbox.accept`` of a new event with 0, 1 and 5 deliveries
driver alone, repeat / new event     the same statements on ``sqlite3`` directly, values written
                                     by hand: BEGIN IMMEDIATE, the window's check and a repeat's
                                     count (one UPDATE), the INSERTs of a new event, COMMIT (the
                                     floor; no pool, no write gate, no JSON)
journal, per entry                   ``JournalWriter.flush`` of 200 queued calls of the six
                                     operations (building each entry and inserting the batch)
driver alone, journal per entry      ``executemany`` of the same rows, already serialised
===================================  ==================================================================

It prints microseconds per unit and each figure's ratio to its driver-alone baseline. Takes
about 30 seconds. Issue 14 goal 1: where ``NotifyEventFired``'s cost beyond bare Spyne's goes.
"""

from __future__ import annotations

import argparse
import json
import logging
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.soap_operations import GROUPS, build_ours, import_rule_set, wsgi_caller
from provider.calls import Provider
from provider.db.migrate import upgrade
from provider.db.session import Database
from provider.domain import IncomingEvent, JournalEntry, Notification
from provider.events.outbox import Outbox
from provider.journal.writer import JournalInsert, JournalWriter
from provider.settings import Secret
from provider.variables import InputVariables

BATCH = 200
#: the variables of one event; ``args_n`` makes each new one different
EVENT = ["eventType=509000", "eventName=Ticket Updated", "args_Ticket=12345", "args_subject=Printer on fire"]


def notifications(count: int) -> list[Notification]:
    return [
        Notification(
            rule=f"rule-{i}",
            channel="mail",
            params={
                "to": "helpdesk-admins@example.org",
                "subject": "SmarterTrack: Ticket Updated",
                "text": "x" * 80,
            },
        )
        for i in range(count)
    ]


def events(provider: Provider, start: int) -> Iterator[IncomingEvent]:
    """New events, one a call (each a different fingerprint)."""
    n = start
    while True:
        yield provider.incoming_event(InputVariables.parse([*EVENT, f"args_n={n}"]))
        n += 1


def cpu_per_unit(fn: Callable[[], int], units: int) -> float:
    """CPU seconds of this process per unit: ``fn`` returns how many units it did."""
    start = time.process_time()
    done = 0
    while done < units:
        done += fn()
    return (time.process_time() - start) / done


class DriverAlone:
    """The outbox's statements on ``sqlite3`` directly: the floor under ``Outbox.accept``."""

    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(path, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._n = 0

    def _stamp(self) -> str:
        return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")

    #: the window's check and a repeat's count in one statement, as ``Outbox`` runs it on SQLite
    REPEAT = (
        "UPDATE events SET repeats = repeats + 1, last_repeated_at = ? WHERE id = "
        "(SELECT event_id FROM event_dedup WHERE fingerprint = ? AND expires_at > ?) RETURNING id"
    )

    def repeat(self, fingerprint: str) -> int:
        c = self._conn
        now = self._stamp()
        c.execute("BEGIN IMMEDIATE")
        if c.execute(self.REPEAT, (now, fingerprint, now)).fetchone() is None:
            raise RuntimeError("the driver's repeat found no open window")
        c.execute("COMMIT")
        return 1

    def new(self, deliveries: int) -> int:
        c = self._conn
        self._n += 1
        fingerprint = f"driver-{self._n}-{time.time_ns()}"
        now = self._stamp()
        c.execute("BEGIN IMMEDIATE")
        c.execute(self.REPEAT, (now, fingerprint, now)).fetchone()
        event_id = c.execute(
            "INSERT INTO events (event_type, event_name, arguments, variables, fingerprint, received_at, repeats) "
            "VALUES (?, ?, ?, ?, ?, ?, 0) RETURNING id",
            (509000, "Ticket Updated", '{"Ticket": "12345"}', '[["eventType", "509000"]]', fingerprint, now),
        ).fetchone()[0]
        c.execute(
            "INSERT INTO event_dedup (fingerprint, event_id, expires_at) VALUES (?, ?, ?) "
            "ON CONFLICT (fingerprint) DO UPDATE SET event_id = excluded.event_id, expires_at = excluded.expires_at",
            (fingerprint, event_id, now),
        )
        if deliveries:
            c.executemany(
                "INSERT INTO deliveries (event_id, rule, channel, recipient, params, key, status, attempts, "
                "next_attempt_at, age_from, created_at, updated_at) VALUES (?, ?, 'mail', ?, ?, ?, 'pending', 0, ?, ?, ?, ?)",
                [
                    (
                        event_id,
                        f"rule-{i}",
                        "a@example.org",
                        '{"to": "a@example.org"}',
                        f"k{fingerprint}-{i}",
                        now,
                        now,
                        now,
                        now,
                    )
                    for i in range(deliveries)
                ],
            )
        c.execute("COMMIT")
        return 1

    def journal(self, rows: list[tuple[Any, ...]]) -> int:
        c = self._conn
        c.execute("BEGIN")
        c.executemany(
            "INSERT INTO call_journal (at, operation, request_id, client, duration_ms, outcome, fault, username, "
            "variables, identity, matched, answer) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        c.execute("COMMIT")
        return len(rows)

    def close(self) -> None:
        self._conn.close()


def measure(rounds: int, calls: int) -> dict[str, float]:
    """Microseconds per unit for every row (best of ``rounds``)."""
    logging.getLogger("spyne.util.appreg").setLevel(logging.ERROR)
    best: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-event-store-") as tmp:
        path = Path(tmp) / "store.db"
        url = f"sqlite:///{path}"
        upgrade(url)
        import_rule_set(url)
        database = Database(url)
        driver = DriverAlone(path)
        app = build_ours(url, fast_path=True, journal=True)
        try:
            provider = Provider(Secret("bench"))
            outbox = Outbox(database)
            repeated = provider.incoming_event(InputVariables.parse([*EVENT, "args_n=repeated"]))
            outbox.accept(repeated, [])
            new_events = events(provider, 0)
            driver_fingerprint = "driver-repeated"
            driver.new(0)
            with database.engine.begin() as connection:  # a window for the driver's repeats
                connection.exec_driver_sql(
                    "INSERT INTO event_dedup (fingerprint, event_id, expires_at) "
                    "SELECT ?, max(id), '2999-01-01 00:00:00.000000' FROM events",
                    (driver_fingerprint,),
                )
            writer = cast(JournalWriter, app.journal)
            row = JournalInsert(database.engine.dialect).row
            six = [wsgi_caller(app, op) for op in GROUPS["six, no password hash"]]
            six[0]()
            writer.close()  # its thread stopped: calls stay queued until flushed here
            writer.flush()

            def queue_batch() -> None:
                while len(writer._queue) < BATCH:
                    for call in six:
                        call()

            def journal_flush() -> int:
                queue_batch()
                start = time.process_time()
                written = writer.flush()
                journal_cpu.append(time.process_time() - start)
                return written

            def driver_journal() -> int:
                queue_batch()
                entries = [item if isinstance(item, JournalEntry) else item.build() for item in writer._queue]
                writer._queue.clear()
                # The writer's own rows (serialised before the timing): the insert alone is timed.
                rows = [row(replace(e, request_id=f"{e.request_id}-d")) for e in entries]
                start = time.process_time()
                done = driver.journal(rows)
                journal_cpu.append(time.process_time() - start)
                return done

            rows: dict[str, Callable[[], int]] = {
                "accept, repeat": lambda: _one(outbox.accept(repeated, [])),
                "accept, new event, no delivery": lambda: _one(outbox.accept(next(new_events), [])),
                "accept, new event, 1 delivery": lambda: _one(
                    outbox.accept(next(new_events), notifications(1))
                ),
                "accept, new event, 5 deliveries": lambda: _one(
                    outbox.accept(next(new_events), notifications(5))
                ),
                "driver alone, repeat": lambda: driver.repeat(driver_fingerprint),
                "driver alone, new event, 1 delivery": lambda: driver.new(1),
            }
            for index in range(rounds):
                names = list(rows) if index % 2 == 0 else list(reversed(rows))
                for name in names:
                    micros = cpu_per_unit(rows[name], calls) * 1e6
                    best[name] = min(best.get(name, float("inf")), micros)
                for name, fn in (
                    ("journal, per entry", journal_flush),
                    ("driver alone, journal per entry", driver_journal),
                ):
                    journal_cpu: list[float] = []
                    units = sum(fn() for _ in range(3))
                    best[name] = min(best.get(name, float("inf")), sum(journal_cpu) / units * 1e6)
        finally:
            driver.close()
            database.dispose()
            if app.database is not None:
                app.database.dispose()
    return best


def _one(_accepted: object) -> int:
    return 1


RATIOS = {
    "accept, repeat": "driver alone, repeat",
    "accept, new event, 1 delivery": "driver alone, new event, 1 delivery",
    "journal, per entry": "driver alone, journal per entry",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds (4)")
    parser.add_argument("--calls", type=int, default=1000, help="units per row and round (1000)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)
    best = measure(args.rounds, args.calls)
    ratios = {name: best[name] / best[base] for name, base in RATIOS.items()}
    if args.json:
        print(json.dumps({"microseconds": best, "ratio_to_driver_alone": ratios}, indent=2))
        return 0
    print(f"database work per unit, SQLite (WAL), CPU time of the process (best of {args.rounds} rounds)")
    for name, micros in best.items():
        ratio = f"   {ratios[name]:.1f}x the driver alone" if name in ratios else ""
        print(f"  {name:<40}{micros:>10.1f} us{ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
