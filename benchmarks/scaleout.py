"""Scale-out: SOAP throughput of one st-provider instance against two, on one PostgreSQL database.

Usage::

    python benchmarks/scaleout.py [--duration S] [--rounds N] [--warmup S] [--workers N]
                                  [--threads N] [--connections N] [--pg-admin-dsn DSN]
                                  [--json] [--httpx]

Creates a scratch PostgreSQL database (through ``--pg-admin-dsn``, default ``$ST_TEST_PG_DSN`` or
the test suite's ``postgresql://postgres@127.0.0.1:5432/test``), migrates it, imports a few
``GetCustomFieldOptions`` rules with ``st-provider rules import``, and starts **two**
``st-provider serve --no-worker`` instances on it (gunicorn, ``--workers`` x ``--threads`` each,
each on its own loopback port). Then it measures requests per second and p50/p99 latency of the
representative call of ``soap_throughput.py`` (``GetCustomFieldOptions`` with 10 input
variables, SOAP 1.1, keep-alive connections), in alternating rounds:

1. **one instance**: ``--connections`` keep-alive connections to instance A;
2. **two instances**: ``--connections`` connections to each of A and B at once (one wrk whose
   threads are split between the two addresses, so the latency histogram covers both).

Each instance gets the same offered concurrency, so the ratio two / one says whether the second
instance adds throughput. It prints that ratio (the median of the per-round ratios) and the
ratio per server CPU-second. On a machine with few cores (this project's CI has 2), both
instances, PostgreSQL and the load generator share the same CPUs: the ratio then measures the
**overhead** of running a second instance (about 1.0 means none), not the capacity a second host
would add. Everything is on loopback; with the defaults the run takes about a minute.

Exit status: 0 when measured, 2 when the database could not be prepared, a server did not start
or the sample request was answered wrongly. The scratch database is dropped on every exit path.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import re
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import psycopg
from psycopg import sql

from provider.db.migrate import upgrade

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # the benchmarks directory is not a package
    REPO,
    Comparison,
    LoadResult,
    LoadSpec,
    ProviderServer,
    check_answer,
    format_table,
    generator_name,
    import_rules,
    measure_load,
    print_notes,
    process_group_cpu_seconds,
    provider_env,
    provider_server,
    run_wrk,
    warn_on_errors,
    wrk_script,
)
from soap_throughput import (  # the same representative call
    INPUT_VARIABLES,
    OPERATION,
    PASSWORD,
    request_envelope,
    request_headers,
)

ONE = "one instance"
TWO = "two instances"
DEFAULT_ADMIN_DSN = os.environ.get("ST_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")

# A couple of rules on the measured call: one matches the benchmark's "Support Department"
# (a drop-down list), one matches its custom field (a variable), one is evaluated and does not match.
RULES = """\
rules:
  - name: issue-types-support
    method: GetCustomFieldOptions
    priority: 10
    when: "'SUPPORT' in departmentName|upper"
    then:
      fields:
        - name: Type of Issue
          list: [Web site issues, Database issues, Email issues, Network connectivity]
          required: true
          visible: true
  - name: issue-types-sales
    method: GetCustomFieldOptions
    priority: 10
    when: "'SALES' in departmentName|upper"
    then:
      fields:
        - name: Type of Issue
          list: [Change Plan, Help with order]
  - name: high-priority-region
    method: GetCustomFieldOptions
    priority: 20
    when: "cf.get('Priority', '') == 'High'"
    then:
      set:
        escalationQueue: "{{ cf.get('Region', 'none') }}-priority"
"""
RULE_COUNT = len(re.findall(r"^  - name:", RULES, re.MULTILINE))
EXPECT = b"Database issues"  # the answer must show the rules were applied


# --- the database -----------------------------------------------------------------------------------


@contextlib.contextmanager
def scratch_database(admin_dsn: str) -> Iterator[str]:
    """A new, empty PostgreSQL database next to ``admin_dsn``'s; yields its URL, drops it afterwards."""
    name = f"stp_bench_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.Error as exc:
        raise RuntimeError(f"cannot create a scratch database through {_safe(admin_dsn)}: {exc}") from exc
    try:
        yield f"{admin_dsn.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def add_pg_admin_dsn(parser: argparse.ArgumentParser) -> None:
    """``--pg-admin-dsn``: where :func:`scratch_database` creates its database."""
    parser.add_argument(
        "--pg-admin-dsn",
        default=DEFAULT_ADMIN_DSN,
        help="a PostgreSQL DSN allowed to CREATE and DROP DATABASE (default $ST_TEST_PG_DSN or the test one)",
    )


def _safe(dsn: str) -> str:
    """``dsn`` without a password, for messages."""
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", dsn)


def server_env(database_url: str) -> dict[str, str]:
    return provider_env(PASSWORD, database_url, PYTHONUNBUFFERED="1")


def prepare(database_url: str, tmp: Path) -> None:
    """Migrate the database and import :data:`RULES` with ``st-provider rules import``."""
    upgrade(database_url)
    rules = tmp / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    import_rules(server_env(database_url), rules)


# --- the servers ------------------------------------------------------------------------------------


@contextlib.contextmanager
def instance(args: argparse.Namespace, database_url: str, log_path: Path) -> Iterator[ProviderServer]:
    """``st-provider serve --no-worker`` on a free loopback port, stopped on exit."""
    with provider_server(
        server_env(database_url), log_path, workers=args.workers, threads=args.threads, no_worker=True
    ) as server:
        yield server


# --- load -------------------------------------------------------------------------------------------

# Appended to _common's script: each wrk thread connects to one of the targets, in turn, so
# with 2 x T threads, T threads (and their connections) load each instance.
_SETUP = """
local targets = {{}}
local started = 0
setup = function(thread)
  if #targets == 0 then
    for _, port in ipairs({{{ports}}}) do
      table.insert(targets, wrk.lookup("127.0.0.1", port)[1])
    end
  end
  thread.addr = targets[(started % #targets) + 1]
  started = started + 1
end
"""


def _spec(args: argparse.Namespace, target: ProviderServer) -> LoadSpec:
    return LoadSpec(
        url=target.endpoint,
        body=request_envelope(),
        headers=request_headers(),
        connections=args.connections or args.workers * args.threads,
        threads=2,
        expect=EXPECT,
    )


def measure(
    label: str, args: argparse.Namespace, targets: Sequence[ProviderServer], seconds: float
) -> LoadResult:
    """The same load on each of ``targets`` at once, as one result (server CPU summed)."""
    before = sum(process_group_cpu_seconds(t.pid) for t in targets)
    if generator_name(args.httpx) == "wrk":
        result = _run_wrk(label, [_spec(args, t) for t in targets], [t.port for t in targets], seconds)
    else:
        result = _run_httpx(label, args, targets, seconds)
    used = sum(process_group_cpu_seconds(t.pid) for t in targets) - before
    return dataclasses.replace(result, cpu_seconds=used)


def _run_wrk(label: str, specs: Sequence[LoadSpec], ports: Sequence[int], seconds: float) -> LoadResult:
    spec = specs[0]
    script = wrk_script(spec) + _SETUP.format(ports=", ".join(f'"{p}"' for p in ports))
    return run_wrk(
        label,
        script,
        spec.url,
        threads=spec.threads * len(specs),
        connections=spec.connections * len(specs),
        seconds=seconds,
    )


def _run_httpx(
    label: str, args: argparse.Namespace, targets: Sequence[ProviderServer], seconds: float
) -> LoadResult:
    """The httpx fallback: one load per target at once; latencies are the slower target's."""
    results: list[LoadResult | BaseException] = []
    lock = threading.Lock()

    def run(target: ProviderServer) -> None:
        try:
            outcome: LoadResult | BaseException = measure_load(
                label, _spec(args, target), seconds, force_httpx=True
            )
        except BaseException as exc:  # re-raised below, in the caller's thread
            outcome = exc
        with lock:
            results.append(outcome)

    pool = [threading.Thread(target=run, args=(t,), daemon=True) for t in targets]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(seconds + 60)
    done = [r for r in results if isinstance(r, LoadResult)]
    failed = [r for r in results if not isinstance(r, LoadResult)]
    if failed or len(done) != len(targets):
        raise RuntimeError(f"{label}: the httpx load failed: {failed!r}")
    notes = tuple(dict.fromkeys(n for r in done for n in r.notes))
    if len(done) > 1:
        notes += ("httpx fallback: p50/p99 are the slower instance's",)
    return LoadResult(
        label=label,
        generator=done[0].generator,
        requests=sum(r.requests for r in done),
        seconds=max(r.seconds for r in done),
        errors=sum(r.errors for r in done),
        p50_ms=max(r.p50_ms for r in done),
        p99_ms=max(r.p99_ms for r in done),
        mean_ms=sum(r.mean_ms * r.requests for r in done) / max(1, sum(r.requests for r in done)),
        notes=notes,
    )


def measure_both(
    args: argparse.Namespace, database_url: str, tmp: Path
) -> tuple[Comparison, dict[str, float]]:
    """Both instances up the whole time; one and two loaded in alternating rounds.

    Returns (two measured against one, CPU seconds per instance in the two-rounds).
    """
    with (
        instance(args, database_url, tmp / "instance-a.log") as a,
        instance(args, database_url, tmp / "instance-b.log") as b,
    ):
        configurations = {ONE: [a], TWO: [a, b]}
        for target in (a, b):
            check_answer(_spec(args, target))
        if args.warmup > 0:
            for label, targets in configurations.items():
                measure(label, args, targets, args.warmup)
        rounds: dict[str, list[LoadResult]] = {ONE: [], TWO: []}
        split = {"A": 0.0, "B": 0.0}
        per_round = max(1.0, args.duration / args.rounds)
        for index in range(args.rounds):
            order = (ONE, TWO) if index % 2 == 0 else (TWO, ONE)
            for label in order:
                before = {"A": process_group_cpu_seconds(a.pid), "B": process_group_cpu_seconds(b.pid)}
                rounds[label].append(measure(label, args, configurations[label], per_round))
                if label == TWO:
                    split["A"] += process_group_cpu_seconds(a.pid) - before["A"]
                    split["B"] += process_group_cpu_seconds(b.pid) - before["B"]
    return Comparison.from_rounds(rounds[TWO], rounds[ONE]), split


# --- main -------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=16.0, help="seconds of load per configuration (16)")
    parser.add_argument(
        "--rounds", type=int, default=4, help="alternating rounds the duration is split in (4)"
    )
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per configuration (2)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers per instance (2)")
    parser.add_argument("--threads", type=int, default=4, help="gunicorn threads per worker (4)")
    parser.add_argument(
        "--connections", type=int, default=0, help="keep-alive connections per instance (workers*threads)"
    )
    add_pg_admin_dsn(parser)
    parser.add_argument("--httpx", action="store_true", help="use the httpx client even when wrk is present")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.rounds < 1 or args.workers < 1 or args.threads < 1 or args.connections < 0:
        parser.error("--duration, --rounds, --workers and --threads must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-scaleout-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            with scratch_database(args.pg_admin_dsn) as database_url:
                prepare(database_url, tmp)
                comparison, split = measure_both(args, database_url, tmp)
        except (RuntimeError, OSError, psycopg.Error) as exc:
            print(f"scaleout: {exc}", file=sys.stderr)
            return 2
    one, two = comparison.baseline, comparison.measured
    cpu_ratio = comparison.ratio_per_cpu_second
    connections = args.connections or args.workers * args.threads
    cpus = os.cpu_count() or 1
    caveat = (
        f"this machine has {cpus} CPUs shared by both instances, PostgreSQL and the load generator: "
        "the ratio measures the overhead of running a second instance (about 1.0 means none), not "
        "the capacity a second host adds (measure that with the instances on separate machines); "
        "the ratio per server CPU-second is the steadier measure of that overhead"
    )
    if args.json:
        report = {
            "operation": OPERATION,
            "input_variables": len(INPUT_VARIABLES),
            "rules": RULE_COUNT,
            "database": "postgresql",
            "workers": args.workers,
            "threads": args.threads,
            "connections_per_instance": connections,
            "cpus": cpus,
            "results": [one.as_dict(), two.as_dict()],
            **comparison.as_dict("ratio_two_to_one"),
            "two_instances_cpu_seconds": {k: round(v, 2) for k, v in split.items()},
            "note": caveat if cpus <= 4 else None,
        }
        print(json.dumps(report, indent=2))
    else:
        print(
            f"Scale-out: {OPERATION} with {len(INPUT_VARIABLES)} input variables and "
            f"{RULE_COUNT} rules, SOAP 1.1, one PostgreSQL database; each instance "
            f"`serve --no-worker`, gunicorn {args.workers} workers x {args.threads} threads, "
            f"{connections} keep-alive connections per instance; {args.duration:g} s per configuration "
            f"in {args.rounds} alternating rounds ({generator_name(args.httpx)}), {cpus} CPUs"
        )
        print(format_table([one, two]))
        print(f"ratio two / one instances: {comparison.ratio:.2f}")
        print(comparison.rounds_line())
        if cpu_ratio is not None:
            print(f"  per server CPU-second (requests / CPU the instances used): {cpu_ratio:.2f}")
        total = sum(split.values())
        if total > 0:
            print(
                f"  with two instances, server CPU split A {split['A'] / total:.0%} / "
                f"B {split['B'] / total:.0%}"
            )
        if cpus <= 4:
            print(f"note: {caveat}")
        print_notes([one, two])
    warn_on_errors([one, two])
    return 0


if __name__ == "__main__":
    os.chdir(REPO)
    sys.exit(main())
