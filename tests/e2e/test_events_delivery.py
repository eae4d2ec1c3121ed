"""End to end: NotifyEventFired over real SOAP, delivered by worker processes to a webhook.

The provider runs under gunicorn (``st-provider serve --no-worker``), delivery workers
run as separate ``st-provider worker`` processes, the partner is the loopback webhook
receiver (``tests/emulators/webhook.py``), rules and channels come from a rules file
imported with ``st-provider rules import``. Failures are real: scripted 429/500/503
answers, a worker killed with SIGKILL in the middle of a batch, the partner stopped
for a while. Waits are shortened through the channel's ``retry_waits`` and the worker
settings so the run stays short.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from itertools import pairwise
from pathlib import Path

import pytest
import zeep
from sqlalchemy import select
from zeep.transports import Transport

from provider.assembly import build_provider
from provider.db.events import DELIVERED, SENDING, DeliveryAttempt, DeliveryRecord, EventRecord
from provider.db.session import Database
from provider.domain import CallRequest, Operation
from provider.settings import Settings
from provider.variables import InputVariables
from tests.emulators.base import Reply, Request
from tests.emulators.webhook import WebhookReceiver
from tests.support import (
    WEB_SERVICE_PASSWORD,
    ServerProcess,
    Workers,
    base_env,
    poll,
    run_cli,
    serve,
    wait_until,
)

pytestmark = pytest.mark.e2e

HOOK_SECRET = "webhook-secret"  # what the webhook_receiver fixture verifies
WAITS = {429: 2.0, 503: 2.0, 500: 1.0}
WORKER_ENV = {
    "ST_PROVIDER_WORKER_POLL_INTERVAL": "0.1",
    "ST_PROVIDER_WORKER_LEASE_SECONDS": "3",
    "ST_PROVIDER_WORKER_BATCH_SIZE": "5",
    "ST_PROVIDER_WORKER_RETRY_BACKOFF": "0.5",
    "ST_PROVIDER_WORKER_RETRY_BACKOFF_MAX": "2",
    "ST_PROVIDER_WORKER_HTTP_TIMEOUT": "3",
    "ST_PROVIDER_LOG_FORMAT": "json",
    "HOOK_SECRET": HOOK_SECRET,
}
RULES = """\
channels:
  hook:
    type: webhook
    url: {url}/events
    secret: ${{HOOK_SECRET}}
    retry_waits: {{"429": 2, "503": 2, "500": 1}}
    max_attempts: 50
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


# --- processes ---------------------------------------------------------------------


@dataclass
class Configured:
    """A database with the rules file imported, and the environment of every process."""

    receiver: WebhookReceiver
    workers: Workers
    database: Database
    env: dict[str, str]


@dataclass
class Pipeline(Configured):
    server: ServerProcess | None = None

    @property
    def endpoint(self) -> str:
        assert self.server is not None
        return self.server.endpoint


@pytest.fixture
def configured(database_url: str, webhook_receiver: WebhookReceiver, tmp_path: Path) -> Iterator[Configured]:
    env = base_env(database_url, **WORKER_ENV)
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.format(url=webhook_receiver.url), encoding="utf-8")
    imported = run_cli(["rules", "import", str(rules)], env)
    assert imported.returncode == 0, imported.stderr
    database = Database(database_url)
    workers = Workers(env, tmp_path)
    try:
        yield Configured(webhook_receiver, workers, database, env)
    finally:
        workers.stop_all()
        database.dispose()


@pytest.fixture
def pipeline(configured: Configured, tmp_path: Path) -> Iterator[Pipeline]:
    """``configured``, plus the provider serving SOAP (without its embedded worker)."""
    c = configured
    with serve(c.env, tmp_path / "server.log", workers=2, extra_args=("--no-worker",)) as server:
        yield Pipeline(c.receiver, c.workers, c.database, c.env, server)


# --- SOAP --------------------------------------------------------------------------


@dataclass(frozen=True)
class Fired:
    ticket: str
    success: bool
    message: str | None
    started: float
    returned: float


def soap_client(endpoint: str) -> zeep.Client:
    return zeep.Client(f"{endpoint}?wsdl", transport=Transport(timeout=30, operation_timeout=30))


def fire_one(client: zeep.Client, ticket: str) -> Fired:
    entries = [f"authPW={WEB_SERVICE_PASSWORD}", "eventType=502000", f"args_ticketNumber={ticket}"]
    started = time.time()
    result = client.service.NotifyEventFired(inputs={"InputVariables": {"string": entries}})
    return Fired(ticket, bool(result.Success), result.Message, started, time.time())


def fire(endpoint: str, tickets: Iterable[str], *, threads: int = 4) -> list[Fired]:
    """NotifyEventFired for each ticket, from ``threads`` SOAP clients at once."""
    pending = list(tickets)
    lock = threading.Lock()
    fired: list[Fired] = []
    errors: list[BaseException] = []

    def run() -> None:
        client = soap_client(endpoint)
        while True:
            with lock:
                if not pending:
                    return
                ticket = pending.pop(0)
            try:
                answer = fire_one(client, ticket)
            except BaseException as exc:  # collected and asserted below
                errors.append(exc)
                return
            with lock:
                fired.append(answer)

    pool = [threading.Thread(target=run) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(120)
    assert errors == []
    return fired


# --- database views ----------------------------------------------------------------


def all_deliveries(database: Database) -> list[DeliveryRecord]:
    with database.session() as session:
        return list(session.scalars(select(DeliveryRecord).order_by(DeliveryRecord.id)))


def all_attempts(database: Database) -> dict[int, list[DeliveryAttempt]]:
    grouped: dict[int, list[DeliveryAttempt]] = {}
    with database.session() as session:
        for attempt in session.scalars(select(DeliveryAttempt).order_by(DeliveryAttempt.id)):
            grouped.setdefault(attempt.delivery_id, []).append(attempt)
    return grouped


def tickets_of_events(database: Database) -> Counter[str]:
    with database.session() as session:
        return Counter(str(e.arguments.get("ticketNumber")) for e in session.scalars(select(EventRecord)))


def holds_lease(database: Database, pid: int) -> bool:
    return any(d.status == SENDING and f":{pid}:" in (d.lease_owner or "") for d in all_deliveries(database))


def connection_failures(database: Database) -> int:
    attempts = all_attempts(database).values()
    return sum(1 for group in attempts for a in group if a.http_status is None and a.outcome == "retry")


def everything_delivered(database: Database, expected: int) -> bool:
    rows = all_deliveries(database)
    return len(rows) == expected and all(d.status == DELIVERED for d in rows)


# --- checks shared by the tests ----------------------------------------------------


def assert_nothing_lost(p: Pipeline, fired: list[Fired]) -> dict[str, int]:
    """Every accepted event stored once, delivered, and received by the partner; duplicates
    only for deliveries whose worker died before recording (a ``lost`` attempt)."""
    assert all(f.success for f in fired), [f.message for f in fired if not f.success]
    tickets = [f.ticket for f in fired]
    assert tickets_of_events(p.database) == Counter(tickets)
    rows = all_deliveries(p.database)
    assert len(rows) == len(fired)
    assert {d.status for d in rows} == {DELIVERED}
    received = Counter(r.headers.get("idempotency-key", "") for r in p.receiver.accepted)
    attempts = all_attempts(p.database)
    bodies = {r.json()["ticket"] for r in p.receiver.accepted}
    assert bodies == set(tickets)
    for d in rows:
        lost = sum(1 for a in attempts[d.id] if a.outcome == "lost")
        assert 1 <= received[d.key] <= 1 + lost, (d.id, received[d.key], lost)
    return {d.key: received[d.key] for d in rows}


def assert_retry_waits_respected(p: Pipeline) -> int:
    """Every retry waited at least the configured time, in the database and at the partner."""
    checked = 0
    for attempts in all_attempts(p.database).values():
        for before, after in pairwise(attempts):
            if before.outcome != "retry" or before.next_attempt_at is None:
                continue
            answered = before.started_at + timedelta(seconds=before.duration)
            if before.http_status in WAITS:
                wait = before.next_attempt_at - answered
                assert wait >= timedelta(seconds=WAITS[before.http_status] - 0.01), (before.http_status, wait)
                checked += 1
            early = before.next_attempt_at - after.started_at
            assert early <= timedelta(milliseconds=50), (before.delivery_id, after.outcome, early)
    # At the partner: after a 429/503 that a worker lived to record, nobody sent anything
    # while the channel was paused (the first half second allows for sends already under
    # way in another worker).
    keys = {d.id: d.key for d in all_deliveries(p.database)}
    recorded = {
        (keys[a.delivery_id], a.http_status) for group in all_attempts(p.database).values() for a in group
    }
    answers = sorted(p.receiver.received, key=lambda r: r.at)
    for r in answers:
        if r.status in (429, 503) and (r.headers.get("idempotency-key"), r.status) in recorded:
            during = [o for o in answers if r.at + 0.6 <= o.at <= r.at + WAITS[r.status] - 0.2]
            assert during == [], (r.status, r.at, [(o.status, o.at) for o in during])
    return checked


# --- tests -------------------------------------------------------------------------


def test_bursts_crash_and_outage_lose_nothing(pipeline: Pipeline, database_url: str) -> None:
    p = pipeline
    two_workers = "postgresql" in database_url
    p.receiver.script(429, 500, 503, 500, 429)
    first = p.workers.start("a")
    if two_workers:
        p.workers.start("b")
    p.workers.wait_ready("a")
    fired = fire(p.endpoint, [f"T-{n}" for n in range(30)])

    # Kill worker "a" with SIGKILL while it holds leases (in the middle of a batch).
    p.receiver.delay = 0.4
    more = iter(range(100, 160))
    for _ in range(6):
        if poll(lambda: holds_lease(p.database, first.pid), 5):
            break
        fired += fire(p.endpoint, [f"T-{next(more)}" for _ in range(5)])
    assert holds_lease(p.database, first.pid)
    p.workers.kill(first)
    p.receiver.delay = 0.0
    p.workers.start("c")
    p.workers.wait_ready("c")

    # The partner goes away for a while; SmarterTrack's calls are still accepted.
    with p.receiver.down():
        during = fire(p.endpoint, [f"T-{n}" for n in range(200, 210)], threads=2)
        wait_until(lambda: connection_failures(p.database) >= 3, 30, "attempts against the outage")
    assert all(f.success for f in during)
    fired += during

    wait_until(lambda: everything_delivered(p.database, len(fired)), 120, "every delivery")
    counts = assert_nothing_lost(p, fired)
    lost = [a for attempts in all_attempts(p.database).values() for a in attempts if a.outcome == "lost"]
    assert lost, "the killed worker held leases: its deliveries show a lost attempt"
    assert all(f":{first.pid}:" in (a.worker or "") for a in lost)
    assert sum(counts.values()) - len(counts) <= len(lost)  # duplicates only as documented
    checked = assert_retry_waits_respected(p)
    # The five scripted answers, but the killed worker may have been waiting for one of them.
    assert checked >= 4, checked
    errors = [a.error or "" for attempts in all_attempts(p.database).values() for a in attempts]
    assert all(HOOK_SECRET not in e for e in errors)
    statuses = Counter(r.status for r in p.receiver.received)
    assert statuses[429] == 2 and statuses[503] == 1 and statuses[500] == 2
    # The other workers stop gracefully on SIGTERM.
    assert [p.workers.stop(w) for w in p.workers.running if w is not first] == [0] * (1 + two_workers)


def test_slow_partner_does_not_hold_up_smartertrack(pipeline: Pipeline) -> None:
    p = pipeline
    p.receiver.delay = 1.0
    p.workers.start("a")
    client = soap_client(p.endpoint)
    fired = [fire_one(client, f"S-{n}") for n in range(5)]
    # SmarterTrack repeats a call it timed out on: no second delivery.
    repeat = fire_one(client, "S-0")
    assert repeat.success
    wait_until(lambda: everything_delivered(p.database, len(fired)), 90, "every delivery")
    assert_nothing_lost(p, fired)
    # Every call was answered before the partner answered its notification: nothing waited on it.
    answered_at = {r.json()["ticket"]: r.at + p.receiver.delay for r in p.receiver.accepted}
    for f in fired:
        assert f.returned < answered_at[f.ticket]
    with p.database.session() as session:
        repeats = session.scalars(select(EventRecord.repeats).where(EventRecord.repeats > 0)).all()
    assert repeats == [1]


def test_worker_once_drains_and_exits(configured: Configured) -> None:
    """``st-provider worker --once`` delivers what is due, then exits (no server needed)."""
    c = configured
    provider = build_provider(
        Settings.from_mapping({"web_service_password": WEB_SERVICE_PASSWORD}), c.database
    )
    events = [f"O-{n}" for n in range(6)]
    for ticket in events:
        variables = InputVariables.parse(
            [f"authPW={WEB_SERVICE_PASSWORD}", "eventType=502000", f"args_ticketNumber={ticket}"]
        )
        assert provider.call(CallRequest(Operation.NOTIFY_EVENT_FIRED, variables)).success
    result = run_cli(["worker", "--once"], c.env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "6 deliveries processed"
    assert sorted(r.json()["ticket"] for r in c.receiver.accepted) == sorted(events)
    assert everything_delivered(c.database, 6)


def test_worker_killed_during_a_concurrent_batch_loses_nothing(pipeline: Pipeline, database_url: str) -> None:
    """SIGKILL while several sends to a slow partner are in flight at once: another worker
    delivers everything; the partner sees a notification twice only where a ``lost``
    attempt was recorded."""
    p = pipeline
    p.workers.env.update(ST_PROVIDER_WORKER_CONCURRENCY="8", ST_PROVIDER_WORKER_BATCH_SIZE="20")
    arrived: list[str] = []
    answer = p.receiver.handle

    def counting(request: Request) -> Reply:
        arrived.append(request.headers.get("idempotency-key", ""))
        return answer(request)

    p.receiver.handle = counting  # type: ignore[method-assign]
    p.receiver.delay = 1.0
    first = p.workers.start("a")
    if "postgresql" in database_url:
        p.workers.start("b")
    p.workers.wait_ready("a")
    fired = fire(p.endpoint, [f"K-{n}" for n in range(40)])

    # The partner has at least three of worker a's requests at once (arrived, not yet answered).
    def several_in_flight() -> bool:
        waiting = Counter(arrived) - Counter(
            r.headers.get("idempotency-key", "") for r in p.receiver.received
        )
        leased = {
            d.key
            for d in all_deliveries(p.database)
            if d.status == SENDING and f":{first.pid}:" in (d.lease_owner or "")
        }
        return len(set(waiting) & leased) >= 3

    wait_until(several_in_flight, 60, "several sends in flight")
    p.workers.kill(first)
    p.receiver.delay = 0.1
    p.workers.start("c")

    wait_until(lambda: everything_delivered(p.database, len(fired)), 120, "every delivery")
    counts = assert_nothing_lost(p, fired)
    lost = [a for attempts in all_attempts(p.database).values() for a in attempts if a.outcome == "lost"]
    assert len(lost) >= 3, "the killed worker had several sends in flight"
    assert all(f":{first.pid}:" in (a.worker or "") for a in lost)
    assert sum(counts.values()) - len(counts) <= len(lost)  # duplicates only as documented
