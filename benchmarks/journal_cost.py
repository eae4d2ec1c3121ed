"""The call journal's cost where it is paid: the request thread, the writer thread, in context.

Usage::

    python benchmarks/journal_cost.py [--rounds N] [--calls N] [--five] [--json]

Imports the 21 rules of ``soap_operations.py`` into a fresh SQLite file and calls the six
operations without a password hash (``--five``: without ``NotifyEventFired`` too) through five
applications built alike, in alternating rounds, measuring per round of the group the CPU time
of the request thread (``time.thread_time``) and of the whole process (``time.process_time``;
the difference is the journal's writer thread):

=================  ==================================================================================
row                what runs
=================  ==================================================================================
journal off        ``ST_PROVIDER_JOURNAL=off``: the baseline
journal on         the service's journal: a ``PendingCall`` handed over, the entry built and inserted
                   by the writer thread
entry built here   the entry and its row built on the request thread at once, only the insert left to
                   the writer (the design before the writer built entries)
writer builds      the writer thread builds each entry and its row (JSON included) and stores nothing:
                   "journal on" minus this is SQLite's insert, this minus "writer drops" the building
writer drops       the writer thread takes the pending calls and drops them: what handing over and
                   freeing the calls' objects in another thread cost, without building or storing
=================  ==================================================================================

Beside each row, the garbage collector's passes per measured round (young / middle / old
generation, ``gc.get_stats``): the pending calls outlive their call and trigger collections that
the calls alone do not.

``soap_operations.py`` gives the journal's share of the six calls (journal on minus off);
``event_store.py`` gives the writer's cost per entry in a tight loop (its code warm, one batch
after another). This one shows where the share is paid, and that an entry costs about twice as
much in context (built between calls, its code and data no longer in the caches) as in the tight
loop. Exit status 0 when measured, 2 when the storing journals did not store every call.
Issue 14 goal 1. Takes about 30 seconds.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.soap_operations import GROUPS, build_ours, import_rule_set, wsgi_caller
from provider.app import ProviderApplication
from provider.db.migrate import upgrade
from provider.db.session import Database
from provider.domain import JournalEntry, PendingEntry
from provider.journal.writer import JournalWriter

GENERATIONS = ("young", "middle", "old")
OFF, ON, HERE, BUILDS, DROPS = (
    "journal off",
    "journal on",
    "entry built here",
    "writer builds",
    "writer drops",
)


def _build_here(writer: JournalWriter) -> None:
    """Hand the writer finished rows: each call's entry built on the request thread."""
    record, row = writer.record, writer._insert.row

    def build_now(entry: JournalEntry | PendingEntry) -> None:
        record(cast(Any, row(entry if isinstance(entry, JournalEntry) else cast(Any, entry).build())))

    def take_rows(limit: int) -> list[tuple[Any, ...]] | None:
        rows: list[tuple[Any, ...]] = []
        queue = writer._queue  # a new deque once the writer's thread started
        while len(rows) < limit and queue:
            rows.append(cast(tuple[Any, ...], queue.popleft()))
        return rows or None

    writer.record = build_now  # type: ignore[method-assign]
    writer._take_rows = take_rows  # type: ignore[method-assign]


def _store_nothing(writer: JournalWriter) -> None:
    """The writer thread builds every entry and its row as the service's does, and stores none."""
    writer._write = len  # type: ignore[method-assign]  # "written": the rows it was given


def _drop_all(writer: JournalWriter) -> None:
    """The writer thread takes what is queued and drops it (no entry built, nothing stored)."""

    def take_rows(limit: int) -> list[tuple[Any, ...]] | None:
        taken, queue = 0, writer._queue  # a new deque once the writer's thread started
        while taken < limit and queue:
            queue.popleft()
            taken += 1
        return [] if taken else None

    writer._take_rows = take_rows  # type: ignore[method-assign]


def measure(rounds: int, calls: int, group: str) -> dict[str, dict[str, float]]:
    """Microseconds per round of ``group``: request thread, other threads, process (best round)."""
    logging.getLogger("spyne.util.appreg").setLevel(logging.ERROR)
    best: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-journal-cost-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'journal.db'}"
        upgrade(url)
        import_rule_set(url)
        apps: dict[str, ProviderApplication] = {
            OFF: build_ours(url, fast_path=True, journal=False),
            ON: build_ours(url, fast_path=True),
            HERE: build_ours(url, fast_path=True),
            BUILDS: build_ours(url, fast_path=True),
            DROPS: build_ours(url, fast_path=True),
        }
        _build_here(cast(JournalWriter, apps[HERE].journal))
        _store_nothing(cast(JournalWriter, apps[BUILDS].journal))
        _drop_all(cast(JournalWriter, apps[DROPS].journal))
        callers: dict[str, list[Callable[[], bytes]]] = {
            name: [wsgi_caller(app, op) for op in GROUPS[group]] for name, app in apps.items()
        }
        for caller in (c for group_callers in callers.values() for c in group_callers):
            caller()
        gc.collect()
        gc.freeze()  # as serve does before it forks
        try:
            for index in range(rounds):
                names = list(callers) if index % 2 == 0 else list(reversed(callers))
                for name in names:
                    figures = _round(callers[name], calls)
                    if name not in best or figures["process"] < best[name]["process"]:
                        best[name] = figures
        finally:
            gc.unfreeze()
            for app in apps.values():
                if isinstance(app.journal, JournalWriter):
                    app.journal.close()  # what is queued, written
                if app.database is not None:
                    app.database.dispose()
        _check_stored(url, expected=2 * len(GROUPS[group]) * (1 + rounds * calls))
    return best


def _check_stored(url: str, expected: int) -> None:
    """RuntimeError unless the two storing journals (on, built here) stored every call."""
    database = Database(url)
    try:
        with database.engine.connect() as connection:
            stored = connection.exec_driver_sql("SELECT count(*) FROM call_journal").scalar_one()
    finally:
        database.dispose()
    if stored != expected:
        raise RuntimeError(f"the journals stored {stored} calls, not {expected}")


def _round(callers: list[Callable[[], bytes]], calls: int) -> dict[str, float]:
    """Per round of ``callers``: CPU microseconds, and the collector's passes in the whole measurement."""
    passes = [generation["collections"] for generation in gc.get_stats()]
    process, thread = time.process_time(), time.thread_time()
    for _ in range(calls):
        for call in callers:
            call()
    process, thread = time.process_time() - process, time.thread_time() - thread
    passes = [
        generation["collections"] - before for generation, before in zip(gc.get_stats(), passes, strict=True)
    ]
    return {
        "request thread": thread / calls * 1e6,
        "other threads": max(0.0, process - thread) / calls * 1e6,
        "process": process / calls * 1e6,
        **{f"gc {name}": float(count) for name, count in zip(GENERATIONS, passes, strict=True)},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds (4)")
    parser.add_argument("--calls", type=int, default=600, help="rounds of the group per measurement (600)")
    parser.add_argument("--five", action="store_true", help="the five calls without NotifyEventFired")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)
    group = "five, no database write" if args.five else "six, no password hash"
    try:
        best = measure(args.rounds, args.calls, group)
    except RuntimeError as exc:
        print(f"journal_cost: {exc}", file=sys.stderr)
        return 2
    base = best[OFF]["process"]
    if args.json:
        print(json.dumps({"group": group, "microseconds": best}, indent=2))
        return 0
    print(
        f"CPU time per round of the {group.split(',', maxsplit=1)[0]} calls, us (best of {args.rounds} rounds)"
    )
    print(
        f"  {'':<20}{'request thread':>16}{'other threads':>16}{'process':>10}{'journal':>10}"
        f"{'gc passes (young/middle/old)':>31}"
    )
    for name, figures in best.items():
        extra = figures["process"] - base
        passes = "/".join(f"{figures[f'gc {generation}']:.0f}" for generation in GENERATIONS)
        print(
            f"  {name:<20}{figures['request thread']:>16.0f}{figures['other threads']:>16.0f}"
            f"{figures['process']:>10.0f}{extra:>10.0f}{passes:>31}"
        )
    print(f"  (gc passes: in the whole measured round of {args.calls} rounds of the calls)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
