"""SQLAlchemy models for events: the transactional outbox and its delivery state.

- :class:`EventRecord` (``events``): one NotifyEventFired call as stored.
- :class:`EventDedup` (``event_dedup``): one row per event fingerprint while its
  de-duplication window is open; its primary key makes "same event twice" race-safe
  across processes.
- :class:`DeliveryRecord` (``deliveries``): one rendered notification to send on a
  channel, with its status (``pending``, ``sending``, ``delivered``, ``failed``,
  ``suppressed``),
  next attempt time and lease.
- :class:`DeliveryAttempt` (``delivery_attempts``): every attempt, with its outcome.
- :class:`DeliveryAudit` (``delivery_audit``): manual retries and re-sends, by whom.
- :class:`ChannelState` (``channel_state``): the pause and rate-limit window of a
  channel, shared by every worker.

No business rules here; see :mod:`provider.events`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from provider.db.base import Base, UTCDateTime

PENDING = "pending"
SENDING = "sending"
DELIVERED = "delivered"
FAILED = "failed"
#: not sent: the recipient is on the suppression list (final, never retried)
SUPPRESSED = "suppressed"
STATUSES = (PENDING, SENDING, DELIVERED, FAILED, SUPPRESSED)

#: attempt outcomes
OUTCOME_DELIVERED = "delivered"
OUTCOME_RETRY = "retry"
OUTCOME_FAILED = "failed"
OUTCOME_LOST = "lost"


class EventRecord(Base):
    """A NotifyEventFired call. ``variables`` never include ``authPW``."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_type: Mapped[int | None] = mapped_column(Integer, index=True)
    event_name: Mapped[str | None] = mapped_column(String(200))
    arguments: Mapped[dict[str, Any]] = mapped_column(JSON)
    variables: Mapped[list[Any]] = mapped_column(JSON)
    fingerprint: Mapped[str] = mapped_column(String(64), index=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    #: how many repeats of this call inside the window were answered without new deliveries
    repeats: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    last_repeated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: the rules that raised while evaluating this event: ``[{"rule": name, "error": type}]``;
    #: NULL when none did (``events list --has-errors``); ``events replay`` sets it again
    rule_errors: Mapped[list[Any] | None] = mapped_column(JSON(none_as_null=True))


class EventDedup(Base):
    """The open de-duplication window of one event fingerprint."""

    __tablename__ = "event_dedup"

    fingerprint: Mapped[str] = mapped_column(String(64), primary_key=True)
    event_id: Mapped[int] = mapped_column(Integer, ForeignKey("events.id", ondelete="CASCADE"))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class DeliveryRecord(Base):
    """One notification to send on one channel, and where it stands."""

    __tablename__ = "deliveries"
    __table_args__ = (Index("ix_deliveries_due", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[int] = mapped_column(Integer, ForeignKey("events.id", ondelete="CASCADE"), index=True)
    rule: Mapped[str] = mapped_column(String(200))
    channel: Mapped[str] = mapped_column(String(200), index=True)
    recipient: Mapped[str | None] = mapped_column(String(320), index=True)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: stable across retries; channels pass it to partners that de-duplicate
    key: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(16))
    #: attempts counted against ``max_attempts`` (reset by a manual retry)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: ``max_age`` counts from here (creation, or the last manual retry)
    age_from: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_owner: Mapped[str | None] = mapped_column(String(100))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    partner_id: Mapped[str | None] = mapped_column(String(200))
    documents: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    #: the message template the notify entry used (``template:``); NULL for inline entries
    template: Mapped[str | None] = mapped_column(String(200), index=True)


class DeliveryAttempt(Base):
    """One attempt at a delivery. ``error`` is redacted; ``duration`` in seconds."""

    __tablename__ = "delivery_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    delivery_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("deliveries.id", ondelete="CASCADE"), index=True
    )
    number: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    duration: Mapped[float] = mapped_column(Float)
    outcome: Mapped[str] = mapped_column(String(16))
    http_status: Mapped[int | None] = mapped_column(Integer)
    partner_id: Mapped[str | None] = mapped_column(String(200))
    error: Mapped[str | None] = mapped_column(Text)
    worker: Mapped[str | None] = mapped_column(String(100))
    #: when the delivery was scheduled next because of this attempt (retries only)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class DeliveryAudit(Base):
    """A manual ``retry`` or ``resend`` of a delivery, by whom (CLI or ``console:NAME``)."""

    __tablename__ = "delivery_audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    actor: Mapped[str] = mapped_column(String(200))
    command: Mapped[str] = mapped_column(String(500))
    #: ``retry`` or ``resend``
    action: Mapped[str] = mapped_column(String(20))
    delivery_id: Mapped[int] = mapped_column(Integer, index=True)
    #: the delivery a ``resend`` created
    new_delivery_id: Mapped[int | None] = mapped_column(Integer)


class ChannelState(Base):
    """Pause and rate-limit window of one channel, shared by every worker."""

    __tablename__ = "channel_state"

    channel: Mapped[str] = mapped_column(String(200), primary_key=True)
    paused_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    pause_reason: Mapped[str | None] = mapped_column(String(200))
    window_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    window_count: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
