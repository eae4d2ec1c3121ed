"""Web worker memory under unauthenticated calls, each in a new operation namespace (issue 9, item 1).

Usage::

    python benchmarks/namespace_memory.py [--calls N] [--connections N] [--json]

Starts ``st-provider serve --workers 1 --no-worker`` (gunicorn; the web worker is the only child
of the process started here) and sends, over keep-alive connections, calls without ``authPW``:

1. **same namespace** (the baseline): ``N`` calls in the configured namespace;
2. **new namespace**: ``N`` calls, each ``<StartTicket xmlns="urn:x:UUID"><inputs/></StartTicket>``.

After a warm-up, it reads the worker's resident set size (``VmRSS`` in ``/proc``) before and
after each arm and prints the growth per arm and per 1,000 calls. The test suite holds the
bounded version (``tests/e2e/test_namespace_memory.py``: 5,000 calls, under 20 MB); this one
runs longer (default 20,000 calls per arm, a minute or two) to show the slope: what is left per
new namespace is libxml2's dictionary of parsed names, a few dozen bytes each, which worker
recycling bounds. Nothing is asserted. Exit status 0 when measured, 2 when the server did not
start or answered wrongly.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from provider.db.migrate import upgrade
from provider.soap.contract import SOAP11_ENV

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import provider_env, provider_server  # the benchmarks directory is not a package

PASSWORD = "benchmark-web-service-password"
CONFIGURED = "http://tempuri.org/"
WARM_UP = 500


def envelope(namespace: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="{SOAP11_ENV}"><soap:Body>'
        f'<StartTicket xmlns="{namespace}"><inputs/></StartTicket></soap:Body></soap:Envelope>'
    ).encode()


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from ``/proc/*/stat``)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        if int(text.rpartition(")")[2].split()[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def send(endpoint: str, calls: int, connections: int, namespace: Callable[[], str]) -> float:
    """``calls`` calls over ``connections`` keep-alive connections; the seconds they took."""
    headers = {"Content-Type": "text/xml; charset=utf-8"}

    def part(count: int) -> None:
        with httpx.Client(headers=headers, timeout=30) as client:
            for _ in range(count):
                response = client.post(endpoint, content=envelope(namespace()))
                if response.status_code != 200 or b"Permission Denied" not in response.content:
                    raise RuntimeError(
                        f"unexpected answer {response.status_code}: {response.content[:200]!r}"
                    )

    started = time.perf_counter()
    share, rest = divmod(calls, connections)
    with ThreadPoolExecutor(connections) as pool:
        list(pool.map(part, [share + (1 if i < rest else 0) for i in range(connections)]))
    return time.perf_counter() - started


def measure(calls: int, connections: int) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="st-ns-memory-") as directory:
        database_url = f"sqlite:///{Path(directory) / 'provider.db'}"
        upgrade(database_url)
        env = provider_env(PASSWORD, database_url)
        with provider_server(env, Path(directory) / "server.log", workers=1, no_worker=True) as server:
            (worker,) = children(server.pid)
            send(server.endpoint, WARM_UP, connections, lambda: f"urn:x:{uuid.uuid4()}")
            rows = []
            for label, namespace in (
                ("same namespace", lambda: CONFIGURED),
                ("new namespace", lambda: f"urn:x:{uuid.uuid4()}"),
            ):
                before = rss_kb(worker)
                seconds = send(server.endpoint, calls, connections, namespace)
                growth = rss_kb(worker) - before
                rows.append(
                    {
                        "row": label,
                        "calls": calls,
                        "seconds": round(seconds, 1),
                        "rss_before_kb": before,
                        "growth_kb": growth,
                        "growth_kb_per_1000": round(growth * 1000 / calls, 1),
                    }
                )
            if children(server.pid) != [worker]:
                raise RuntimeError("the worker was replaced during the run: the numbers mean nothing")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000, help="calls per arm (default 20000)")
    parser.add_argument("--connections", type=int, default=2, help="keep-alive connections (default 2)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    try:
        rows = measure(args.calls, args.connections)
    except RuntimeError as exc:
        print(f"namespace_memory: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"benchmark": "namespace_memory", "rows": rows}))
        return 0
    print(
        f"{'row':<16} {'calls':>7} {'seconds':>8} {'RSS before kB':>14} {'growth kB':>10} {'kB/1000 calls':>14}"
    )
    for row in rows:
        print(
            f"{row['row']:<16} {row['calls']:>7} {row['seconds']:>8} {row['rss_before_kb']:>14} "
            f"{row['growth_kb']:>10} {row['growth_kb_per_1000']:>14}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
