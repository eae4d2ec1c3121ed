"""The transactional outbox: NotifyEventFired's :class:`~provider.domain.EventSink`.

:meth:`Outbox.accept` stores the event and one ``pending`` delivery per rendered
notification in ONE database transaction, and nothing else: no partner is ever
called here, so SmarterTrack never waits on one. The workers
(:mod:`provider.events.worker`) send the deliveries later.

De-duplication: SmarterTrack repeats a call it timed out on. A call whose
fingerprint (every variable but ``authPW``) was accepted less than
``event_dedup_seconds`` ago creates no deliveries; it is counted on the first event
(``repeats``) and answered ``duplicate=True`` with that event's id. The window is a
row in ``event_dedup`` keyed by the fingerprint, so two processes accepting the
same call at the same moment cannot both create deliveries: one inserts the key,
the other's insert of it does nothing once the first committed (PostgreSQL: it waits
for the first transaction, then takes its event out again and answers duplicate) or
it waits for the write lock (SQLite) and then sees it.

This runs on every NotifyEventFired call while SmarterTrack waits, so no ORM session and no
savepoint, and the statements run on the driver with rows from
:class:`~provider.db.driver_rows.DriverInsert`: on SQLite in one ``BEGIN IMMEDIATE``
transaction (:meth:`~provider.db.session.Database.driver_transaction`), where a repeat is one
statement and a new event three, and SQLAlchemy's cost per statement would be most of the
call's database time; on PostgreSQL in pipeline mode
(:meth:`~provider.db.session.Database.pipeline_transaction`), where what costs is the round
trips to the server. Counting the pool's check of the connection, a repeat takes three (the
check; the window's row locked; the count sent with the ``COMMIT``) and a new event four (the
check; the window; the event inserted with its window opened or moved in one statement; its
deliveries and the workers' wake-up sent with the ``COMMIT``), where SQLAlchemy Core took five,
and six to eight. Through a libpq without pipeline mode (older than 14), PostgreSQL keeps those
Core statements.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Connection, Table, bindparam, delete, insert, select, update
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import Insert

from provider import metrics
from provider.db.driver_rows import DriverInsert, to_driver
from provider.db.events import PENDING, DeliveryRecord, EventDedup, EventRecord
from provider.db.session import Database, conflict_insert
from provider.domain import AcceptedEvent, IncomingEvent, Notification
from provider.errors import EventRejected, StorageError
from provider.events.wakeup import notify_on_driver, notify_workers

log = logging.getLogger("provider.events.outbox")

#: params consulted, in order, for a delivery's recipient (for reports and filters)
RECIPIENT_PARAMS = ("to", "recipient", "callerId", "caller_id", "phone", "email")
MAX_NOTIFICATIONS = 100
_INSERT_TRIES = 3

# Core statements built once (no ORM session, identity map or flush per call). Bound
# parameter names start with ``b_``: SQLAlchemy reserves the column names in SET clauses.
_EVENTS = cast(Table, EventRecord.__table__)
_DEDUP = cast(Table, EventDedup.__table__)
_DELIVERIES = cast(Table, DeliveryRecord.__table__)
#: the fingerprint's window, its row locked (PostgreSQL; SQLite's BEGIN IMMEDIATE holds the file)
_WINDOW = (
    select(_DEDUP.c.event_id, _DEDUP.c.expires_at)
    .where(_DEDUP.c.fingerprint == bindparam("b_fingerprint"))
    .with_for_update()
)
_REPEAT = (
    update(_EVENTS)
    .where(_EVENTS.c.id == bindparam("b_event_id"))
    .values(repeats=_EVENTS.c.repeats + 1, last_repeated_at=bindparam("b_now"))
)
_INSERT_EVENT = insert(_EVENTS).returning(_EVENTS.c.id)
_DROP_EVENT = delete(_EVENTS).where(_EVENTS.c.id == bindparam("b_event_id"))
_MOVE_WINDOW = (
    update(_DEDUP)
    .where(_DEDUP.c.fingerprint == bindparam("b_fingerprint"))
    .values(event_id=bindparam("b_event_id"), expires_at=bindparam("b_expires_at"))
)
_INSERT_DELIVERIES = insert(_DELIVERIES)
#: SQLite (:meth:`Outbox._accept_on_driver`): count a repeat inside its open window, returning
#: the first event's id, or do nothing (no row) when the fingerprint has no open window.
_SQLITE_REPEAT = (
    f"UPDATE {_EVENTS.name} SET {_EVENTS.c.repeats.name} = {_EVENTS.c.repeats.name} + 1, "  # noqa: S608
    f"{_EVENTS.c.last_repeated_at.name} = ? "
    f"WHERE {_EVENTS.c.id.name} = (SELECT {_DEDUP.c.event_id.name} FROM {_DEDUP.name} "
    f"WHERE {_DEDUP.c.fingerprint.name} = ? AND {_DEDUP.c.expires_at.name} > ?)"
    f" RETURNING {_EVENTS.c.id.name}"
)
#: PostgreSQL (:meth:`Outbox._accept_in_pipeline`): the fingerprint's window, its row locked
_PG_WINDOW = (
    f"SELECT {_DEDUP.c.event_id.name}, {_DEDUP.c.expires_at.name} FROM {_DEDUP.name} "  # noqa: S608
    f"WHERE {_DEDUP.c.fingerprint.name} = %s FOR UPDATE"
)
#: PostgreSQL: count a repeat on the first event of its (locked, open) window
_PG_REPEAT = (
    f"UPDATE {_EVENTS.name} SET {_EVENTS.c.repeats.name} = {_EVENTS.c.repeats.name} + 1, "  # noqa: S608
    f"{_EVENTS.c.last_repeated_at.name} = %s WHERE {_EVENTS.c.id.name} = %s"
)
#: SQLite: open the fingerprint's window for a new event, or move its expired one to it
_SQLITE_OPEN_WINDOW = (
    f"INSERT INTO {_DEDUP.name} ({_DEDUP.c.fingerprint.name}, {_DEDUP.c.event_id.name}, "  # noqa: S608
    f"{_DEDUP.c.expires_at.name}) VALUES (?, ?, ?) ON CONFLICT ({_DEDUP.c.fingerprint.name}) "
    f"DO UPDATE SET {_DEDUP.c.event_id.name} = excluded.{_DEDUP.c.event_id.name}, "
    f"{_DEDUP.c.expires_at.name} = excluded.{_DEDUP.c.expires_at.name}"
)
_EVENT_COLUMNS = (
    "event_type",
    "event_name",
    "arguments",
    "variables",
    "fingerprint",
    "received_at",
    "repeats",
    "last_repeated_at",
    "rule_errors",
)
_DELIVERY_COLUMNS = (
    "event_id",
    "rule",
    "channel",
    "recipient",
    "params",
    "key",
    "status",
    "attempts",
    "next_attempt_at",
    "age_from",
    "created_at",
    "updated_at",
    "template",
)
#: dialect name -> ``INSERT INTO event_dedup ... ON CONFLICT (fingerprint) DO NOTHING RETURNING``
#: (a row when inserted; ``rowcount`` is not reliable here with psycopg)
_OPEN_WINDOW: dict[str, Insert] = {}
#: duplicate -> the child of EVENTS_RECEIVED (``labels()`` takes a lock and builds a key)
_RECEIVED = {
    True: metrics.EVENTS_RECEIVED.labels(duplicate="true"),
    False: metrics.EVENTS_RECEIVED.labels(duplicate="false"),
}


def _open_window(dialect: str) -> Insert:
    """The window insert that does nothing (no row, no error) when the fingerprint has one."""
    statement = _OPEN_WINDOW.get(dialect)
    if statement is None:
        statement = (
            conflict_insert(dialect, _DEDUP)
            .on_conflict_do_nothing(index_elements=[_DEDUP.c.fingerprint])
            .returning(_DEDUP.c.event_id)
        )
        _OPEN_WINDOW[dialect] = statement
    return statement


def recipient_of(params: Mapping[str, Any]) -> str | None:
    """The recipient a delivery is for (SMS number, e-mail addresses), if its params say."""
    for name in RECIPIENT_PARAMS:
        value = params.get(name)
        if value is None or value == "":
            continue
        text = ", ".join(str(v) for v in value) if isinstance(value, list | tuple) else str(value)
        return text[:320]
    return None


def _json_ready(notifications: Sequence[Notification]) -> list[dict[str, Any]]:
    """The params of every notification as plain JSON data; EventRejected otherwise."""
    ready = []
    for notification in notifications:
        try:
            ready.append(json.loads(json.dumps(dict(notification.params), ensure_ascii=False)))
        except (TypeError, ValueError) as exc:
            raise EventRejected(
                f"rule {notification.rule!r}: notification parameters are not plain data"
            ) from exc
    return ready


def error_list(rule_errors: Sequence[tuple[str, str]]) -> list[dict[str, str]] | None:
    """The stored form of an event's rule errors: NULL when there are none."""
    return [{"rule": rule[:200], "error": error[:100]} for rule, error in rule_errors] or None


class Outbox:
    """Stores events and their deliveries (see module docstring)."""

    def __init__(self, database: Database, *, dedup_seconds: int = 600) -> None:
        self._db = database
        self._window = timedelta(seconds=dedup_seconds)
        #: the driver's statements (None: the Core path, PostgreSQL without pipeline mode)
        self._on_driver: _DriverStatements | None = None
        if database.is_sqlite or database.supports_pipeline:
            self._on_driver = _DriverStatements(database.engine.dialect)

    def accept(
        self,
        event: IncomingEvent,
        notifications: Sequence[Notification],
        rule_errors: Sequence[tuple[str, str]] = (),
    ) -> AcceptedEvent:
        """Store the event and its deliveries in one transaction, or nothing.

        ``rule_errors`` (rule name, error type) are kept on the event for ``events list
        --has-errors`` and ``events replay``.

        Raises EventRejected (too many notifications, parameters that are not plain
        data) or StorageError (the database failed); the caller answers
        ``Success=false`` and SmarterTrack may call again.
        """
        if len(notifications) > MAX_NOTIFICATIONS:
            raise EventRejected(
                f"{len(notifications)} notifications for one event (at most {MAX_NOTIFICATIONS})"
            )
        params = _json_ready(notifications)
        if self._on_driver is not None and self._db.is_sqlite:
            accepted = self._accept_on_driver(self._on_driver, event, notifications, params, rule_errors)
        elif self._on_driver is not None:
            accepted = self._accept_in_pipeline(self._on_driver, event, notifications, params, rule_errors)
        else:
            with self._db.write_connection() as connection:
                accepted = self._accept(connection, event, notifications, params, rule_errors)
        _RECEIVED[accepted.duplicate].inc()
        return accepted

    def _accept_on_driver(
        self,
        statements: _DriverStatements,
        event: IncomingEvent,
        notifications: Sequence[Notification],
        params: list[dict[str, Any]],
        rule_errors: Sequence[tuple[str, str]],
    ) -> AcceptedEvent:
        """SQLite: what :meth:`_accept` does, on the driver in one ``BEGIN IMMEDIATE`` transaction.

        The write lock is held from the first statement, so no other writer can open or move
        the window in between: a repeat is one statement (the window's check and the count), a
        new event three (the event, the window opened or moved, the deliveries)."""
        now = statements.stored_time(event.received_at)
        with self._db.driver_transaction() as driver:
            repeated = driver.execute(_SQLITE_REPEAT, (now, event.fingerprint, now)).fetchone()
            if repeated is not None:
                return self._repeated(repeated[0])
            event_id = cast(
                int, driver.execute(statements.event_sql, statements.event(event, rule_errors)).fetchone()[0]
            )
            expires_at = statements.stored_time(event.received_at + self._window)
            driver.execute(_SQLITE_OPEN_WINDOW, (event.fingerprint, event_id, expires_at))
            if notifications:
                statements.insert_deliveries(driver, event_id, event.received_at, notifications, params)
        return AcceptedEvent(event_id=event_id, duplicate=False, deliveries=len(notifications))

    def _accept_in_pipeline(
        self,
        statements: _DriverStatements,
        event: IncomingEvent,
        notifications: Sequence[Notification],
        params: list[dict[str, Any]],
        rule_errors: Sequence[tuple[str, str]],
    ) -> AcceptedEvent:
        """PostgreSQL: what :meth:`_accept` does, on psycopg in pipeline mode (see the module
        docstring for the round trips).

        The window's row is locked first (``FOR UPDATE``): an open window is a repeat; an
        expired one is moved to the new event, inserted in the same statement; none is opened
        by an insert that does nothing when another transaction opened it first (PostgreSQL
        waits for that one to commit or roll back). Then this transaction is rolled back and
        tried again, and sees the other's window."""
        now = statements.stored_time(event.received_at)
        for _ in range(_INSERT_TRIES):
            try:
                with self._db.pipeline_transaction() as driver:
                    cursor = driver.cursor()
                    window = cursor.execute(_PG_WINDOW, (event.fingerprint,)).fetchone()
                    if window is not None and window[1] > event.received_at:
                        cursor.execute(_PG_REPEAT, (now, window[0]))  # sent with the COMMIT
                        return self._repeated(window[0])
                    expires_at = statements.stored_time(event.received_at + self._window)
                    values = statements.event(event, rule_errors)
                    if window is not None:  # expired, its row locked by us: move it
                        opened = cursor.execute(
                            statements.move_window, (*values, expires_at, event.fingerprint)
                        )
                    else:
                        opened = cursor.execute(
                            statements.open_window, (*values, event.fingerprint, expires_at)
                        )
                    row = opened.fetchone()
                    if row is None:
                        raise _WindowTaken  # another transaction opened it first: roll back, look again
                    event_id = cast(int, row[0])
                    if notifications:
                        statements.insert_deliveries(
                            cursor, event_id, event.received_at, notifications, params
                        )
                        notify_on_driver(cursor)  # workers wake when this commits
            except _WindowTaken:
                continue
            return AcceptedEvent(event_id=event_id, duplicate=False, deliveries=len(notifications))
        raise StorageError("event de-duplication did not settle; try again")

    def _accept(
        self,
        connection: Connection,
        event: IncomingEvent,
        notifications: Sequence[Notification],
        params: list[dict[str, Any]],
        rule_errors: Sequence[tuple[str, str]],
    ) -> AcceptedEvent:
        """The window's check and the inserts, in the caller's transaction.

        No savepoint: the window is opened with an insert that does nothing when another
        transaction opened it first (PostgreSQL waits for that one to commit or roll back);
        then this transaction removes the event it just inserted and looks again, and sees
        the other's window. On SQLite, BEGIN IMMEDIATE already serialises the writers.
        """
        now = event.received_at
        fingerprint = event.fingerprint
        for _ in range(_INSERT_TRIES):
            window = connection.execute(_WINDOW, {"b_fingerprint": fingerprint}).first()
            if window is not None and window.expires_at > now:
                return self._repeat(connection, window.event_id, now)
            event_id: int = connection.execute(_INSERT_EVENT, _event_row(event, rule_errors)).scalar_one()
            expires_at = now + self._window
            if window is not None:
                # The old window expired (and we hold its row lock): this call opens a new one.
                moved = {"b_fingerprint": fingerprint, "b_event_id": event_id, "b_expires_at": expires_at}
                connection.execute(_MOVE_WINDOW, moved)
            elif not self._opened(connection, fingerprint, event_id, expires_at):
                # Another process opened the window first; look again (now it is there).
                connection.execute(_DROP_EVENT, {"b_event_id": event_id})
                continue
            count = _insert_deliveries(connection, event_id, now, notifications, params)
            return AcceptedEvent(event_id=event_id, duplicate=False, deliveries=count)
        raise StorageError("event de-duplication did not settle; try again")

    @staticmethod
    def _opened(connection: Connection, fingerprint: str, event_id: int, expires_at: datetime) -> bool:
        """Whether this transaction opened the fingerprint's window (False: another one had)."""
        values = {"fingerprint": fingerprint, "event_id": event_id, "expires_at": expires_at}
        return connection.execute(_open_window(connection.dialect.name), values).first() is not None

    @staticmethod
    def insert_deliveries(
        session: Session,
        event_id: int,
        now: datetime,
        notifications: Sequence[Notification],
    ) -> int:
        """Add one pending delivery per notification in ``session``'s transaction (``events replay``)."""
        connection = session.connection()
        return _insert_deliveries(connection, event_id, now, notifications, _json_ready(notifications))

    def _repeat(self, connection: Connection, event_id: int, now: datetime) -> AcceptedEvent:
        connection.execute(_REPEAT, {"b_event_id": event_id, "b_now": now})
        return self._repeated(event_id)

    @staticmethod
    def _repeated(event_id: int) -> AcceptedEvent:
        log.info(
            "repeated event within the de-duplication window",
            extra={"event": "events.duplicate", "event_id": event_id},
        )
        return AcceptedEvent(event_id=event_id, duplicate=True, deliveries=0)


def _event_row(event: IncomingEvent, rule_errors: Sequence[tuple[str, str]]) -> dict[str, Any]:
    return {
        "event_type": event.event_type,
        "event_name": event.event_name,
        "arguments": dict(event.arguments),
        "variables": [list(pair) for pair in event.variables],
        "fingerprint": event.fingerprint,
        "received_at": event.received_at,
        "repeats": 0,
        "last_repeated_at": None,
        "rule_errors": error_list(rule_errors),
    }


def _insert_deliveries(
    connection: Connection,
    event_id: int,
    now: datetime,
    notifications: Sequence[Notification],
    params: list[dict[str, Any]],
) -> int:
    """One pending delivery per notification, in one executemany; wakes the workers (PostgreSQL)."""
    if not notifications:
        return 0
    rows = _delivery_rows(event_id, now, notifications, params)
    connection.execute(_INSERT_DELIVERIES, rows)
    notify_workers(connection)  # workers wake when this commits (PostgreSQL)
    return len(rows)


def _delivery_rows(
    event_id: int, now: datetime, notifications: Sequence[Notification], params: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """One pending delivery's row (by column name) per notification."""
    return [
        {
            "event_id": event_id,
            "rule": notification.rule[:200],
            "channel": notification.channel[:200],
            "recipient": recipient_of(values),
            "params": values,
            "key": uuid.uuid4().hex,
            "status": PENDING,
            "attempts": 0,
            "next_attempt_at": now,
            "age_from": now,
            "created_at": now,
            "updated_at": now,
            "template": notification.template[:200] if notification.template else None,
        }
        for notification, values in zip(notifications, params, strict=True)
    ]


class _WindowTaken(Exception):
    """Another transaction opened the fingerprint's window first (PostgreSQL's pipeline)."""


class _DriverStatements:
    """The outbox's statements on the driver (see :class:`~provider.db.driver_rows.DriverInsert`)."""

    def __init__(self, dialect: Dialect) -> None:
        self._event = DriverInsert(_EVENTS, _EVENT_COLUMNS, dialect, returning="id")
        #: the event's insert, returning its id (its values: :meth:`event`)
        self.event_sql = self._event.sql
        self.deliveries = DriverInsert(_DELIVERIES, _DELIVERY_COLUMNS, dialect)
        #: a timestamp as the events' and windows' columns store it
        self.stored_time: Callable[[datetime], Any] = to_driver(_EVENTS.c.received_at, dialect)
        # PostgreSQL's (SQLite has no INSERT inside WITH): the event inserted and its window
        # opened (or moved) in one statement, returning the window's event id (no row: another
        # transaction's window was there).
        window_columns = f"{_DEDUP.c.fingerprint.name}, {_DEDUP.c.event_id.name}, {_DEDUP.c.expires_at.name}"
        #: its parameters: the event's values, the fingerprint, the window's expiry
        self.open_window = (
            f"WITH e AS ({self.event_sql}) INSERT INTO {_DEDUP.name} ({window_columns}) "  # noqa: S608
            f"SELECT %s, e.id, %s FROM e ON CONFLICT ({_DEDUP.c.fingerprint.name}) DO NOTHING "
            f"RETURNING {_DEDUP.c.event_id.name}"
        )
        #: its parameters: the event's values, the window's expiry, the fingerprint
        self.move_window = (
            f"WITH e AS ({self.event_sql}) UPDATE {_DEDUP.name} SET {_DEDUP.c.event_id.name} = e.id, "  # noqa: S608
            f"{_DEDUP.c.expires_at.name} = %s FROM e WHERE {_DEDUP.name}.{_DEDUP.c.fingerprint.name} = %s "
            f"RETURNING {_DEDUP.name}.{_DEDUP.c.event_id.name}"
        )

    def event(self, event: IncomingEvent, rule_errors: Sequence[tuple[str, str]]) -> tuple[Any, ...]:
        """The driver values of the event's insert (:attr:`event_sql`)."""
        return self._event.row(_event_row(event, rule_errors))

    def insert_deliveries(
        self,
        executor: Any,
        event_id: int,
        now: datetime,
        notifications: Sequence[Notification],
        params: list[dict[str, Any]],
    ) -> None:
        """Store an event's pending deliveries: one ``executemany`` of :attr:`deliveries`' statement
        on ``executor`` (the ``sqlite3`` connection or a psycopg cursor, in the caller's transaction)."""
        rows = [self.deliveries.row(r) for r in _delivery_rows(event_id, now, notifications, params)]
        executor.executemany(self.deliveries.sql, rows)
