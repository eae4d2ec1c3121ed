"""The delivery worker's concurrent sends and wake-ups, on SQLite and PostgreSQL.

Real workers (in threads of this process) against the in-tree scripted channel
(:mod:`tests.integration.test_worker_channel`), with the real clock: bounds on sends in
flight (the worker's and each channel's), leases kept for as long as a send is in flight,
and idle workers woken by a stored event long before their poll interval (asserted on
the ``wake`` field the worker logs, never on durations).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import select

from provider.channels.base import SendResult
from provider.db.events import DELIVERED, DeliveryAttempt
from provider.db.session import Database
from provider.events.worker import Worker
from provider.settings import Settings, WorkerSettings
from tests.integration.test_worker_channel import Partner, add_channel, deliveries, enqueue
from tests.support import wait_until


class InFlight:
    """Counts the sends the scripted partner is answering at once (the most seen, per channel)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.lock = threading.Lock()
        self.now: dict[str, int] = {}
        self.most: dict[str, int] = {}
        self.total_now = 0
        self.total_most = 0

    def answer(self, channel: str) -> Callable[[Mapping[str, Any]], SendResult]:
        def slow(params: Mapping[str, Any]) -> SendResult:
            with self.lock:
                self.now[channel] = self.now.get(channel, 0) + 1
                self.most[channel] = max(self.most.get(channel, 0), self.now[channel])
                self.total_now += 1
                self.total_most = max(self.total_most, self.total_now)
            time.sleep(self.seconds)
            with self.lock:
                self.now[channel] -= 1
                self.total_now -= 1
            return SendResult(partner_id="ok", status=200)

        return slow


def make_worker(database: Database, partner: Partner, name: str, **worker: Any) -> Worker:
    config = WorkerSettings(**{"poll_interval": 0.05, "batch_size": 50, "lease_seconds": 30, **worker})
    return Worker(Settings(worker=config), database, channel_factory=partner.factory, name=name)


def attempts(database: Database) -> list[DeliveryAttempt]:
    with database.session() as session:
        return list(session.scalars(select(DeliveryAttempt).order_by(DeliveryAttempt.id)))


def test_channel_concurrency_bounds_the_sends_in_flight(database: Database) -> None:
    partner = Partner()
    add_channel(database, "narrow", concurrency=3)
    add_channel(database, "wide")
    meter = InFlight(0.2)
    for name in ("narrow", "wide"):
        partner.script(name, *[meter.answer(name) for _ in range(12)])
        for _ in range(12):
            enqueue(database, partner.clock(), name)
    worker = make_worker(database, partner, "w1", concurrency=8)
    try:
        assert worker.drain() == 24
    finally:
        worker.close()
    assert {d.status for d in deliveries(database)} == {DELIVERED}
    assert 1 < meter.most["narrow"] <= 3
    assert 1 < meter.most["wide"] <= 8
    assert meter.total_most <= 8
    # One attempt per delivery, each recorded as before.
    recorded = attempts(database)
    assert len(recorded) == 24
    assert {(a.number, a.outcome, a.worker) for a in recorded} == {(1, "delivered", "w1")}


def test_a_failure_shrinks_the_window_to_one_send(database: Database) -> None:
    """After a 500, the channel's sends go one at a time again (slow start)."""
    from tests.integration.test_worker_channel import http_error

    partner = Partner()
    add_channel(database, "hook")
    meter = InFlight(0.1)
    partner.script("hook", SendResult(partner_id="a"), http_error(500), meter.answer("hook"))
    for _ in range(3):
        enqueue(database, partner.clock(), "hook")
    worker = make_worker(database, partner, "w1", concurrency=8)
    try:
        assert worker.run_once() == 3
    finally:
        worker.close()
    outcomes = sorted(d.status for d in deliveries(database))
    assert outcomes == ["delivered", "delivered", "pending"]
    assert meter.most["hook"] == 1


def test_lease_is_renewed_while_a_send_is_in_flight(database: Database) -> None:
    """A send longer than the lease: another worker never takes the delivery over."""
    partner = Partner()
    add_channel(database, "slow")
    released = threading.Event()
    started = threading.Event()

    def long_send(params: Mapping[str, Any]) -> SendResult:
        started.set()
        released.wait(60)
        return SendResult(partner_id="late", status=200)

    partner.script("slow", long_send)
    enqueue(database, partner.clock(), "slow")
    holder = make_worker(database, partner, "holder", lease_seconds=1)
    other = make_worker(database, partner, "other", lease_seconds=1)
    errors: list[BaseException] = []

    def hold() -> None:
        try:
            holder.run_once()
        except BaseException as exc:  # asserted below
            errors.append(exc)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert started.wait(30)
        # Three lease lengths go by (lease 1 s, renewed every third of it) ...
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            assert other.run_once() == 0
            time.sleep(0.1)
    finally:
        released.set()
        thread.join(60)
        holder.close()
        other.close()
    assert errors == []
    (row,) = deliveries(database)
    assert row.status == DELIVERED
    assert [(a.outcome, a.worker) for a in attempts(database)] == [("delivered", "holder")]
    assert partner.keys() == [row.key]


# --- wake-ups ---------------------------------------------------------------------------


@contextmanager
def running(worker: Worker) -> Iterator[None]:
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), name="worker-under-test")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(60)


def index_of(records: list[logging.LogRecord], start: int, **fields: str) -> int | None:
    """The index of the first record from ``start`` on with these structured fields."""
    for index in range(start, len(records)):
        if all(getattr(records[index], name, None) == value for name, value in fields.items()):
            return index
    return None


def test_stored_event_wakes_an_idle_worker_before_its_poll(
    database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="provider.events.worker")
    partner = Partner()
    add_channel(database, "hook")
    first = "listening" if database.is_postgresql else "watching"
    expected = "notify" if database.is_postgresql else "change"
    # An hour between polls: only a wake-up can get the delivery out while the test waits.
    worker = make_worker(database, partner, "idle", poll_interval=3600)
    records = caplog.records
    with running(worker):
        wait_until(lambda: index_of(records, 0, wake=first) is not None, 30, "the waker to start")

        def idle_after_first_wake() -> bool:
            started = index_of(records, 0, wake=first)
            return started is not None and index_of(records, started, event="worker.idle") is not None

        wait_until(idle_after_first_wake, 30, "the worker to be idle")
        seen = len(records)
        enqueue(database, partner.clock(), "hook")
        wait_until(
            lambda: index_of(records, seen, event="delivery.delivered") is not None, 30, "the delivery"
        )
    woken = index_of(records, seen, event="worker.wake")
    delivered = index_of(records, seen, event="delivery.delivered")
    assert woken is not None and delivered is not None
    assert getattr(records[woken], "wake", None) == expected
    assert woken < delivered
    assert index_of(records, 0, wake="poll") is None
    (row,) = deliveries(database)
    assert row.status == DELIVERED
    assert partner.keys() == [row.key]
