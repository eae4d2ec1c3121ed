"""Delivery workers: concurrent against sequential sending, NotifyEventFired while partners
are slow or failing, and how soon an idle worker picks up a new event.

Usage::

    python benchmarks/deliveries.py [--deliveries N] [--rounds N] [--concurrency N]
                                    [--duration S] [--connections N] [--slow S] [--events N]
                                    [--database-url URL] [--skip-notify] [--json] [--httpx]

The partner is ``benchmarks/fast_partner.py`` in a child process (asyncio, keep-alive): the
test suite's thread-per-connection emulators answer a few hundred requests per second and
would be measured instead of the worker. Three measurements, each beside its baseline in
the same run:

1. **Worker throughput** (in this process): ``--deliveries`` queued webhook deliveries
   drained by one :class:`~provider.events.worker.Worker` with ``concurrency=1`` (sends one
   at a time, as every worker did before concurrent sending: the **baseline**) and with
   ``--concurrency`` (default: the setting's default), alternating over ``--rounds``. Beside
   them, the webhook channel alone with no database, one send at a time and from
   ``--concurrency`` threads (the ceilings). Each row shows deliveries per second (wall) and
   per CPU-second of this process (all its threads; the partner runs elsewhere), which
   barely moves when other work competes for the CPUs.
2. **NotifyEventFired latency** (``serve --no-worker``, 2 gunicorn workers, plus one
   ``st-provider worker`` with default settings, so concurrent) in rounds alternating
   between a partner that answers at once (the **baseline**), one that answers after
   ``--slow`` seconds, and one that fails every request with 500 (retried after 0.5 s):
   p50/p99 per case and the ratios to the baseline. The SOAP side only stores the event.
   By default ``--connections`` clients send as fast as the server answers (saturating the
   machine, so the p99 is mostly queueing); ``--rate R`` sends R calls a second on a fixed
   schedule instead (open loop, latency counted from when each call was due), the load a
   help desk puts on its provider.
3. **Pick-up latency** (in this process): ``--events`` single events stored one at a time
   while a worker (``poll_interval`` 1 s) idles, time until the partner has the
   notification, with wake-ups (PostgreSQL ``LISTEN/NOTIFY``, SQLite change polling)
   against the **baseline** of the same worker with ``ST_PROVIDER_WORKER_WAKEUPS=off``.

The database is a fresh SQLite file unless ``--database-url`` names an empty PostgreSQL
database (it is migrated; its tables are written to). Exit status 0 when measured, 2 when a
process did not start. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import update

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import (  # the benchmarks directory is not a package
    REPO,
    LoadResult,
    combine,
    format_table,
    percentile,
    provider_env,
    stop_process,
)
from events import PASSWORD, closed_loop, load_paced, serving_with_worker

from provider.channels.registry import build_channel
from provider.db.events import DeliveryRecord
from provider.db.migrate import upgrade
from provider.db.rules import ChannelRecord
from provider.db.session import Database
from provider.domain import IncomingEvent, Notification
from provider.events.outbox import Outbox
from provider.events.worker import Worker
from provider.settings import Settings, WorkerSettings

RULES = """\
channels:
  hook:
    type: webhook
    url: {url}/events
    timeout: 30
    retry_waits: {{"500": 0.5}}
    max_attempts: 1000
rules:
  - name: every-ticket-event
    method: NotifyEventFired
    when: "eventType == 502000"
    then:
      notify:
        - channel: hook
          body:
            event: "{{{{ eventName }}}}"
            ticket: "{{{{ args.ticketNumber }}}}"
"""


# --- the partner ---------------------------------------------------------------------------


@contextmanager
def partner_process() -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("fast_partner.py"))],
        stdout=subprocess.PIPE,
        cwd=REPO,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode().strip()
        if not line.startswith("PORT "):
            raise RuntimeError(f"the partner did not start: {line!r}")
        yield f"http://127.0.0.1:{line.split()[1]}"
    finally:
        stop_process(process)


def control(url: str, *, delay: float = 0.0, status: int = 200) -> None:
    httpx.post(f"{url}/_control", params={"delay": delay, "status": status}, timeout=10).raise_for_status()


def accepted(url: str, client: httpx.Client | None = None) -> int:
    answer = (client or httpx).post(f"{url}/_stats", timeout=10)  # type: ignore[attr-defined]
    return int(answer.json()["accepted"])


# --- 1. throughput ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Rate:
    label: str
    count: int
    wall: float
    cpu: float

    @property
    def per_second(self) -> float:
        return self.count / self.wall

    @property
    def per_cpu_second(self) -> float:
        return self.count / self.cpu if self.cpu else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "count": self.count,
            "per_second": round(self.per_second, 1),
            "per_cpu_second": round(self.per_cpu_second, 1),
            "cpu_ms_per_delivery": round(1000 * self.cpu / self.count, 3),
        }


def timed(label: str, count: int, action: Callable[[], Any]) -> Rate:
    wall, cpu = time.perf_counter(), time.process_time()
    action()
    return Rate(label, count, time.perf_counter() - wall, time.process_time() - cpu)


def queue(database: Database, count: int, tag: str) -> None:
    outbox = Outbox(database)
    for n in range(count):
        event = IncomingEvent(
            502000,
            "Ticket Created",
            {"ticketNumber": str(n)},
            (),
            datetime.now(UTC),
            f"{tag}-{n}-{time.time()}",
        )
        outbox.accept(event, [Notification("r", "bench-hook", {"ticket": str(n), "event": "Ticket Created"})])


def drain_with(database: Database, concurrency: int, count: int, label: str) -> Rate:
    settings = Settings(worker=WorkerSettings(batch_size=50, poll_interval=0.05, concurrency=concurrency))
    worker = Worker(settings, database)
    processed = [0]

    def run() -> None:
        processed[0] = worker.drain()

    try:
        rate = timed(label, count, run)
    finally:
        worker.close()
    if processed[0] != count:
        raise RuntimeError(f"the worker processed {processed[0]} of {count} deliveries")
    return rate


def channel_alone(url: str, count: int, threads: int) -> Rate:
    channel = build_channel("bench-hook", "webhook", {"url": f"{url}/events"}, environment={}, timeout=10)
    per_thread = count // threads

    def send(index: int) -> None:
        for n in range(per_thread):
            channel.send({"ticket": str(n), "event": "Ticket Created"}, delivery_key=f"alone-{index}-{n}")

    def run() -> None:
        pool = [threading.Thread(target=send, args=(i,)) for i in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()

    label = "channel alone, one at a time" if threads == 1 else f"channel alone, {threads} threads"
    try:
        return timed(label, per_thread * threads, run)
    finally:
        channel.close()


def throughput(args: argparse.Namespace, database_url: str, partner: str) -> dict[str, Any]:
    control(partner)
    upgrade(database_url)
    database = Database(database_url)
    now = datetime.now(UTC)
    try:
        with database.session() as session:
            session.execute(  # an earlier measurement's backlog (same database) is not ours to time
                update(DeliveryRecord)
                .where(DeliveryRecord.status.in_(("pending", "sending")))
                .values(status="failed")
            )
            session.add(
                ChannelRecord(
                    name="bench-hook",
                    type="webhook",
                    settings={"url": f"{partner}/events"},
                    enabled=True,
                    created_at=now,
                    updated_at=now,
                )
            )
        sequential: list[Rate] = []
        concurrent: list[Rate] = []
        label = f"worker, concurrency {args.concurrency}"
        for round_number in range(args.rounds):
            queue(database, args.deliveries, f"seq{round_number}")
            sequential.append(drain_with(database, 1, args.deliveries, "worker, one at a time (baseline)"))
            queue(database, args.deliveries, f"con{round_number}")
            concurrent.append(drain_with(database, args.concurrency, args.deliveries, label))
        alone = [
            channel_alone(partner, args.deliveries, 1),
            channel_alone(partner, args.deliveries, args.concurrency),
        ]
    finally:
        database.dispose()
    rows = [_total(sequential), _total(concurrent), *alone]
    return {
        "rows": rows,
        "ratio": rows[1].per_second / rows[0].per_second,
        "ratio_per_cpu_second": rows[1].per_cpu_second / rows[0].per_cpu_second,
        "rounds": [(s.per_second, c.per_second) for s, c in zip(sequential, concurrent, strict=True)],
        "backend": database_url.split(":", 1)[0],
    }


def _total(rates: list[Rate]) -> Rate:
    return Rate(
        rates[0].label, sum(r.count for r in rates), sum(r.wall for r in rates), sum(r.cpu for r in rates)
    )


# --- 2. NotifyEventFired while partners are slow or failing -----------------------------------


def notify_latency(
    args: argparse.Namespace, database_url: str, partner: str, workdir: Path
) -> dict[str, Any]:
    env = provider_env(
        PASSWORD,
        database_url,
        ST_PROVIDER_WORKER_HTTP_TIMEOUT="30",
        ST_PROVIDER_LOG_LEVEL="warning",
    )
    load = closed_loop(args)
    cases = {"fast": (0.0, 200), "slow": (args.slow, 200), "failing": (0.0, 500)}
    results: dict[str, list[LoadResult]] = {name: [] for name in cases}
    with serving_with_worker(env, database_url, RULES.format(url=partner), workdir) as endpoint:
        load("warmup", endpoint, "warm", args.connections, 2)
        per_round = args.duration / args.rounds
        for n in range(args.rounds):
            for name, (delay, status) in cases.items():
                control(partner, delay=delay, status=status)
                run = f"{name}{n}"
                results[name].append(
                    load_paced(name, endpoint, run, args.rate, per_round)
                    if args.rate
                    else load(name, endpoint, run, args.connections, per_round)
                )
        control(partner)
    labels = {
        "fast": "partner fast (baseline)",
        "slow": f"partner slow ({args.slow:g} s)",
        "failing": "partner failing (HTTP 500)",
    }
    rows = [combine(labels[name], results[name]) for name in cases]
    base = rows[0]
    return {
        "rows": rows,
        "p99_ratios": {name: row.p99_ms / base.p99_ms for name, row in zip(cases, rows, strict=True)},
        "delivered_meanwhile": accepted(partner),
    }


# --- 3. pick-up latency ---------------------------------------------------------------------------


def pickup(args: argparse.Namespace, database_url: str, partner: str) -> dict[str, Any]:
    control(partner)
    database = Database(database_url)
    rows = {}
    try:
        for label, wakeups in (("poll only, every 1 s (baseline)", False), ("with wake-ups", True)):
            settings = Settings(worker=WorkerSettings(poll_interval=1.0, wakeups=wakeups))
            worker = Worker(settings, database)
            stop = threading.Event()
            thread = threading.Thread(target=worker.run, args=(stop,))
            thread.start()
            latencies = []
            with httpx.Client() as client:
                try:
                    time.sleep(1.5)  # the worker started (and its waker with it)
                    for n in range(args.events):
                        before = accepted(partner, client)
                        began = time.perf_counter()
                        queue(database, 1, f"pickup-{wakeups}-{n}")
                        while accepted(partner, client) == before:
                            time.sleep(0.002)
                        latencies.append(time.perf_counter() - began)
                        time.sleep(0.05 + (n % 7) * 0.1)  # land at different points of the poll cycle
                finally:
                    stop.set()
                    thread.join(30)
            rows[label] = latencies
    finally:
        database.dispose()
    return {
        label: {"p50_ms": 1000 * percentile(values, 50), "p95_ms": 1000 * percentile(values, 95)}
        for label, values in rows.items()
    }


# --- main -----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--deliveries", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=WorkerSettings().concurrency)
    parser.add_argument(
        "--duration", type=float, default=15.0, help="seconds of SOAP load per case, over all rounds"
    )
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--slow", type=float, default=2.0, help="the slow partner's answer delay (s)")
    parser.add_argument("--events", type=int, default=20, help="single events for the pick-up latency")
    parser.add_argument("--database-url", help="an empty database to use (default: fresh SQLite files)")
    parser.add_argument("--skip-notify", action="store_true", help="skip the NotifyEventFired measurement")
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="NotifyEventFired calls per second, sent on a fixed schedule (open loop); "
        "default 0: as fast as --connections allow (closed loop, saturating)",
    )
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--httpx", action="store_true", help="use the httpx load generator even with wrk")
    args = parser.parse_args(argv)
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-deliveries-") as tmp:
        workdir = Path(tmp)
        url = args.database_url or f"sqlite:///{workdir / 'throughput.db'}"
        try:
            with partner_process() as partner:
                report["throughput"] = throughput(args, url, partner)
                report["pickup"] = pickup(args, url, partner)
                if not args.skip_notify:
                    notify_url = args.database_url or f"sqlite:///{workdir / 'notify.db'}"
                    report["notify"] = notify_latency(args, notify_url, partner, workdir)
        except (RuntimeError, OSError, httpx.HTTPError) as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return 2
    print_report(args, report)
    return 0


def print_report(args: argparse.Namespace, report: dict[str, Any]) -> None:
    t = report["throughput"]
    if args.json:
        out = {
            "throughput": {**t, "rows": [r.as_dict() for r in t["rows"]]},
            "pickup": report["pickup"],
        }
        if "notify" in report:
            n = report["notify"]
            out["notify"] = {**n, "rows": [r.as_dict() for r in n["rows"]]}
        print(json.dumps(out, indent=2))
        return
    print(
        f"Worker throughput ({args.deliveries} deliveries x {args.rounds} rounds, {t['backend']}, fast partner)"
    )
    print(f"  {'':40} {'per s':>9} {'per CPU-s':>10} {'CPU ms each':>12}")
    for row in t["rows"]:
        print(
            f"  {row.label:40} {row.per_second:9.1f} {row.per_cpu_second:10.1f} {1000 * row.cpu / row.count:12.3f}"
        )
    print(
        f"  concurrent / one at a time: x{t['ratio']:.2f} per second, x{t['ratio_per_cpu_second']:.2f} per CPU-second"
    )
    print(
        "  rounds (one at a time, concurrent per s): " + ", ".join(f"{a:.0f}/{b:.0f}" for a, b in t["rounds"])
    )
    print()
    print(f"Pick-up latency of a single event on an idle worker ({args.events} events)")
    for label, values in report["pickup"].items():
        print(f"  {label:40} p50 {values['p50_ms']:8.1f} ms   p95 {values['p95_ms']:8.1f} ms")
    if "notify" in report:
        n = report["notify"]
        print()
        pace = f"{args.rate:g} calls/s on a fixed schedule" if args.rate else "as fast as it answers"
        print(f"NotifyEventFired under load ({pace}) while one concurrent delivery worker runs")
        print(format_table(n["rows"]))
        ratios = ", ".join(f"{name} x{value:.2f}" for name, value in n["p99_ratios"].items())
        print(f"p99 / baseline: {ratios}")
        print(f"(the partner accepted {n['delivered_meanwhile']} notifications meanwhile)")


if __name__ == "__main__":
    sys.exit(main())
