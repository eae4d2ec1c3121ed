"""What one SOAP call leaves behind in process: Python heap and RSS growth per call, beside bare Spyne.

Usage::

    python benchmarks/heap_growth.py [--warmup N] [--calls N] [--samples N] [--top N] [--json]

Issue 14 goal 3 asks for a web worker that is steady under load (no growth over 100,000 calls).
``worker_memory.py`` measures that on the whole ``serve`` over HTTP, where the RSS of a
threaded gunicorn worker moves by a megabyte or two with the allocator, the pools filling and
the journal's batches, and a slow leak would hide in that noise. This benchmark measures what
stays: in one process, through ``build_application`` as a web worker builds it (SQLite, the
call journal on and flushed, the fast path; the 21 rules and the local user of
``soap_operations.py``), it makes ``--warmup`` calls (the six without a password hash, in turn:
pools, caches and the journal's statements settle), then ``--calls`` more while
``tracemalloc`` counts the Python heap (``--samples`` times: the heap and the process's RSS),
the journal flushed and the garbage collected before each sample. The same is done for the
bare Spyne application of ``soap_operations.py`` (the baseline, same process, same calls).

It prints, for each, the heap and RSS after the warm-up and at the end, the growth per call,
and for ours the ``--top`` places (file:line, three frames) whose memory grew most. A leak
of one small object per call (~50 bytes) shows as ~50 bytes per call here; the baseline shows
what the interpreter itself moves. Nothing is asserted; exit status 0 when measured. About
a minute with the defaults (tracemalloc makes every call two to three times slower).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.soap_operations import GROUPS, bare_application, build_ours, import_rule_set, wsgi_caller
from provider.db.migrate import upgrade
from provider.journal.writer import JournalWriter

SIX = GROUPS["six, no password hash"]
FRAMES = 3
#: how long the journal's thread gets to finish a batch it took before a sample
SETTLE_SECONDS = 0.2


def rss_mb() -> float:
    """This process's resident set, MB."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 1e6


def run(calls: list[Callable[[], object]], count: int) -> None:
    """``count`` calls, the six in turn."""
    for index in range(count):
        calls[index % len(calls)]()


def settle(flush: Callable[[], object] | None) -> None:
    """What is pending written (the journal: also a batch its thread may be writing), then what
    is garbage collected."""
    if flush is not None:
        flush()
        time.sleep(SETTLE_SECONDS)
        flush()
    gc.collect()


def measure(
    calls: list[Callable[[], object]],
    *,
    warmup: int,
    count: int,
    heap_count: int,
    samples: int,
    top: int,
    flush: Callable[[], object] | None = None,
) -> dict[str, Any]:
    """After ``warmup`` calls: RSS every ``count / samples`` calls, then the Python heap every
    ``heap_count / samples`` calls under tracemalloc (which costs memory of its own: not in the
    RSS pass)."""
    run(calls, warmup)
    settle(flush)
    rss = [rss_mb()]
    for step in _steps(count, samples):
        run(calls, step)
        settle(flush)
        rss.append(rss_mb())
    tracemalloc.start(FRAMES)
    try:
        first = tracemalloc.take_snapshot()
        heap = [tracemalloc.get_traced_memory()[0]]
        for step in _steps(heap_count, samples):
            run(calls, step)
            settle(flush)
            heap.append(tracemalloc.get_traced_memory()[0])
        last = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = [stat for stat in last.compare_to(first, "traceback") if stat.size_diff > 0][:top]
    return {
        "calls": count,
        "heap_calls": heap_count,
        "rss_mb": rss,
        "heap_bytes": heap,
        "rss_kb_per_10000": (rss[-1] - rss[0]) * 1000 / count * 10_000,
        "heap_bytes_per_call": (heap[-1] - heap[0]) / heap_count,
        "grown": [
            {
                "bytes": stat.size_diff,
                "objects": stat.count_diff,
                "where": " <- ".join(f"{Path(f.filename).name}:{f.lineno}" for f in reversed(stat.traceback)),
            }
            for stat in grown
        ],
    }


def _steps(count: int, samples: int) -> list[int]:
    """``count`` calls in ``samples`` steps (the last takes the remainder)."""
    step = max(1, count // samples)
    sizes = [step] * (count // step)
    if count % step:
        sizes.append(count % step)
    return sizes


def report(label: str, result: dict[str, Any]) -> None:
    heap, rss = result["heap_bytes"], result["rss_mb"]
    print(
        f"  {label:<12} RSS {rss[0]:6.1f} -> {rss[-1]:6.1f} MB over {result['calls']:,} calls"
        f" ({result['rss_kb_per_10000']:+6.1f} kB per 10,000);"
        f" heap {heap[-1] - heap[0]:+,} bytes over {result['heap_calls']:,} calls"
        f" ({result['heap_bytes_per_call']:+.2f} bytes/call)"
    )
    print(f"  {'':<12} RSS MB by sample:   " + " ".join(f"{value:.1f}" for value in rss))
    print(f"  {'':<12} heap kB by sample:  " + " ".join(f"{value / 1e3:.0f}" for value in heap))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--warmup", type=int, default=20_000, help="calls before measuring")
    parser.add_argument("--calls", type=int, default=100_000, help="calls of the RSS pass")
    parser.add_argument("--heap-calls", type=int, default=20_000, help="calls of the heap pass (tracemalloc)")
    parser.add_argument("--samples", type=int, default=10, help="heap and RSS samples over the calls")
    parser.add_argument("--top", type=int, default=5, help="places whose memory grew most (ours)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-heap-") as tmp:
        database_url = f"sqlite:///{Path(tmp) / 'heap.db'}"
        upgrade(database_url)
        import_rule_set(database_url)
        ours = build_ours(database_url, fast_path=True)
        try:
            writer = ours.journal if isinstance(ours.journal, JournalWriter) else None
            options = {
                "warmup": args.warmup,
                "count": args.calls,
                "heap_count": args.heap_calls,
                "samples": args.samples,
                "top": args.top,
            }
            results = {
                "ours": measure(
                    [wsgi_caller(ours, op) for op in SIX], flush=writer.flush if writer else None, **options
                ),
                "bare Spyne": measure([wsgi_caller(bare_application(), op) for op in SIX], **options),
            }
        finally:
            if isinstance(ours.journal, JournalWriter):
                ours.journal.close()
            if ours.database is not None:
                ours.database.dispose()
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(
        f"What the six calls without a password hash (in turn) leave behind in process after"
        f" {args.warmup:,} calls of warm-up: RSS, then the Python heap (tracemalloc)"
    )
    for label, result in results.items():
        report(label, result)
    print("  ours, the places whose memory grew most:")
    for grown in results["ours"]["grown"]:
        print(f"    {grown['bytes']:>9,} bytes {grown['objects']:>+6} objects  {grown['where']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
