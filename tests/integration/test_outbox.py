"""The transactional outbox on SQLite and PostgreSQL, driven through the domain call layer."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import func, select, text

from provider.calls import EVENT_NOT_STORED, Provider
from provider.db.events import PENDING, DeliveryRecord, EventDedup, EventRecord
from provider.db.migrate import upgrade
from provider.db.session import Database
from provider.domain import CallRequest, CallResult, Decision, Notification, Operation
from provider.errors import EventRejected
from provider.events import build_sink
from provider.events.outbox import Outbox
from provider.settings import Secret, Settings
from provider.variables import InputVariables
from tests.plugins import FixedRules
from tests.support import create_pg_database, drop_pg_database, pg_url

PW = "outbox-pw"
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


class Clock:
    """A settable clock for the provider (received_at and the de-duplication window)."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def notifications(*channels: str) -> list[Notification]:
    return [
        Notification(
            rule=f"rule-{i}", channel=channel, params={"to": f"+1555000{i}", "text": "Ticket {i}", "n": i}
        )
        for i, channel in enumerate(channels)
    ]


def provider_for(sink: Outbox, notes: list[Notification], clock: Clock | None = None) -> Provider:
    rules = FixedRules(decisions={Operation.NOTIFY_EVENT_FIRED: Decision(notifications=notes)})
    return Provider(Secret(PW), rules=rules, events=sink, clock=clock or Clock())


def fire(provider: Provider, *entries: str) -> CallResult:
    variables = InputVariables.parse([f"authPW={PW}", "eventType=502000", *entries])
    return provider.call(CallRequest(Operation.NOTIFY_EVENT_FIRED, variables, request_id="t"))


def counts(database: Database) -> tuple[int, int]:
    with database.session() as session:
        events = session.scalar(select(func.count()).select_from(EventRecord)) or 0
        deliveries = session.scalar(select(func.count()).select_from(DeliveryRecord)) or 0
    return int(events), int(deliveries)


def test_build_sink_is_the_outbox(database: Database) -> None:
    sink = build_sink(Settings(event_dedup_seconds=30), database)
    assert isinstance(sink, Outbox)


def test_event_and_deliveries_stored_together(database: Database) -> None:
    provider = provider_for(Outbox(database), notifications("sms", "hook"))
    result = fire(provider, "args_ticketNumber=ABC-123", "args_subject=Printer on fire")
    assert result.success is True
    with database.session() as session:
        [event] = session.scalars(select(EventRecord)).all()
        deliveries = session.scalars(select(DeliveryRecord).order_by(DeliveryRecord.id)).all()
    assert event.event_type == 502000
    assert event.event_name == "Ticket Created"
    assert event.arguments == {"ticketNumber": "ABC-123", "subject": "Printer on fire"}
    assert ["authPW", PW] not in event.variables
    assert all(PW not in value for _, value in event.variables)
    assert event.received_at == T0
    assert [d.channel for d in deliveries] == ["sms", "hook"]
    assert [d.rule for d in deliveries] == ["rule-0", "rule-1"]
    assert [d.recipient for d in deliveries] == ["+15550000", "+15550001"]
    assert deliveries[1].params == {"to": "+15550001", "text": "Ticket {i}", "n": 1}
    assert {d.status for d in deliveries} == {PENDING}
    assert {d.next_attempt_at for d in deliveries} == {T0}
    assert {d.event_id for d in deliveries} == {event.id}
    assert len({d.key for d in deliveries}) == 2


def test_event_without_notifications_is_still_stored(database: Database) -> None:
    result = fire(provider_for(Outbox(database), []), "args_x=1")
    assert result.success
    assert counts(database) == (1, 0)


def test_repeat_within_window_creates_no_second_set(database: Database) -> None:
    clock = Clock()
    provider = provider_for(Outbox(database, dedup_seconds=600), notifications("sms", "hook"), clock)
    assert fire(provider, "args_ticketNumber=1").success
    clock.now = T0 + timedelta(seconds=599)
    assert fire(provider, "args_ticketNumber=1").success
    assert counts(database) == (1, 2)
    with database.session() as session:
        event = session.scalars(select(EventRecord)).one()
    assert event.repeats == 1
    assert event.last_repeated_at == T0 + timedelta(seconds=599)


def test_duplicate_answer_names_the_first_event(database: Database) -> None:
    outbox = Outbox(database, dedup_seconds=600)
    provider = provider_for(outbox, [])
    event = provider.incoming_event(InputVariables.parse(["eventType=502000", "args_a=1"]))
    first = outbox.accept(event, notifications("sms"))
    again = outbox.accept(event, notifications("sms"))
    assert (first.duplicate, first.deliveries) == (False, 1)
    assert (again.duplicate, again.deliveries, again.event_id) == (True, 0, first.event_id)


def test_different_inputs_or_password_only_changes(database: Database) -> None:
    provider = provider_for(Outbox(database), notifications("sms"))
    assert fire(provider, "args_ticketNumber=1").success
    assert fire(provider, "args_ticketNumber=2").success
    assert counts(database) == (2, 2)


def test_repeat_after_window_is_a_new_event(database: Database) -> None:
    clock = Clock()
    provider = provider_for(Outbox(database, dedup_seconds=60), notifications("sms"), clock)
    assert fire(provider, "args_ticketNumber=1").success
    clock.now = T0 + timedelta(seconds=61)
    assert fire(provider, "args_ticketNumber=1").success
    clock.now = T0 + timedelta(seconds=100)
    assert fire(provider, "args_ticketNumber=1").success  # inside the second window
    assert counts(database) == (2, 2)
    with database.session() as session:
        window = session.scalars(select(EventDedup)).one()
        newest = session.scalar(select(func.max(EventRecord.id)))
    assert window.event_id == newest
    assert window.expires_at == T0 + timedelta(seconds=121)


def test_concurrent_repeats_create_one_set(database_url: str) -> None:
    """Many connections accept the same call at the same moment: one set of deliveries."""
    threads = 8
    barrier = threading.Barrier(threads)
    results: list[object] = []
    errors: list[BaseException] = []
    databases = [Database(database_url) for _ in range(threads)]
    event = Provider(Secret(PW)).incoming_event(InputVariables.parse(["eventType=502000", "args_x=race"]))

    def accept(db: Database) -> None:
        try:
            barrier.wait(timeout=30)
            results.append(Outbox(db).accept(event, notifications("sms", "hook")))
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    workers = [threading.Thread(target=accept, args=(db,)) for db in databases]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(60)
    for db in databases:
        db.dispose()
    assert errors == []
    assert len(results) == threads
    assert sum(1 for r in results if not r.duplicate) == 1  # type: ignore[attr-defined]
    assert len({r.event_id for r in results}) == 1  # type: ignore[attr-defined]
    check = Database(database_url)
    try:
        assert counts(check) == (1, 2)
    finally:
        check.dispose()


def test_params_that_are_not_plain_data_are_rejected(database: Database) -> None:
    outbox = Outbox(database)
    event = Provider(Secret(PW)).incoming_event(InputVariables.parse(["eventType=1"]))
    bad = [Notification(rule="r", channel="c", params={"when": object()})]
    with pytest.raises(EventRejected):
        outbox.accept(event, bad)
    assert counts(database) == (0, 0)


def test_too_many_notifications_are_rejected(database: Database) -> None:
    outbox = Outbox(database)
    event = Provider(Secret(PW)).incoming_event(InputVariables.parse(["eventType=1"]))
    with pytest.raises(EventRejected):
        outbox.accept(event, notifications(*(["c"] * 101)))
    assert counts(database) == (0, 0)


@pytest.fixture
def failing_channel_trigger(database: Database) -> Iterator[None]:
    """A real database failure on the insert of a delivery to channel 'boom'."""
    with database.engine.begin() as conn:
        if database.is_sqlite:
            conn.execute(
                text(
                    "CREATE TRIGGER boom BEFORE INSERT ON deliveries WHEN NEW.channel = 'boom' "
                    "BEGIN SELECT RAISE(ABORT, 'boom'); END"
                )
            )
        else:
            conn.execute(
                text(
                    "CREATE FUNCTION boom() RETURNS trigger AS $$ BEGIN "
                    "IF NEW.channel = 'boom' THEN RAISE EXCEPTION 'boom'; END IF; RETURN NEW; END $$ "
                    "LANGUAGE plpgsql"
                )
            )
            conn.execute(
                text("CREATE TRIGGER boom BEFORE INSERT ON deliveries FOR EACH ROW EXECUTE FUNCTION boom()")
            )
    yield


@pytest.mark.usefixtures("failing_channel_trigger")
def test_failed_transaction_stores_nothing_and_answers_false(database: Database) -> None:
    provider = provider_for(Outbox(database), notifications("sms", "boom"))
    result = fire(provider, "args_ticketNumber=9")
    assert result.success is False
    assert result.message == EVENT_NOT_STORED
    assert counts(database) == (0, 0)
    with database.session() as session:
        assert session.scalar(select(func.count()).select_from(EventDedup)) == 0
    # SmarterTrack's retry of the same call is not taken for a duplicate.
    ok = provider_for(Outbox(database), notifications("sms"))
    assert fire(ok, "args_ticketNumber=9").success
    assert counts(database) == (1, 1)


def test_unreachable_database_answers_false(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'not-migrated.db'}")
    try:
        result = fire(provider_for(Outbox(database), notifications("sms")), "args_a=1")
    finally:
        database.dispose()
    assert result.success is False
    assert result.message == EVENT_NOT_STORED


@pytest.mark.postgres
def test_a_window_opened_by_an_uncommitted_transaction_makes_the_waiting_one_a_duplicate(
    postgres_url: str,
) -> None:
    """PostgreSQL, the race the window's insert settles: B looks while A's window is not committed
    (B sees none), B's insert of the window waits for A; A commits; B drops its own event again
    (rolls back, in pipeline mode) and answers duplicate with A's event. One event, A's
    deliveries only."""
    first, second = Database(postgres_url), Database(postgres_url)
    event = Provider(Secret(PW)).incoming_event(InputVariables.parse(["eventType=502000", "args_x=held"]))
    outcome: list[object] = []
    try:
        with first.write_connection() as held:
            mine = Outbox(first)._accept(held, event, notifications("sms"), [{"to": "+15550000"}], ())
            backend = held.exec_driver_sql("SELECT pg_backend_pid()").scalar()
            waiting = threading.Thread(
                target=lambda: outcome.append(Outbox(second).accept(event, notifications("sms", "hook")))
            )
            waiting.start()
            _wait_until_blocked_by(first, backend)
        waiting.join(30)
    finally:
        second.dispose()
    assert not waiting.is_alive()
    assert len(outcome) == 1
    theirs = outcome[0]
    assert mine.duplicate is False and mine.deliveries == 1
    assert theirs == type(mine)(event_id=mine.event_id, duplicate=True, deliveries=0)
    try:
        assert counts(first) == (1, 1)
        with first.session() as session:
            stored = session.scalars(select(EventRecord)).one()
            window = session.scalars(select(EventDedup)).one()
        assert (stored.id, stored.repeats, window.event_id) == (mine.event_id, 1, mine.event_id)
    finally:
        first.dispose()


def _wait_until_blocked_by(database: Database, backend: object) -> None:
    """Return once another session waits for a lock held by ``backend`` (at most 30 s)."""
    deadline = datetime.now(UTC) + timedelta(seconds=30)
    while datetime.now(UTC) < deadline:
        with database.engine.connect() as conn:
            blocked = conn.execute(
                text("SELECT count(*) FROM pg_stat_activity WHERE :pid = ANY(pg_blocking_pids(pid))"),
                {"pid": backend},
            ).scalar()
        if blocked:
            return
        threading.Event().wait(0.01)
    raise AssertionError("the second transaction never waited for the first")


def _stored(database: Database, table: str, order: str, skip: set[str]) -> list[dict[str, object]]:
    """The rows of ``table`` as the driver reads them (SQLite: the stored text and numbers),
    without ``skip``."""
    with database.engine.connect() as connection:
        rows = connection.exec_driver_sql(f"SELECT * FROM {table} ORDER BY {order}").mappings().all()
    return [{k: v for k, v in row.items() if k not in skip} for row in rows]


def test_driver_path_stores_what_sqlalchemy_stores(database_url: str, request: pytest.FixtureRequest) -> None:
    """The outbox writes on the driver (SQLite: ``_accept_on_driver``; PostgreSQL: pipeline mode,
    ``_accept_in_pipeline``): the same stored values, column by column, as its SQLAlchemy Core
    path, for new events, repeats and moved windows."""
    urls = {True: database_url}
    if database_url.startswith("sqlite"):
        urls[False] = database_url.replace(".db", "-core.db")
        upgrade(urls[False])
    else:
        name = create_pg_database(template=request.getfixturevalue("pg_template"))
        request.addfinalizer(lambda: drop_pg_database(name))
        urls[False] = pg_url(name)
    stored: dict[bool, tuple[list[dict[str, object]], ...]] = {}
    for on_driver, url in urls.items():
        database = Database(url)
        try:
            outbox = Outbox(database, dedup_seconds=60)
            assert (outbox._on_driver is not None) is True
            if not on_driver:
                outbox._on_driver = None  # the Core path (PostgreSQL through a libpq without pipelines)
            provider = Provider(Secret(PW), clock=Clock())
            event = provider.incoming_event(InputVariables.parse(["eventType=502000", "args_a=\u00e9 <1>"]))
            errors = [("rule-x", "ValueError")]
            notes = [
                *notifications("sms", "hook"),
                Notification(rule="t", channel="mail", params={}, template="tpl"),
            ]
            first = outbox.accept(event, notes, errors)
            again = outbox.accept(replace(event, received_at=T0 + timedelta(seconds=30)), notes)
            later = outbox.accept(replace(event, received_at=T0 + timedelta(seconds=61)), notes[:1])
            other = outbox.accept(replace(event, fingerprint="f" * 64), [])
            assert (first.duplicate, again.duplicate, later.duplicate, other.duplicate) == (
                False,
                True,
                False,
                False,
            )
            assert again.event_id == first.event_id and (first.deliveries, later.deliveries) == (3, 1)
            stored[on_driver] = (
                _stored(database, "events", "id", set()),
                _stored(database, "event_dedup", "fingerprint", set()),
                _stored(database, "deliveries", "id", {"key"}),
            )
        finally:
            database.dispose()
    assert stored[True] == stored[False]
    events, windows, deliveries = stored[True]
    assert [e["repeats"] for e in events] == [1, 0, 0]
    assert events[0]["rule_errors"] is not None and events[1]["rule_errors"] is None
    assert len(windows) == 2 and len(deliveries) == 4


@pytest.mark.postgres
def test_postgresql_without_pipeline_mode_keeps_the_core_statements(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through a libpq older than 14 (no pipeline mode) the outbox keeps SQLAlchemy Core: the
    same answers, the window and the deliveries stored."""
    database = Database(postgres_url)
    try:
        assert Outbox(database)._on_driver is not None
        monkeypatch.setattr(psycopg.Pipeline, "is_supported", classmethod(lambda cls: False))
        assert database.supports_pipeline is False
        outbox = Outbox(database)
        assert outbox._on_driver is None
        event = Provider(Secret(PW)).incoming_event(InputVariables.parse(["eventType=502000", "args_x=old"]))
        first = outbox.accept(event, notifications("sms", "hook"))
        again = outbox.accept(event, notifications("sms", "hook"))
        assert (first.duplicate, first.deliveries) == (False, 2)
        assert (again.duplicate, again.event_id) == (True, first.event_id)
        assert counts(database) == (1, 2)
    finally:
        database.dispose()
