"""What happened to events and deliveries: the queries behind the CLI reports and gauges.

Every function takes the :class:`~provider.db.session.Database` and returns plain
frozen rows (no ORM objects escape), newest first. Nothing here shows a secret:
attempt errors were redacted before they were stored, channel settings are not
read at all, and a sign-in code delivery's parameters are hidden (but the recipient)
and its code is taken out of its errors (:mod:`provider.comms.signin_scrub`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import CursorResult, Select, func, select, update
from sqlalchemy.orm import Session

from provider import metrics
from provider.channels.specs import MESSAGE_KINDS, SPECS
from provider.comms.signin_scrub import code_id_of, hide_params, hide_text
from provider.db.base import utcnow
from provider.db.events import (
    FAILED,
    PENDING,
    SENDING,
    STATUSES,
    ChannelState,
    DeliveryAttempt,
    DeliveryRecord,
    EventRecord,
)
from provider.db.rules import ChannelRecord
from provider.db.session import Database
from provider.errors import DeliveryNotFound, ProviderError
from provider.events.wakeup import notify_workers

MAX_LIMIT = 100_000


@dataclass(frozen=True)
class DeliveryFilter:
    """Filters of ``deliveries list`` (all optional; ``recipient`` matches a part, any case)."""

    status: str | None = None
    channel: str | None = None
    event_type: int | None = None
    recipient: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    event_id: int | None = None
    #: message kind (sms, email, webhook, docgen): deliveries of channels of those types
    kind: str | None = None
    #: the message template the deliveries were rendered from
    template: str | None = None


@dataclass(frozen=True)
class DeliveryRow:
    id: int
    event_id: int
    event_type: int | None
    event_name: str | None
    rule: str
    channel: str
    recipient: str | None
    status: str
    attempts: int
    created_at: datetime
    updated_at: datetime
    next_attempt_at: datetime | None
    finished_at: datetime | None
    last_status: int | None
    last_error: str | None
    partner_id: str | None
    template: str | None = None


@dataclass(frozen=True)
class AttemptRow:
    number: int
    started_at: datetime
    duration: float
    outcome: str
    http_status: int | None
    partner_id: str | None
    error: str | None
    worker: str | None
    next_attempt_at: datetime | None


@dataclass(frozen=True)
class DeliveryDetail:
    delivery: DeliveryRow
    key: str
    params: Mapping[str, Any]
    documents: Mapping[str, Any] | None
    attempts: tuple[AttemptRow, ...]


@dataclass(frozen=True)
class EventRow:
    id: int
    event_type: int | None
    event_name: str | None
    received_at: datetime
    arguments: Mapping[str, Any]
    repeats: int
    deliveries: Mapping[str, int] = field(default_factory=dict)
    #: the rules that raised for this event: [{"rule": name, "error": type}]
    rule_errors: list[dict[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class QueueStats:
    """Deliveries by status, the oldest unfinished one's age, and channels paused now."""

    counts: Mapping[str, int]
    oldest_pending_seconds: float | None
    paused: Mapping[str, datetime]
    #: every channel with shared state (it was rate limited or paused at some time)
    channels: tuple[str, ...] = ()


def _delivery_query() -> Select[DeliveryRecord, int | None, str | None, str]:
    return select(
        DeliveryRecord, EventRecord.event_type, EventRecord.event_name, EventRecord.fingerprint
    ).join(EventRecord, EventRecord.id == DeliveryRecord.event_id)


def _row(
    session: Session, record: DeliveryRecord, event_type: int | None, event_name: str | None, fingerprint: str
) -> DeliveryRow:
    return DeliveryRow(
        id=record.id,
        event_id=record.event_id,
        event_type=event_type,
        event_name=event_name,
        rule=record.rule,
        channel=record.channel,
        recipient=record.recipient,
        status=record.status,
        attempts=record.attempts,
        created_at=record.created_at,
        updated_at=record.updated_at,
        next_attempt_at=record.next_attempt_at if record.status == PENDING else None,
        finished_at=record.finished_at,
        last_status=record.last_status,
        last_error=hide_text(session, fingerprint, record.params, record.last_error),
        partner_id=record.partner_id,
        template=record.template,
    )


def list_deliveries(
    database: Database, filters: DeliveryFilter, *, limit: int = 100, offset: int = 0
) -> list[DeliveryRow]:
    """Deliveries matching ``filters``, newest first, at most ``limit`` after skipping ``offset``."""
    query = _delivery_query()
    if filters.status:
        if filters.status not in STATUSES:
            raise ProviderError(f"unknown status {filters.status!r} (known: {', '.join(STATUSES)})")
        query = query.where(DeliveryRecord.status == filters.status)
    if filters.channel:
        query = query.where(DeliveryRecord.channel == filters.channel)
    if filters.event_type is not None:
        query = query.where(EventRecord.event_type == filters.event_type)
    if filters.recipient:
        query = query.where(
            func.lower(DeliveryRecord.recipient).contains(filters.recipient.lower(), autoescape=True)
        )
    if filters.since is not None:
        query = query.where(DeliveryRecord.created_at >= filters.since)
    if filters.until is not None:
        query = query.where(DeliveryRecord.created_at < filters.until)
    if filters.event_id is not None:
        query = query.where(DeliveryRecord.event_id == filters.event_id)
    if filters.kind:
        query = query.where(DeliveryRecord.channel.in_(_channels_of_kind(filters.kind)))
    if filters.template:
        query = query.where(DeliveryRecord.template == filters.template)
    query = (
        query.order_by(DeliveryRecord.id.desc()).limit(max(1, min(limit, MAX_LIMIT))).offset(max(0, offset))
    )
    with database.session() as session:
        return [_row(session, *found) for found in session.execute(query)]


def _channels_of_kind(kind: str) -> Select[str]:
    """The names of the configured channels whose type sends messages of ``kind``."""
    if kind not in MESSAGE_KINDS:
        raise ProviderError(f"unknown message kind {kind!r} (known: {', '.join(MESSAGE_KINDS)})")
    types = [name for name, spec in SPECS.items() if spec.message_kind == kind]
    return select(ChannelRecord.name).where(ChannelRecord.type.in_(types))


def get_delivery(database: Database, delivery_id: int) -> DeliveryDetail:
    """One delivery with every attempt, oldest first; raises DeliveryNotFound."""
    with database.session() as session:
        found = session.execute(_delivery_query().where(DeliveryRecord.id == delivery_id)).first()
        if found is None:
            raise DeliveryNotFound(f"no delivery has id {delivery_id}")
        record, event_type, event_name, fingerprint = found
        secret = code_id_of(fingerprint) is not None
        attempts = session.scalars(
            select(DeliveryAttempt)
            .where(DeliveryAttempt.delivery_id == delivery_id)
            .order_by(DeliveryAttempt.id)
        )
        return DeliveryDetail(
            delivery=_row(session, record, event_type, event_name, fingerprint),
            key=record.key,
            params=hide_params(record.params, record.recipient) if secret else dict(record.params),
            documents=dict(record.documents) if record.documents else None,
            attempts=tuple(
                AttemptRow(
                    number=a.number,
                    started_at=a.started_at,
                    duration=a.duration,
                    outcome=a.outcome,
                    http_status=a.http_status,
                    partner_id=a.partner_id,
                    error=hide_text(session, fingerprint, record.params, a.error),
                    worker=a.worker,
                    next_attempt_at=a.next_attempt_at,
                )
                for a in attempts
            ),
        )


def retry_values(now: datetime) -> dict[str, Any]:
    """The columns a manual retry sets: due now, attempts and ``max_age`` counted afresh."""
    return {
        "status": PENDING,
        "attempts": 0,
        "next_attempt_at": now,
        "age_from": now,
        "finished_at": None,
        "updated_at": now,
        "lease_owner": None,
        "lease_expires_at": None,
    }


def retry_failed(database: Database, *, channel: str | None = None, now: datetime | None = None) -> int:
    """Queue every failed delivery again (of one channel, if given); how many."""
    now = now or utcnow()
    statement = update(DeliveryRecord).where(DeliveryRecord.status == FAILED)
    if channel:
        statement = statement.where(DeliveryRecord.channel == channel)
    with database.session(immediate=True) as session:
        result = session.execute(
            statement.values(**retry_values(now)).execution_options(synchronize_session=False)
        )
        count = int(cast("CursorResult[Any]", result).rowcount)
        if count:
            notify_workers(session)
        return count


def list_events(
    database: Database,
    *,
    event_type: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
    has_errors: bool = False,
    event_id: int | None = None,
    offset: int = 0,
) -> list[EventRow]:
    """Stored events, newest first, with their deliveries counted by status.

    ``has_errors``: only events a rule raised for; ``event_id``: only that event;
    ``offset``: skip that many (paging).
    """
    query = select(EventRecord)
    if has_errors:
        query = query.where(EventRecord.rule_errors.is_not(None))
    if event_id is not None:
        query = query.where(EventRecord.id == event_id)
    if event_type is not None:
        query = query.where(EventRecord.event_type == event_type)
    if since is not None:
        query = query.where(EventRecord.received_at >= since)
    if until is not None:
        query = query.where(EventRecord.received_at < until)
    query = query.order_by(EventRecord.id.desc()).limit(max(1, min(limit, MAX_LIMIT))).offset(max(0, offset))
    with database.session() as session:
        events = list(session.scalars(query))
        counts: dict[int, dict[str, int]] = {}
        if events:
            rows = session.execute(
                select(DeliveryRecord.event_id, DeliveryRecord.status, func.count())
                .where(DeliveryRecord.event_id.in_([e.id for e in events]))
                .group_by(DeliveryRecord.event_id, DeliveryRecord.status)
            )
            for row_event_id, status, count in rows:
                counts.setdefault(row_event_id, {})[status] = int(count)
        return [
            EventRow(
                id=e.id,
                event_type=e.event_type,
                event_name=e.event_name,
                received_at=e.received_at,
                arguments=dict(e.arguments),
                repeats=e.repeats,
                deliveries=counts.get(e.id, {}),
                rule_errors=list(e.rule_errors or []),
            )
            for e in events
        ]


def queue_stats(database: Database, now: datetime | None = None, *, finished: bool = True) -> QueueStats:
    """Counts by status, the age of the oldest unfinished delivery, paused channels.

    ``finished=False`` counts only ``pending`` and ``sending`` (an index range, cheap on a
    large table); the others are then 0.
    """
    now = now or utcnow()
    with database.session() as session:
        counts = {status: 0 for status in STATUSES}
        query = select(DeliveryRecord.status, func.count()).group_by(DeliveryRecord.status)
        if not finished:
            query = query.where(DeliveryRecord.status.in_((PENDING, SENDING)))
        for status, count in session.execute(query):
            counts[status] = int(count)
        oldest = session.scalar(
            select(func.min(DeliveryRecord.created_at)).where(DeliveryRecord.status.in_((PENDING, SENDING)))
        )
        states = list(session.scalars(select(ChannelState)))
    # func.min bypasses UTCDateTime on SQLite; normalise whatever comes back.
    oldest_at = _as_utc(oldest)
    return QueueStats(
        counts=counts,
        oldest_pending_seconds=max(0.0, (now - oldest_at).total_seconds()) if oldest_at is not None else None,
        paused={
            s.channel: s.paused_until for s in states if s.paused_until is not None and s.paused_until > now
        },
        channels=tuple(s.channel for s in states),
    )


def _as_utc(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def refresh_queue_metrics(database: Database, now: datetime | None = None) -> QueueStats:
    """Set the queue gauges (depth, oldest pending, paused channels) from the database.

    The worker calls it every few seconds; ``/metrics`` may call it on scrape so the
    gauges are right even when the workers run elsewhere.
    """
    now = now or utcnow()
    stats = queue_stats(database, now, finished=False)
    for status in (PENDING, SENDING):
        metrics.QUEUE_DEPTH.labels(status=status).set(stats.counts.get(status, 0))
    metrics.OLDEST_PENDING.set(stats.oldest_pending_seconds or 0.0)
    for name in stats.channels:
        metrics.CHANNEL_PAUSED.labels(channel=name).set(1 if name in stats.paused else 0)
    return stats


def deliveries_by_channel(database: Database) -> dict[str, dict[str, int]]:
    """Delivery counts per channel and status (``{channel: {status: count}}``, channels by name)."""
    query = (
        select(DeliveryRecord.channel, DeliveryRecord.status, func.count())
        .group_by(DeliveryRecord.channel, DeliveryRecord.status)
        .order_by(DeliveryRecord.channel)
    )
    result: dict[str, dict[str, int]] = {}
    with database.session() as session:
        for channel, status, count in session.execute(query):
            result.setdefault(str(channel), {})[str(status)] = int(count)
    return result
