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
the other gets a unique violation (PostgreSQL) or waits for the write lock
(SQLite) and then sees it.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from provider import metrics
from provider.db.events import PENDING, DeliveryRecord, EventDedup, EventRecord
from provider.db.session import Database
from provider.domain import AcceptedEvent, IncomingEvent, Notification
from provider.errors import EventRejected, StorageError
from provider.events.wakeup import notify_workers

log = logging.getLogger("provider.events.outbox")

#: params consulted, in order, for a delivery's recipient (for reports and filters)
RECIPIENT_PARAMS = ("to", "recipient", "callerId", "caller_id", "phone", "email")
MAX_NOTIFICATIONS = 100
_INSERT_TRIES = 3


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
        with self._db.session(immediate=True) as session:
            accepted = self._accept(session, event, notifications, params, rule_errors)
        metrics.EVENTS_RECEIVED.labels(duplicate="true" if accepted.duplicate else "false").inc()
        return accepted

    def _accept(
        self,
        session: Session,
        event: IncomingEvent,
        notifications: Sequence[Notification],
        params: list[dict[str, Any]],
        rule_errors: Sequence[tuple[str, str]],
    ) -> AcceptedEvent:
        now = event.received_at
        for _ in range(_INSERT_TRIES):
            window = session.execute(
                select(EventDedup).where(EventDedup.fingerprint == event.fingerprint).with_for_update()
            ).scalar_one_or_none()
            if window is not None and window.expires_at > now:
                return self._repeat(session, window.event_id, now)
            try:
                with session.begin_nested():
                    record = self._insert_event(session, event, rule_errors)
                    if window is not None:
                        # The old window expired (and we hold its row lock): this call opens a new one.
                        window.event_id = record.id
                        window.expires_at = now + self._window
                    else:
                        session.add(
                            EventDedup(
                                fingerprint=event.fingerprint,
                                event_id=record.id,
                                expires_at=now + self._window,
                            )
                        )
                    session.flush()
            except IntegrityError:
                # Another process opened the window first; look again (now it is there).
                continue
            count = self._insert_deliveries(session, record.id, now, notifications, params)
            return AcceptedEvent(event_id=record.id, duplicate=False, deliveries=count)
        raise StorageError("event de-duplication did not settle; try again")

    def _insert_event(
        self, session: Session, event: IncomingEvent, rule_errors: Sequence[tuple[str, str]]
    ) -> EventRecord:
        record = EventRecord(
            event_type=event.event_type,
            event_name=event.event_name,
            arguments=dict(event.arguments),
            variables=[list(pair) for pair in event.variables],
            fingerprint=event.fingerprint,
            received_at=event.received_at,
            repeats=0,
            rule_errors=error_list(rule_errors),
        )
        session.add(record)
        session.flush()
        return record

    @staticmethod
    def insert_deliveries(
        session: Session,
        event_id: int,
        now: datetime,
        notifications: Sequence[Notification],
    ) -> int:
        """Add one pending delivery per notification to ``session`` (``events replay``)."""
        return Outbox._insert_deliveries(session, event_id, now, notifications, _json_ready(notifications))

    @staticmethod
    def _insert_deliveries(
        session: Session,
        event_id: int,
        now: datetime,
        notifications: Sequence[Notification],
        params: list[dict[str, Any]],
    ) -> int:
        for notification, values in zip(notifications, params, strict=True):
            session.add(
                DeliveryRecord(
                    event_id=event_id,
                    rule=notification.rule[:200],
                    channel=notification.channel[:200],
                    recipient=recipient_of(values),
                    params=values,
                    key=uuid.uuid4().hex,
                    status=PENDING,
                    attempts=0,
                    next_attempt_at=now,
                    age_from=now,
                    created_at=now,
                    updated_at=now,
                    template=notification.template[:200] if notification.template else None,
                )
            )
        session.flush()
        if notifications:
            notify_workers(session)  # workers wake when this commits (PostgreSQL)
        return len(notifications)

    def _repeat(self, session: Session, event_id: int, now: datetime) -> AcceptedEvent:
        record = session.get(EventRecord, event_id)
        if record is not None:
            record.repeats += 1
            record.last_repeated_at = now
        log.info(
            "repeated event within the de-duplication window",
            extra={"event": "events.duplicate", "event_id": event_id},
        )
        return AcceptedEvent(event_id=event_id, duplicate=True, deliveries=0)
