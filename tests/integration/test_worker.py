"""The delivery worker against a real in-tree channel, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from provider.channels.base import SendResult
from provider.db.events import (
    DELIVERED,
    FAILED,
    PENDING,
    SENDING,
    ChannelState,
    DeliveryAttempt,
    EventDedup,
)
from provider.db.session import Database
from provider.errors import ChannelError
from provider.events import manual, reports
from provider.events.worker import Worker
from provider.settings import Settings, WorkerSettings
from tests.integration.test_worker_channel import (
    Clock,
    Partner,
    WorkerKilled,
    add_channel,
    deliveries,
    enqueue,
    http_error,
    update_channel,
)

WORKER = WorkerSettings(
    poll_interval=0.05, batch_size=10, lease_seconds=30, retry_backoff=2.0, retry_backoff_max=60.0
)


def settings(**env: str) -> Settings:
    return Settings(worker=WORKER, environment=env)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def partner(clock: Clock) -> Partner:
    return Partner(clock=clock)


def make_worker(database: Database, partner: Partner, clock: Clock, name: str = "w1", **env: str) -> Worker:
    return Worker(
        settings(**env), database, channel_factory=partner.factory, clock=clock, name=name, random=lambda: 0.5
    )


def attempts(database: Database, delivery_id: int) -> list[DeliveryAttempt]:
    with database.session() as session:
        return list(
            session.scalars(
                select(DeliveryAttempt)
                .where(DeliveryAttempt.delivery_id == delivery_id)
                .order_by(DeliveryAttempt.id)
            )
        )


def test_delivers_and_records_the_attempt(database: Database, partner: Partner, clock: Clock) -> None:
    add_channel(database, "sms")
    partner.script("sms", SendResult(partner_id="SM123", status=201, documents={"PRINT": {"data": "UERG"}}))
    enqueue(database, clock.now, "sms")
    worker = make_worker(database, partner, clock)
    assert worker.run_once() == 1
    [d] = deliveries(database)
    assert (d.status, d.attempts, d.partner_id, d.last_status) == (DELIVERED, 1, "SM123", 201)
    assert d.documents == {"PRINT": {"data": "UERG"}}
    assert d.finished_at == clock.now
    assert d.lease_owner is None
    [a] = attempts(database, d.id)
    assert (a.outcome, a.http_status, a.partner_id, a.worker, a.number) == (
        "delivered",
        201,
        "SM123",
        "w1",
        1,
    )
    assert a.duration >= 0
    assert partner.sent[0].params["to"] == "+15550100"
    assert partner.sent[0].key == d.key
    assert worker.run_once() == 0


def test_500_waits_five_seconds_then_succeeds(database: Database, partner: Partner, clock: Clock) -> None:
    add_channel(database, "docgen")
    partner.script("docgen", http_error(500))
    enqueue(database, clock.now, "docgen")
    worker = make_worker(database, partner, clock)
    assert worker.run_once() == 1
    [d] = deliveries(database)
    assert (d.status, d.attempts, d.last_status) == (PENDING, 1, 500)
    assert d.next_attempt_at == clock.now + timedelta(seconds=5)
    clock.advance(4.9)
    assert worker.run_once() == 0  # the wait is respected
    clock.advance(0.1)
    assert worker.run_once() == 1
    [d] = deliveries(database)
    assert d.status == DELIVERED
    first, second = attempts(database, d.id)
    assert (first.outcome, first.http_status, first.next_attempt_at) == (
        "retry",
        500,
        d.created_at + timedelta(seconds=5),
    )
    assert second.outcome == "delivered"
    assert second.started_at - first.started_at == timedelta(seconds=5)


def test_429_pauses_the_channel_for_every_worker(database: Database, partner: Partner, clock: Clock) -> None:
    add_channel(database, "docgen")
    add_channel(database, "other")
    partner.script("docgen", http_error(429, retry_after=90))
    enqueue(database, clock.now, "docgen", "docgen")
    enqueue(database, clock.now, "other")
    w1 = make_worker(database, partner, clock, "w1")
    w2 = make_worker(database, partner, clock, "w2")
    assert w1.run_once() == 3
    # The second docgen delivery of the batch was handed back without calling the partner.
    assert [s.channel for s in partner.sent] == ["docgen", "other"]
    first, second, other = deliveries(database)
    assert (first.status, first.attempts, first.next_attempt_at) == (
        PENDING,
        1,
        clock.now + timedelta(seconds=90),
    )
    assert (second.status, second.attempts) == (PENDING, 0)
    assert second.next_attempt_at == clock.now + timedelta(seconds=90)
    assert other.status == DELIVERED
    with database.session() as session:
        state = session.get(ChannelState, "docgen")
        assert state is not None
        assert state.paused_until == clock.now + timedelta(seconds=90)
        assert state.pause_reason == "HTTP 429"
    # Another worker respects the pause too, even for new deliveries that are due.
    enqueue(database, clock.now, "docgen")
    assert w2.run_once() == 0
    clock.advance(90)
    assert w2.run_once() == 3
    assert {d.status for d in deliveries(database)} == {DELIVERED}


def test_pause_by_another_worker_holds_a_batch_in_progress(
    database: Database, partner: Partner, clock: Clock
) -> None:
    add_channel(database, "docgen")
    enqueue(database, clock.now, "docgen", "docgen")
    w1 = make_worker(database, partner, clock, "w1")
    w2 = make_worker(database, partner, clock, "w2")

    def meanwhile_w1_is_told_429(params: object) -> SendResult:
        enqueue(database, clock.now, "docgen")
        assert w1.run_once() == 1
        time.sleep(0.3)  # longer than PAUSE_CHECK_SECONDS
        return SendResult(partner_id="first")

    partner.script("docgen", meanwhile_w1_is_told_429, http_error(429, retry_after=90))
    assert w2.run_once() == 2
    first, second, third = deliveries(database)
    assert first.status == DELIVERED
    assert (third.status, third.attempts, third.last_status) == (PENDING, 1, 429)
    # w2 did not send its second delivery into the pause: it handed it back for later.
    assert (second.status, second.attempts) == (PENDING, 0)
    assert second.next_attempt_at == clock.now + timedelta(seconds=90)
    assert len(partner.sent) == 2


def test_503_waits_120_seconds(database: Database, partner: Partner, clock: Clock) -> None:
    add_channel(database, "docgen")
    partner.script("docgen", http_error(503))
    enqueue(database, clock.now, "docgen")
    make_worker(database, partner, clock).run_once()
    [d] = deliveries(database)
    assert d.next_attempt_at == clock.now + timedelta(seconds=120)


def test_configured_retry_waits_override_defaults(database: Database, partner: Partner, clock: Clock) -> None:
    add_channel(database, "docgen", retry_waits={429: 2, 500: 1})
    partner.script("docgen", http_error(429), http_error(500))
    enqueue(database, clock.now, "docgen")
    worker = make_worker(database, partner, clock)
    worker.run_once()
    assert deliveries(database)[0].next_attempt_at == clock.now + timedelta(seconds=2)
    clock.advance(2)
    worker.run_once()
    assert deliveries(database)[0].next_attempt_at == clock.now + timedelta(seconds=1)


def test_final_error_fails_at_once_and_can_be_retried_by_hand(
    database: Database, partner: Partner, clock: Clock
) -> None:
    add_channel(database, "docgen")
    partner.script(
        "docgen",
        ChannelError(
            "Generate Document has failed: template missing", status=403, final=True, partner_code="E1042"
        ),
    )
    enqueue(database, clock.now, "docgen")
    worker = make_worker(database, partner, clock)
    worker.run_once()
    [d] = deliveries(database)
    assert (d.status, d.attempts, d.last_status) == (FAILED, 1, 403)
    assert d.last_error is not None and "E1042" in d.last_error and "template missing" in d.last_error
    assert worker.run_once() == 0
    manual.retry_delivery(database, d.id, actor="t", command="test", now=clock.now)
    assert worker.run_once() == 1
    [d] = deliveries(database)
    assert (d.status, d.attempts) == (DELIVERED, 1)
    assert [a.outcome for a in attempts(database, d.id)] == ["failed", "delivered"]


def test_fails_after_max_attempts(database: Database, partner: Partner, clock: Clock) -> None:
    add_channel(database, "docgen", max_attempts=3, retry_waits={500: 1})
    partner.script("docgen", *(http_error(500) for _ in range(5)))
    enqueue(database, clock.now, "docgen")
    worker = make_worker(database, partner, clock)
    for _ in range(5):
        worker.run_once()
        clock.advance(1)
    [d] = deliveries(database)
    assert (d.status, d.attempts) == (FAILED, 3)
    assert len(partner.sent) == 3
    assert [a.outcome for a in attempts(database, d.id)] == ["retry", "retry", "failed"]


def test_fails_when_too_old(database: Database, partner: Partner, clock: Clock) -> None:
    add_channel(database, "docgen", max_age="60s")
    partner.script("docgen", http_error(503))
    enqueue(database, clock.now, "docgen")
    make_worker(database, partner, clock).run_once()
    [d] = deliveries(database)
    assert d.status == FAILED


def test_connection_errors_back_off_exponentially(database: Database, partner: Partner, clock: Clock) -> None:
    add_channel(database, "hook")
    partner.script("hook", *(ChannelError("connection refused") for _ in range(4)))
    enqueue(database, clock.now, "hook")
    worker = make_worker(database, partner, clock)
    waits = []
    for _ in range(4):
        before = clock.now
        worker.run_once()
        [d] = deliveries(database)
        waits.append((d.next_attempt_at - before).total_seconds())
        clock.now = d.next_attempt_at
    # random() == 0.5: three quarters of 2, 4, 8, 16 seconds
    assert waits == [1.5, 3.0, 6.0, 12.0]


def test_rate_limit_is_shared_by_workers(database: Database, partner: Partner, clock: Clock) -> None:
    add_channel(database, "docgen", rate_limit={"calls": 3, "per": 60})
    for _ in range(8):
        enqueue(database, clock.now, "docgen")
    w1 = make_worker(database, partner, clock, "w1")
    w2 = make_worker(database, partner, clock, "w2")
    assert w1.run_once() == 3
    assert w2.run_once() == 0
    assert w1.run_once() == 0
    clock.advance(59)
    assert w2.run_once() == 0
    clock.advance(1)
    assert w2.run_once() == 3
    clock.advance(60)
    assert w1.run_once() == 2
    assert len(partner.sent) == 8


def test_crashed_worker_deliveries_are_taken_over(database: Database, partner: Partner, clock: Clock) -> None:
    add_channel(database, "sms")
    for _ in range(3):
        enqueue(database, clock.now, "sms")
    partner.script("sms", SendResult(partner_id="a"), WorkerKilled())
    dying = make_worker(database, partner, clock, "dying")
    with pytest.raises(WorkerKilled):
        dying.run_once()
    first, second, third = deliveries(database)
    assert first.status == DELIVERED
    assert (second.status, second.lease_owner) == (SENDING, "dying")
    assert third.status == SENDING
    survivor = make_worker(database, partner, clock, "survivor")
    assert survivor.run_once() == 0  # the lease still holds
    clock.advance(30)
    assert survivor.run_once() == 2
    assert {d.status for d in deliveries(database)} == {DELIVERED}
    outcomes = [a.outcome for a in attempts(database, second.id)]
    assert outcomes == ["lost", "delivered"]
    lost = attempts(database, second.id)[0]
    assert lost.worker == "dying"
    assert lost.error is not None and "may have received" in lost.error
    # The one the partner saw when the worker died is sent again (the documented duplicate).
    assert partner.keys().count(second.key) == 2
    # The third was sent at the same time as the second (the channel's window had grown to
    # two): the partner may have seen it before the worker died; a lost attempt says so.
    assert [a.outcome for a in attempts(database, third.id)] == ["lost", "delivered"]
    assert 1 <= partner.keys().count(third.key) <= 2
    assert partner.keys().count(first.key) == 1


def test_a_lease_expiring_on_the_last_attempt_fails_the_delivery(
    database: Database, partner: Partner, clock: Clock
) -> None:
    add_channel(database, "sms", max_attempts=1)
    enqueue(database, clock.now, "sms")
    partner.script("sms", WorkerKilled())
    dying = make_worker(database, partner, clock, "dying")
    with pytest.raises(WorkerKilled):
        dying.run_once()
    clock.advance(30)
    survivor = make_worker(database, partner, clock, "survivor")
    assert survivor.run_once() == 0  # taken over, but that was its last attempt: not sent again
    (row,) = deliveries(database)
    assert (row.status, row.attempts, row.lease_owner, row.lease_expires_at) == (FAILED, 1, None, None)
    assert (
        row.finished_at == clock.now and row.last_error is not None and "may have received" in row.last_error
    )
    (lost,) = attempts(database, row.id)
    assert (lost.outcome, lost.number, lost.worker) == ("lost", 1, "dying")
    assert len(partner.sent) == 1


def test_a_taken_over_delivery_of_a_rate_limited_channel_counts_in_the_window(
    database: Database, partner: Partner, clock: Clock
) -> None:
    add_channel(database, "docgen", rate_limit={"calls": 2, "per": 60})
    for _ in range(3):
        enqueue(database, clock.now, "docgen")
    partner.script("docgen", WorkerKilled())
    dying = make_worker(database, partner, clock, "dying")
    with pytest.raises(WorkerKilled):
        dying.run_once()  # claimed two (the window), the first send "killed" the worker
    clock.advance(61)
    survivor = make_worker(database, partner, clock, "survivor")
    assert survivor.run_once() == 2  # a new window: two, oldest first (both taken over)
    rows = deliveries(database)
    assert [d.status for d in rows] == [DELIVERED, DELIVERED, PENDING]
    assert [[a.outcome for a in attempts(database, d.id)] for d in rows[:2]] == [
        ["lost", "delivered"],
        ["lost", "delivered"],
    ]
    assert [a.number for a in attempts(database, rows[0].id)] == [1, 2]
    with database.session() as session:
        state = session.scalars(select(ChannelState).where(ChannelState.channel == "docgen")).one()
    assert state.window_count == 2


def test_stop_hands_the_rest_of_the_batch_back(database: Database, partner: Partner, clock: Clock) -> None:
    add_channel(database, "sms")
    for _ in range(4):
        enqueue(database, clock.now, "sms")
    stop = threading.Event()

    def stop_after_send(params: object) -> SendResult:
        stop.set()
        return SendResult(partner_id="x")

    partner.script("sms", stop_after_send)
    worker = make_worker(database, partner, clock)
    assert worker.run_once(stop) == 4
    rows = deliveries(database)
    assert [d.status for d in rows] == [DELIVERED, PENDING, PENDING, PENDING]
    assert all(d.lease_owner is None and d.attempts == 0 for d in rows[1:])
    assert len(partner.sent) == 1
    assert make_worker(database, partner, clock, "next").run_once() == 3


def test_errors_are_redacted(database: Database, partner: Partner, clock: Clock) -> None:
    add_channel(database, "docgen", client_secret="${DOCGEN_SECRET}")
    partner.script(
        "docgen", ChannelError("token refused for s3cr3t-xyz; Authorization: Bearer abc.def", status=502)
    )
    enqueue(database, clock.now, "docgen")
    make_worker(database, partner, clock, DOCGEN_SECRET="s3cr3t-xyz").run_once()
    [d] = deliveries(database)
    [a] = attempts(database, d.id)
    for text in (d.last_error or "", a.error or ""):
        assert "s3cr3t-xyz" not in text
        assert "abc.def" not in text
        assert "[redacted]" in text


def test_unknown_channel_is_retried_with_a_clear_error(
    database: Database, partner: Partner, clock: Clock
) -> None:
    enqueue(database, clock.now, "nowhere")
    make_worker(database, partner, clock).run_once()
    [d] = deliveries(database)
    assert d.status == PENDING
    assert d.last_error == "channel 'nowhere' is not configured"


def test_unbuildable_channel_is_retried_with_a_clear_error(
    database: Database, partner: Partner, clock: Clock
) -> None:
    add_channel(database, "docgen", client_secret="${MISSING_VAR}")
    enqueue(database, clock.now, "docgen")
    make_worker(database, partner, clock).run_once()
    [d] = deliveries(database)
    assert d.status == PENDING
    assert d.last_error is not None and "MISSING_VAR" in d.last_error
    assert partner.sent == []


def test_disabled_channel_waits(database: Database, partner: Partner, clock: Clock) -> None:
    add_channel(database, "sms", enabled=False)
    enqueue(database, clock.now, "sms")
    worker = make_worker(database, partner, clock)
    assert worker.run_once() == 0
    assert worker.run_once() == 0
    update_channel(database, "sms", enabled=True)
    assert worker.run_once() == 1
    assert deliveries(database)[0].status == DELIVERED


def test_channel_rebuilt_when_settings_change(database: Database, partner: Partner, clock: Clock) -> None:
    add_channel(database, "sms", account="a")
    enqueue(database, clock.now, "sms")
    worker = make_worker(database, partner, clock)
    worker.run_once()
    update_channel(database, "sms", account="b")
    enqueue(database, clock.now, "sms")
    worker.run_once()
    assert partner.built == [("sms", {"account": "a"}), ("sms", {"account": "b"})]
    assert partner.closed == ["sms"]
    worker.close()
    assert partner.closed == ["sms", "sms"]


def test_channel_bug_is_recorded_and_the_worker_goes_on(
    database: Database, partner: Partner, clock: Clock
) -> None:
    add_channel(database, "sms")
    partner.script("sms", RuntimeError("bug"))
    enqueue(database, clock.now, "sms", "sms")
    make_worker(database, partner, clock).run_once()
    first, second = deliveries(database)
    assert (first.status, first.last_error) == (PENDING, "unexpected RuntimeError in channel 'sms'")
    assert second.status == DELIVERED


def test_two_workers_deliver_everything_exactly_once(database_url: str) -> None:
    partner = Partner(delay=0.002)
    setup = Database(database_url)
    add_channel(setup, "sms")
    add_channel(setup, "hook")
    now = datetime.now(UTC)
    for _ in range(60):
        enqueue(setup, now, "sms", "hook")
    threads = []
    databases = []
    for _ in range(2):
        db = Database(database_url)
        databases.append(db)
        worker = Worker(Settings(worker=WORKER), db, channel_factory=partner.factory)
        threads.append(threading.Thread(target=worker.drain))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    rows = deliveries(setup)
    assert len(rows) == 120
    assert {d.status for d in rows} == {DELIVERED}
    keys = partner.keys()
    assert sorted(keys) == sorted(d.key for d in rows)  # each exactly once
    with setup.session() as session:
        assert session.scalar(select(func.count()).select_from(DeliveryAttempt)) == 120
    for db in [setup, *databases]:
        db.dispose()


class WorkerThread:
    """A delivery worker on a thread of this test process, until :meth:`stop`."""

    def __init__(self, settings: Settings, database: Database, partner: Partner) -> None:
        self.stop_event = threading.Event()
        worker = Worker(settings, database, channel_factory=partner.factory)
        self.thread = threading.Thread(target=worker.run, args=(self.stop_event,), daemon=True)
        self.thread.start()

    def stop(self, timeout: float) -> bool:
        self.stop_event.set()
        self.thread.join(timeout)
        return not self.thread.is_alive()


def test_worker_thread_runs_until_stopped(database: Database, partner: Partner) -> None:
    add_channel(database, "sms")
    enqueue(database, datetime.now(UTC), "sms")
    thread = WorkerThread(Settings(worker=WORKER), database, partner)
    try:
        for _ in range(250):
            if deliveries(database)[0].status == DELIVERED:
                break
            threading.Event().wait(0.02)
    finally:
        assert thread.stop(10)
    assert deliveries(database)[0].status == DELIVERED
    assert not thread.thread.is_alive()


def test_metrics_follow_deliveries_and_queue(database: Database, partner: Partner, clock: Clock) -> None:
    add_channel(database, "metered")
    partner.script("metered", http_error(503))
    enqueue(database, clock.now, "metered", "metered")

    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    delivered_before = sample("st_provider_deliveries_total", channel="metered", outcome="delivered")
    retry_before = sample("st_provider_deliveries_total", channel="metered", outcome="retry")
    worker = make_worker(database, partner, clock)
    worker.run_once()
    assert sample("st_provider_deliveries_total", channel="metered", outcome="retry") == retry_before + 1
    clock.advance(130)
    stats = reports.refresh_queue_metrics(database, clock.now)
    assert stats.counts[PENDING] == 2
    assert sample("st_provider_queue_depth", status="pending") == 2
    assert sample("st_provider_oldest_pending_seconds") == 130
    assert sample("st_provider_channel_paused", channel="metered") == 0
    worker.run_once()
    assert (
        sample("st_provider_deliveries_total", channel="metered", outcome="delivered") == delivered_before + 2
    )
    reports.refresh_queue_metrics(database, clock.now)
    assert sample("st_provider_queue_depth", status="pending") == 0


def test_paused_gauge(database: Database, partner: Partner, clock: Clock) -> None:
    add_channel(database, "pausing")
    partner.script("pausing", http_error(429))
    enqueue(database, clock.now, "pausing")
    make_worker(database, partner, clock).run_once()
    reports.refresh_queue_metrics(database, clock.now)
    assert REGISTRY.get_sample_value("st_provider_channel_paused", {"channel": "pausing"}) == 1


def test_housekeeping_forgets_closed_windows(database: Database, partner: Partner, clock: Clock) -> None:
    enqueue(database, clock.now)
    clock.advance(601)
    make_worker(database, partner, clock).run_once()
    with database.session() as session:
        assert session.scalar(select(func.count()).select_from(EventDedup)) == 0


def test_invalid_generic_settings_are_reported(database: Database, partner: Partner, clock: Clock) -> None:
    add_channel(database, "sms", max_attempts="many")
    enqueue(database, clock.now, "sms")
    make_worker(database, partner, clock).run_once()
    [d] = deliveries(database)
    assert d.status == PENDING
    assert d.last_error is not None and "max_attempts" in d.last_error
