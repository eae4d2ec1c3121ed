"""Event notifications: NotifyEventFired latency while the partner is slow, and worker throughput.

Usage::

    python benchmarks/events.py [--duration S] [--rounds N] [--connections N] [--slow S]
                                [--deliveries N] [--database-url URL] [--json] [--httpx]

Two measurements, each beside a baseline measured in the same run, on loopback:

1. **NotifyEventFired under load** (``st-provider serve --no-worker``, 2 gunicorn workers,
   plus one ``st-provider worker`` process delivering to a webhook partner). Every request
   is a distinct event (a counter in the body, so none is taken for a repeat) whose rule
   stores one webhook delivery. Rounds alternate between the partner answering at once
   (**baseline**) and the partner answering after ``--slow`` seconds (**slow partner**);
   the table shows requests/s and p50/p99 latency per case, and the ratios slow / baseline.
   A transactional outbox keeps them near 1: SmarterTrack never waits on a partner.
2. **Worker deliveries per second** against a fast partner: ``--deliveries`` queued
   deliveries drained by one in-process :class:`~provider.events.worker.Worker` (claim,
   send, record each attempt), against the **baseline** of the same webhook channel
   sending the same number of notifications in a loop with no database at all. The ratio
   is the share of partner throughput the outbox bookkeeping leaves.

The partner is the test suite's webhook receiver (``tests/emulators/webhook.py``) in a
child process (``events.py --serve-receiver``), whose delay the benchmark switches
through a control path. The database is a fresh SQLite file unless ``--database-url``
names an empty PostgreSQL database (it is migrated; its tables are written to).

Exit status 0 when measured (nothing is asserted), 2 when a process did not start or a
sample request failed. With the defaults the run takes about a minute.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import update

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import (  # the benchmarks directory is not a package
    REPO,
    WRK_REPORT_LUA,
    LoadResult,
    combine,
    format_table,
    generator_name,
    httpx_result,
    import_rules,
    provider_env,
    provider_server,
    run_wrk,
    stop_process,
    wrk_headers,
)

from provider.channels.registry import build_channel
from provider.db.events import DeliveryRecord
from provider.db.migrate import upgrade
from provider.db.rules import ChannelRecord
from provider.db.session import Database
from provider.domain import IncomingEvent, Notification, Operation
from provider.events.outbox import Outbox
from provider.events.worker import Worker
from provider.settings import Settings, WorkerSettings
from provider.soap.client import build_envelope, request_headers

PASSWORD = "bench-ws-password"
NAMESPACE = "http://tempuri.org/"
PLACEHOLDER = "__SEQ__"
RULES = """\
channels:
  hook:
    type: webhook
    url: {url}/events
    timeout: 30
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


# --- the partner, in a child process --------------------------------------------------


def serve_receiver() -> int:
    """Child process: a webhook receiver on a free port (printed), delay set via /_control."""
    from tests.emulators import base
    from tests.emulators.base import Reply, Request
    from tests.emulators.webhook import WebhookReceiver

    # The emulator writes headers and body separately; without TCP_NODELAY every answer
    # would wait for a delayed ACK (about 40 ms) and the partner, not us, would be measured.
    base._Handler.disable_nagle_algorithm = True

    class ControlledReceiver(WebhookReceiver):
        def handle(self, request: Request) -> Reply:
            if request.path == "/_control":
                self.delay = float(request.param("delay") or 0)
                # The base class sleeps delay + reply.delay after answering: not for this one.
                return Reply(200, {"delay": self.delay}, delay=-self.delay)
            if request.path == "/_stats":
                return Reply(200, {"accepted": len(self.accepted)}, delay=-self.delay)
            return super().handle(request)

        def _record(self, request: Request, status: int) -> None:
            # Keep memory flat over a long run: count, do not keep bodies.
            if request.path.startswith("/_"):
                return
            super()._record(request, status)

    receiver = ControlledReceiver()
    receiver.start()
    print(f"PORT {receiver.port}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    receiver.stop()
    return 0


@contextmanager
def receiver_process() -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve-receiver"],
        stdout=subprocess.PIPE,
        cwd=REPO,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode().strip()
        if not line.startswith("PORT "):
            raise RuntimeError(f"the receiver did not start: {line!r}")
        yield f"http://127.0.0.1:{line.split()[1]}"
    finally:
        stop_process(process)


def set_delay(url: str, seconds: float) -> None:
    httpx.post(f"{url}/_control", params={"delay": seconds}, json={}, timeout=10).raise_for_status()


def accepted(url: str) -> int:
    return int(httpx.post(f"{url}/_stats", json={}, timeout=10).json()["accepted"])


# --- NotifyEventFired load with distinct events -----------------------------------------


def envelope_parts() -> tuple[str, str, dict[str, str]]:
    entries = [
        f"authPW={PASSWORD}",
        "eventType=502000",
        f"args_ticketNumber={PLACEHOLDER}",
        "args_subject=Printer",
    ]
    body = build_envelope(Operation.NOTIFY_EVENT_FIRED, entries, namespace=NAMESPACE).decode("utf-8")
    head, tail = body.split(PLACEHOLDER)
    return head, tail, request_headers(Operation.NOTIFY_EVENT_FIRED, namespace=NAMESPACE)


_LUA = (
    """-- generated by benchmarks/events.py: one distinct event per request
local head = [==[{head}]==]
local tail = [==[{tail}]==]
local counter = 0
{headers}
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", "{run}-" .. threads)
end
request = function()
  counter = counter + 1
  return wrk.format("POST", nil, nil, head .. tid .. "-" .. counter .. tail)
end
"""
    + WRK_REPORT_LUA
)


def load_wrk(label: str, url: str, run: str, connections: int, seconds: float) -> LoadResult:
    head, tail, headers = envelope_parts()
    script = _LUA.format(head=head, tail=tail, headers=wrk_headers(headers), run=run)
    return run_wrk(label, script, url, threads=min(2, connections), connections=connections, seconds=seconds)


class _Tally:
    """The latencies and failures of POSTs made from several client threads."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors = 0
        self._lock = threading.Lock()

    def post(self, http: httpx.Client, url: str, body: bytes, since: float) -> None:
        """POST ``body``; its latency counts from ``since`` (``time.perf_counter``)."""
        try:
            ok = http.post(url, content=body).status_code == 200
        except httpx.HTTPError:
            ok = False
        with self._lock:
            self.latencies.append(time.perf_counter() - since)
            self.errors += 0 if ok else 1


def _run_clients(client: Callable[[int], None], count: int, join_seconds: float) -> None:
    pool = [threading.Thread(target=client, args=(i,)) for i in range(count)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(join_seconds)


def load_httpx(label: str, url: str, run: str, connections: int, seconds: float) -> LoadResult:
    head, tail, headers = envelope_parts()
    tally = _Tally()
    deadline = time.perf_counter() + seconds

    def client(index: int) -> None:
        with httpx.Client(timeout=10, headers=headers) as http:
            n = 0
            while time.perf_counter() < deadline:
                n += 1
                tally.post(http, url, f"{head}{run}-{index}-{n}{tail}".encode(), time.perf_counter())

    began = time.perf_counter()
    _run_clients(client, connections, seconds + 30)
    return httpx_result(label, tally.latencies, tally.errors, time.perf_counter() - began)


def load_paced(label: str, url: str, run: str, rate: float, seconds: float) -> LoadResult:
    """An open-loop load: request ``i`` is due at ``start + i / rate`` whatever the answers do.

    Latency counts from the moment a request was due, not from when a client got to send it,
    so a stalled server cannot hide its queue (no coordinated omission). 32 keep-alive
    clients share the schedule; each opens its connection (a GET of the endpoint) before
    the schedule starts, so connection set-up is not counted.
    """
    head, tail, headers = envelope_parts()
    tally = _Tally()
    lock = threading.Lock()
    counter = iter(range(max(1, int(rate * seconds))))
    clients = 32
    schedule = [0.0]  # when request 0 is due: set as the last client is ready

    def begin() -> None:
        schedule[0] = time.perf_counter() + 0.05

    ready = threading.Barrier(clients, action=begin)

    def client(index: int) -> None:
        with httpx.Client(timeout=10, headers=headers) as http:
            with suppress(httpx.HTTPError):
                http.get(url)
            ready.wait(30)
            while True:
                with lock:
                    n = next(counter, None)
                if n is None:
                    return
                due = schedule[0] + n / rate
                pause = due - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
                tally.post(http, url, f"{head}{run}-{n}{tail}".encode(), due)

    _run_clients(client, clients, seconds + 60)
    return httpx_result(label, tally.latencies, tally.errors, time.perf_counter() - schedule[0])


def closed_loop(args: argparse.Namespace) -> Callable[[str, str, str, int, float], LoadResult]:
    """The closed-loop load generator ``args`` ask for: wrk when on PATH, else threaded httpx."""
    return load_httpx if args.httpx or generator_name() != "wrk" else load_wrk


@contextmanager
def serving_with_worker(
    env: dict[str, str], database_url: str, rules_text: str, workdir: Path
) -> Iterator[str]:
    """``serve --no-worker`` (2 gunicorn workers) and one ``st-provider worker`` on ``database_url``
    (migrated, ``rules_text`` imported), logging into ``workdir``; yields the SOAP endpoint once a
    sample ``NotifyEventFired`` answered ``Success=true`` (RuntimeError otherwise)."""
    upgrade(database_url)
    rules = workdir / "rules.yaml"
    rules.write_text(rules_text, encoding="utf-8")
    import_rules(env, rules)
    with (
        provider_server(env, workdir / "serve.log", workers=2, no_worker=True) as server,
        (workdir / "worker.log").open("ab") as worker_log,
    ):
        worker = subprocess.Popen(
            [sys.executable, "-m", "provider.cli", "worker"],
            env=env,
            cwd=REPO,
            stdout=worker_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            head, tail, headers = envelope_parts()
            sample = httpx.post(
                server.endpoint, content=f"{head}sample{tail}".encode(), headers=headers, timeout=10
            )
            if sample.status_code != 200 or b"Success>true</" not in sample.content:
                raise RuntimeError(
                    f"sample NotifyEventFired failed: {sample.status_code} {sample.content[:300]!r}"
                )
            yield server.endpoint
        finally:
            stop_process(worker)


def notify_latency(
    args: argparse.Namespace, database_url: str, partner: str, workdir: Path
) -> dict[str, Any]:
    env = provider_env(
        PASSWORD,
        database_url,
        ST_PROVIDER_WORKER_POLL_INTERVAL="0.2",
        ST_PROVIDER_WORKER_HTTP_TIMEOUT="30",
        ST_PROVIDER_LOG_LEVEL="warning",
    )
    load = closed_loop(args)
    with serving_with_worker(env, database_url, RULES.format(url=partner), workdir) as endpoint:
        set_delay(partner, 0)
        load("warmup", endpoint, "warm", args.connections, 2)
        per_round = args.duration / args.rounds
        fast: list[LoadResult] = []
        slow: list[LoadResult] = []
        for n in range(args.rounds):
            set_delay(partner, 0)
            fast.append(load("baseline", endpoint, f"f{n}", args.connections, per_round))
            set_delay(partner, args.slow)
            slow.append(load("slow partner", endpoint, f"s{n}", args.connections, per_round))
        set_delay(partner, 0)
    base, slowed = combine("baseline (fast partner)", fast), combine(f"slow partner ({args.slow:g} s)", slow)
    return {
        "rows": [base, slowed],
        "p50_ratio": slowed.p50_ms / base.p50_ms if base.p50_ms else None,
        "p99_ratio": slowed.p99_ms / base.p99_ms if base.p99_ms else None,
        "delivered_meanwhile": accepted(partner),
    }


# --- worker throughput ------------------------------------------------------------------


def worker_throughput(args: argparse.Namespace, database_url: str, partner: str) -> dict[str, Any]:
    set_delay(partner, 0)
    upgrade(database_url)
    database = Database(database_url)
    settings = Settings(worker=WorkerSettings(batch_size=50, poll_interval=0.05))
    channel_settings = {"url": f"{partner}/events"}
    try:
        now = datetime.now(UTC)
        with database.session() as session:
            # The first measurement's backlog (same database with --database-url) is not ours to time.
            session.execute(
                update(DeliveryRecord)
                .where(DeliveryRecord.status.in_(("pending", "sending")))
                .values(status="failed")
            )
            session.add(
                ChannelRecord(
                    name="bench-hook",
                    type="webhook",
                    settings=channel_settings,
                    enabled=True,
                    created_at=now,
                    updated_at=now,
                )
            )
        outbox = Outbox(database)
        for n in range(args.deliveries):
            event = IncomingEvent(
                502000,
                "Ticket Created",
                {"ticketNumber": str(n)},
                (),
                datetime.now(UTC),
                f"bench-{n}-{time.time()}",
            )
            outbox.accept(
                event, [Notification("r", "bench-hook", {"ticket": str(n), "event": "Ticket Created"})]
            )
        # Baseline: the same channel, the same notifications, no database.
        channel = build_channel("bench-hook", "webhook", channel_settings, environment={}, timeout=10)
        began = time.perf_counter()
        for n in range(args.deliveries):
            channel.send({"ticket": str(n), "event": "Ticket Created"}, delivery_key=f"baseline-{n}")
        baseline = time.perf_counter() - began
        channel.close()
        worker = Worker(settings, database)
        began = time.perf_counter()
        processed = worker.drain()
        ours = time.perf_counter() - began
        worker.close()
    finally:
        database.dispose()
    if processed != args.deliveries:
        raise RuntimeError(f"the worker processed {processed} of {args.deliveries} deliveries")
    return {
        "deliveries": args.deliveries,
        "baseline_per_second": args.deliveries / baseline,
        "worker_per_second": args.deliveries / ours,
        "ratio": baseline / ours,
        "backend": database_url.split(":", 1)[0],
    }


# --- main -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--duration", type=float, default=20.0, help="seconds of load per case, over all rounds"
    )
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--slow", type=float, default=2.0, help="the slow partner's answer delay (s)")
    parser.add_argument("--deliveries", type=int, default=1000)
    parser.add_argument("--database-url", help="an empty database to use (default: a fresh SQLite file)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--httpx", action="store_true", help="use the httpx load generator even with wrk")
    parser.add_argument("--serve-receiver", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_receiver:
        return serve_receiver()
    with tempfile.TemporaryDirectory(prefix="bench-events-") as tmp:
        workdir = Path(tmp)
        url = args.database_url or f"sqlite:///{workdir / 'events.db'}"
        second_url = args.database_url or f"sqlite:///{workdir / 'throughput.db'}"
        try:
            with receiver_process() as partner:
                latency = notify_latency(args, url, partner, workdir)
                throughput = worker_throughput(args, second_url, partner)
        except (RuntimeError, OSError, httpx.HTTPError) as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return 2
    if args.json:
        print(
            json.dumps(
                {
                    "notify": [r.as_dict() for r in latency["rows"]],
                    "notify_p50_ratio": latency["p50_ratio"],
                    "notify_p99_ratio": latency["p99_ratio"],
                    "worker": throughput,
                },
                indent=2,
            )
        )
        return 0
    print("NotifyEventFired under load, partner fast vs slow (one delivery worker running)")
    print(format_table(latency["rows"]))
    print(f"slow / baseline: p50 x{latency['p50_ratio']:.2f}, p99 x{latency['p99_ratio']:.2f}")
    print(f"(the partner accepted {latency['delivered_meanwhile']} notifications meanwhile)")
    print()
    t = throughput
    print(f"Worker deliveries per second ({t['deliveries']} deliveries, {t['backend']}, fast partner)")
    print(f"  baseline: the channel alone, no database  {t['baseline_per_second']:8.1f} /s")
    print(f"  one worker: claim, send, record            {t['worker_per_second']:8.1f} /s")
    print(f"  worker / baseline: {t['ratio']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
