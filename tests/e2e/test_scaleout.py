"""The scale-out proof: two SOAP instances and two delivery workers on one PostgreSQL database.

On loopback, against one fresh PostgreSQL database: two ``st-provider serve --no-worker``
instances (gunicorn, two workers each, each on its own port) and two ``st-provider worker``
processes. SOAP calls are spread across both instances (raw SOAP 1.1 posts, a new connection
per call, so every gunicorn worker answers some). Mid-run the ``StartTicket`` rule is changed
with ``st-provider rules import --replace``; every instance must apply it within a bounded time
(polled until both answer the new way, and until every serving process that had loaded the old
rules logged loading the new ones); after that no call on either answers the old way. Then
``NotifyEventFired`` calls spread across both instances must each be delivered exactly once to
the webhook partner, by one of the two workers (which worker is scheduling luck: reported, not
asserted).

Run it on its own with ``pytest -m scaleout``.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from provider.db.events import DELIVERED, OUTCOME_DELIVERED, DeliveryAttempt, DeliveryRecord, EventRecord
from provider.db.session import Database
from provider.domain import Operation
from provider.soap.client import CallAnswer, parse_answer
from tests.emulators.webhook import WebhookReceiver
from tests.fixtures.server import AUTH, soap_request
from tests.support import ServerProcess, Workers, base_env, run_cli, serve, wait_until

pytestmark = [pytest.mark.scaleout, pytest.mark.e2e, pytest.mark.postgres]

REFRESH_SECONDS = 0.5
#: how long an instance may take to apply a rule change (the refresh interval, plus slack for
#: a loaded 2-core machine); the measured time is printed.
APPLY_BOUND_SECONDS = 15.0
OLD_DEPARTMENT = "Tier One Support"
NEW_DEPARTMENT = "Tier Two Support"
EVENTS = 40
ENV = {
    "ST_PROVIDER_RULES_REFRESH_SECONDS": str(REFRESH_SECONDS),
    "ST_PROVIDER_WORKER_POLL_INTERVAL": "0.1",
    "ST_PROVIDER_WORKER_BATCH_SIZE": "4",
    "ST_PROVIDER_WORKER_LEASE_SECONDS": "10",
    "ST_PROVIDER_WORKER_HTTP_TIMEOUT": "5",
    "ST_PROVIDER_LOG_FORMAT": "json",
    "HOOK_SECRET": "webhook-secret",  # what the webhook_receiver fixture verifies
}
RULES = """\
channels:
  hook:
    type: webhook
    url: {url}/events
    secret: ${{HOOK_SECRET}}
rules:
  - name: route-tickets
    method: StartTicket
    then:
      set:
        departmentName: {department}
  - name: ticket-events
    method: NotifyEventFired
    when: "eventType == 502000"
    then:
      notify:
        - channel: hook
          body:
            ticket: "{{{{ args.ticketNumber }}}}"
"""


# --- processes ---------------------------------------------------------------------


@dataclass
class Cluster:
    """Two SOAP instances and two delivery workers sharing one PostgreSQL database."""

    instances: list[ServerProcess]
    workers: Workers
    receiver: WebhookReceiver
    database: Database
    env: dict[str, str]
    rules_path: Path


def log_events(text: str, name: str) -> list[dict[str, object]]:
    """The JSON log records of ``text`` whose ``event`` is ``name``."""
    found = []
    for line in text.splitlines():
        if line.startswith("{") and f'"{name}"' in line:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("event") == name:
                found.append(record)
    return found


def loaded_versions(instance: ServerProcess) -> dict[int, set[int]]:
    """{rule set version: pids of the instance's processes that logged loading it}."""
    loaded: dict[int, set[int]] = {}
    for record in log_events(instance.log(), "rules.reloaded"):
        loaded.setdefault(int(str(record["version"])), set()).add(int(str(record["pid"])))
    return loaded


def stale_processes(instance: ServerProcess, version: int = 2) -> set[int]:
    """Pids of the instance that loaded an older rule set and not yet ``version``."""
    loaded = loaded_versions(instance)
    older = set().union(*(pids for v, pids in loaded.items() if v < version))
    return older - loaded.get(version, set())


@pytest.fixture
def cluster(postgres_url: str, webhook_receiver: WebhookReceiver, tmp_path: Path) -> Iterator[Cluster]:
    env = base_env(postgres_url, **ENV)
    rules_path = tmp_path / "rules.yaml"
    rules_path.write_text(RULES.format(url=webhook_receiver.url, department=OLD_DEPARTMENT), encoding="utf-8")
    imported = run_cli(["rules", "import", str(rules_path)], env)
    assert imported.returncode == 0, imported.stderr
    database = Database(postgres_url)
    workers = Workers(env, tmp_path)
    with ExitStack() as stack:
        stack.callback(database.dispose)
        stack.callback(workers.stop_all)
        # The workers boot while the instances do; the instances start one after the other.
        for name in ("a", "b"):
            workers.start(name)
        instances = [
            stack.enter_context(
                serve(env, tmp_path / f"instance-{name}.log", workers=2, extra_args=("--no-worker",))
            )
            for name in ("a", "b")
        ]
        for name in ("a", "b"):
            workers.wait_ready(name)
        yield Cluster(instances, workers, webhook_receiver, database, env, rules_path)


# --- SOAP --------------------------------------------------------------------------


def call(instance: ServerProcess, operation: Operation, *entries: str) -> CallAnswer:
    """One raw SOAP 1.1 call on a new connection (so each gunicorn worker gets some)."""
    body, headers = soap_request(operation, (AUTH, *entries))
    response = httpx.post(instance.endpoint, content=body, headers=headers, timeout=20)
    return parse_answer(response.content, operation, status=response.status_code)


def department(instance: ServerProcess) -> str:
    """The department StartTicket routes a ticket to on ``instance``."""
    answer = call(instance, Operation.START_TICKET, "departmentName=Support", "subject=scale-out")
    assert answer.success and answer.status == 200, answer
    return answer.outputs.get("departmentName") or ""


@dataclass(frozen=True)
class Observed:
    instance: int
    started: float
    finished: float
    department: str


@dataclass
class Load:
    """Threads calling StartTicket on the instances in turn until stopped, recording each answer."""

    instances: list[ServerProcess]
    threads: int = 4
    observed: list[Observed] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _pool: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        self._pool = [threading.Thread(target=self._run, args=(n,)) for n in range(self.threads)]
        for thread in self._pool:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._pool:
            thread.join(30)

    def _run(self, offset: int) -> None:
        turn = offset
        while not self._stop.is_set():
            index = turn % len(self.instances)
            turn += 1
            started = time.monotonic()
            try:
                answer = department(self.instances[index])
            except BaseException as exc:  # collected and asserted by the test
                with self._lock:
                    self.errors.append(exc)
                return
            with self._lock:
                self.observed.append(Observed(index, started, time.monotonic(), answer))


def fire_events(instances: list[ServerProcess], tickets: list[str], threads: int = 4) -> list[CallAnswer]:
    """NotifyEventFired for each ticket, ticket ``n`` on instance ``n % 2``, from ``threads`` threads."""
    answers: list[CallAnswer | None] = [None] * len(tickets)
    errors: list[BaseException] = []

    def run(offset: int) -> None:
        for n in range(offset, len(tickets), threads):
            entries = ("eventType=502000", "eventName=TicketCreated", f"args_ticketNumber={tickets[n]}")
            try:
                answers[n] = call(instances[n % len(instances)], Operation.NOTIFY_EVENT_FIRED, *entries)
            except BaseException as exc:  # collected and asserted below
                errors.append(exc)
                return

    pool = [threading.Thread(target=run, args=(n,)) for n in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(60)
    assert errors == []
    assert all(a is not None for a in answers)
    return [a for a in answers if a is not None]


# --- database views ----------------------------------------------------------------


def deliveries(database: Database) -> list[DeliveryRecord]:
    with database.session() as session:
        return list(session.scalars(select(DeliveryRecord).order_by(DeliveryRecord.id)))


def attempts(database: Database) -> list[DeliveryAttempt]:
    with database.session() as session:
        return list(session.scalars(select(DeliveryAttempt).order_by(DeliveryAttempt.id)))


def event_tickets(database: Database) -> Counter[str]:
    with database.session() as session:
        return Counter(str(e.arguments.get("ticketNumber")) for e in session.scalars(select(EventRecord)))


# --- the test ----------------------------------------------------------------------


def test_two_instances_two_workers_share_one_database(cluster: Cluster) -> None:
    c = cluster
    a, b = c.instances

    # Both instances answer with the imported rule, whichever gunicorn worker takes the call.
    for _ in range(4):
        assert [department(a), department(b)] == [OLD_DEPARTMENT, OLD_DEPARTMENT]

    # --- a rule change through the CLI, while both instances are under load -------------
    load = Load(c.instances)
    load.start()
    try:
        wait_until(lambda: len(load.observed) >= 20 or bool(load.errors), 30, "load on both instances")
        c.rules_path.write_text(RULES.format(url=c.receiver.url, department=NEW_DEPARTMENT), encoding="utf-8")
        change_started = time.monotonic()
        replaced = run_cli(["rules", "import", str(c.rules_path), "--replace"], c.env)
        change_done = time.monotonic()
        assert replaced.returncode == 0, replaced.stderr
        assert "rule set version 2" in replaced.stdout, replaced.stdout

        # Poll both until both answer the new way (bounded).
        applied: dict[int, float] = {}
        deadline = change_done + APPLY_BOUND_SECONDS
        while len(applied) < 2 and time.monotonic() < deadline:
            for index, instance in enumerate(c.instances):
                if index not in applied and department(instance) == NEW_DEPARTMENT:
                    applied[index] = time.monotonic()
            time.sleep(0.02)
        assert sorted(applied) == [0, 1], f"instances that applied the change: {sorted(applied)}"
        # A gunicorn worker not asked since the change still holds the old rules until its next
        # call (and a concurrent call may get them while that call reloads): wait, bounded,
        # until every serving process that loaded the old version logged loading the new one.
        wait_until(
            lambda: all(not stale_processes(i) for i in c.instances),
            max(1.0, deadline - time.monotonic()),
            "every serving process to load rule set version 2",
        )
        both_new = time.monotonic()

        # From here on, no call on either instance may answer the old way.
        probes = [(index, department(c.instances[index])) for _ in range(10) for index in (0, 1)]
        wait_until(
            lambda: sum(1 for o in load.observed if o.started > both_new) >= 40 or bool(load.errors),
            30,
            "calls after the change",
        )
    finally:
        load.stop()
    assert load.errors == []
    assert probes == [(index, NEW_DEPARTMENT) for _ in range(10) for index in (0, 1)]
    observed = load.observed
    assert {o.department for o in observed} == {OLD_DEPARTMENT, NEW_DEPARTMENT}
    assert all(o.department == OLD_DEPARTMENT for o in observed if o.finished < change_started)
    after = [o for o in observed if o.started > both_new]
    assert {o.instance for o in after} == {0, 1}
    stale = [o for o in after if o.department != NEW_DEPARTMENT]
    assert stale == [], stale

    reloaded = [loaded_versions(i).get(2, set()) for i in c.instances]
    assert all(reloaded), reloaded  # each instance logged loading version 2

    # --- events fired on both instances, each delivered exactly once ---------------------
    tickets = [f"SC-{n:03d}" for n in range(EVENTS)]
    answers = fire_events(c.instances, tickets)
    assert all(x.success for x in answers), [x.message for x in answers if not x.success]
    wait_until(
        lambda: len(rows := deliveries(c.database)) == EVENTS and all(d.status == DELIVERED for d in rows),
        45,
        f"{EVENTS} deliveries delivered",
    )
    rows = deliveries(c.database)
    assert event_tickets(c.database) == Counter(tickets)
    keys = [d.key for d in rows]
    assert len(set(keys)) == EVENTS
    received = Counter(r.headers.get("idempotency-key", "") for r in c.receiver.accepted)
    assert received == Counter(keys), "each delivery reaches the partner exactly once"
    assert sorted(r.json()["ticket"] for r in c.receiver.accepted) == tickets
    assert len(c.receiver.received) == EVENTS  # nothing refused, nothing sent twice

    tried = attempts(c.database)
    assert Counter(t.delivery_id for t in tried) == Counter({d.id: 1 for d in rows})
    assert {t.outcome for t in tried} == {OUTCOME_DELIVERED}
    pids = {w.pid for w in c.workers.running}
    by_worker = Counter(next((pid for pid in pids if f":{pid}:" in (t.worker or "")), None) for t in tried)
    assert None not in by_worker, f"a delivery attempt by a process other than the workers: {by_worker}"

    # How it went (scheduling luck, so reported rather than asserted).
    per_instance = Counter(o.instance for o in observed)
    print(
        f"\nscale-out: {len(observed)} StartTicket calls under load "
        f"(instance a {per_instance[0]}, instance b {per_instance[1]}); "
        f"rule change applied {applied[0] - change_done:.2f}s (a) and {applied[1] - change_done:.2f}s (b) "
        f"after the import returned, every serving process {both_new - change_done:.2f}s; "
        f"{len(after)} load calls after that, none stale; "
        f"serving pids that loaded version 2: a {sorted(reloaded[0])}, b {sorted(reloaded[1])}"
    )
    print(
        f"scale-out: {EVENTS} events delivered once each; deliveries by worker "
        + ", ".join(f"pid {pid}: {count}" for pid, count in sorted(by_worker.items(), key=str))
    )
    for process in c.workers.running:
        assert c.workers.stop(process) == 0
