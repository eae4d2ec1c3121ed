"""Claiming deliveries and holding their leases; channel pauses and rate-limit windows.

How a worker takes work (table ``deliveries``, see :mod:`provider.events.worker`):

- **claim** (one short transaction): due rows are ``pending`` with
  ``next_attempt_at <= now``, or ``sending`` with an expired lease (their worker
  died: a ``lost`` attempt is recorded, and the delivery fails if that was its last).
  PostgreSQL takes them with ``SELECT ... FOR UPDATE SKIP LOCKED`` so any number of
  workers on any number of hosts share the table; SQLite takes its write lock first
  (``BEGIN IMMEDIATE``), so claimers simply take turns. Claimed rows become
  ``sending`` with a lease the worker renews while it works through the batch.
  Channels that are disabled, paused, or out of their rate limit for the current
  window are skipped; the window is counted in ``channel_state``, shared by every worker.
- **release** hands claimed rows back without an attempt (stopping, or a paused channel);
  **renew** extends the leases; :meth:`Leases.owned` updates a row only while this
  worker still holds it.
- **pauses**: a 429/503 pauses the channel for every worker (``channel_state.paused_until``);
  this worker looks again every :data:`PAUSE_CHECK_SECONDS`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, and_, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from provider import metrics
from provider.db.events import (
    DELIVERED,
    FAILED,
    OUTCOME_LOST,
    PENDING,
    SENDING,
    ChannelState,
    DeliveryAttempt,
    DeliveryRecord,
)
from provider.db.session import Database
from provider.events.channel_cache import ChannelCache
from provider.events.wakeup import PAUSED, notify_workers

log = logging.getLogger("provider.events.worker")

#: how stale this worker's view of another worker's channel pause may get during a batch
PAUSE_CHECK_SECONDS = 0.25


@dataclass(frozen=True)
class Claimed:
    """A delivery this worker holds the lease of."""

    id: int
    key: str
    channel: str
    params: dict[str, Any]
    attempts: int
    age_from: datetime
    event_id: int = 0


def _due(now: datetime) -> ColumnElement[bool]:
    return or_(
        and_(DeliveryRecord.status == PENDING, DeliveryRecord.next_attempt_at <= now),
        and_(DeliveryRecord.status == SENDING, DeliveryRecord.lease_expires_at <= now),
    )


class Leases:
    """One worker's claims, leases and view of channel pauses (not thread-safe: the worker's thread only)."""

    def __init__(
        self,
        database: Database,
        channels: ChannelCache,
        *,
        owner: str,
        lease_seconds: float,
        batch_size: int,
        clock: Callable[[], datetime],
    ) -> None:
        self._db = database
        self._channels = channels
        self.owner = owner
        self.lease = timedelta(seconds=lease_seconds)
        self._batch_size = batch_size
        self._clock = clock
        self._paused: dict[str, datetime] = {}
        self._pause_checked: dict[str, float] = {}

    # --- claim ------------------------------------------------------------------

    def claim(self, now: datetime) -> list[Claimed]:
        """Take up to one batch of due deliveries (refreshing the channels first)."""
        if self._db.is_sqlite:
            # Look before taking SQLite's only write lock (NotifyEventFired needs it too).
            with self._db.session() as session:
                if session.scalar(select(DeliveryRecord.id).where(_due(now)).limit(1)) is None:
                    return []
        with self._db.session(immediate=True) as session:
            self._channels.refresh(session)
            states = {state.channel: state for state in session.scalars(select(ChannelState))}
            self._note_pauses(states, now)
            blocked = self._blocked(states, now)
            query = select(DeliveryRecord).where(_due(now))
            if blocked:
                query = query.where(DeliveryRecord.channel.not_in(sorted(blocked)))
            query = (
                query.order_by(DeliveryRecord.next_attempt_at, DeliveryRecord.id)
                .limit(self._batch_size)
                .with_for_update(skip_locked=True, of=DeliveryRecord)
            )
            rows = self._within_rate_limits(session, list(session.scalars(query)), now)
            return [
                self._take(row, now)
                for row in rows
                if row.status != SENDING or self._recover(session, row, now)
            ]

    def _take(self, row: DeliveryRecord, now: datetime) -> Claimed:
        row.status = SENDING
        row.lease_owner = self.owner
        row.lease_expires_at = now + self.lease
        row.updated_at = now
        return Claimed(
            id=row.id,
            key=row.key,
            channel=row.channel,
            params=dict(row.params),
            attempts=row.attempts,
            age_from=row.age_from,
            event_id=row.event_id,
        )

    def _blocked(self, states: Mapping[str, ChannelState], now: datetime) -> set[str]:
        """Channels not to claim for now: disabled, paused, or their rate-limit window full."""
        blocked = self._channels.disabled()
        for name, state in states.items():
            if state.paused_until is not None and state.paused_until > now:
                blocked.add(name)
                continue
            limit = self._rate_limit(name)
            if limit is not None and state.window_started_at is not None:
                calls, per = limit
                if now < state.window_started_at + timedelta(seconds=per) and state.window_count >= calls:
                    blocked.add(name)
        return blocked

    def _rate_limit(self, name: str) -> tuple[int, float] | None:
        entry = self._channels.get(name)
        return entry.policy.rate_limit if entry is not None else None

    def _within_rate_limits(
        self, session: Session, rows: list[DeliveryRecord], now: datetime
    ) -> list[DeliveryRecord]:
        by_channel: dict[str, list[DeliveryRecord]] = {}
        for row in rows:
            by_channel.setdefault(row.channel, []).append(row)
        kept: list[DeliveryRecord] = []
        for name in sorted(by_channel):  # a fixed lock order across workers
            limit = self._rate_limit(name)
            if limit is None:
                kept.extend(by_channel[name])
                continue
            calls, per = limit
            state = self.locked_state(session, name, now)
            if state.window_started_at is None or now >= state.window_started_at + timedelta(seconds=per):
                state.window_started_at = now
                state.window_count = 0
            allowed = max(0, calls - state.window_count)
            taken = by_channel[name][:allowed]
            state.window_count += len(taken)
            state.updated_at = now
            kept.extend(taken)
        kept.sort(key=lambda r: (r.next_attempt_at, r.id))
        return kept

    def locked_state(self, session: Session, name: str, now: datetime) -> ChannelState:
        """The channel's shared state row, created if missing, locked until the transaction ends."""
        values = {"channel": name, "window_count": 0, "updated_at": now}
        insert = pg_insert if self._db.is_postgresql else sqlite_insert
        session.execute(
            insert(ChannelState).values(**values).on_conflict_do_nothing(index_elements=["channel"])
        )
        return session.execute(
            select(ChannelState)
            .where(ChannelState.channel == name)
            .with_for_update()
            .execution_options(populate_existing=True)
        ).scalar_one()

    def _recover(self, session: Session, row: DeliveryRecord, now: datetime) -> bool:
        """A delivery whose worker's lease expired: count a ``lost`` attempt; whether to send again."""
        number = row.attempts + 1
        previous = row.lease_owner
        row.attempts = number
        message = (
            f"worker {previous} did not record an outcome before its lease expired; "
            "the partner may have received this notification"
        )
        session.add(
            DeliveryAttempt(
                delivery_id=row.id,
                number=number,
                started_at=row.lease_expires_at or now,
                duration=0.0,
                outcome=OUTCOME_LOST,
                error=message,
                worker=previous,
            )
        )
        log.warning(
            "delivery lease expired; taking it over",
            extra={"event": "worker.lease_expired", "delivery_id": row.id, "previous_worker": previous},
        )
        if number >= self._channels.policy(row.channel).max_attempts:
            row.status = FAILED
            row.finished_at = now
            row.lease_owner = None
            row.lease_expires_at = None
            row.updated_at = now
            row.last_error = message
            metrics.DELIVERIES.labels(channel=row.channel, outcome="failed").inc()
            return False
        return True

    # --- leases -----------------------------------------------------------------

    def owned(
        self, session: Session, delivery_id: int, values: Mapping[str, Any], *, any_owner: bool
    ) -> bool:
        """Set ``values`` on the delivery if this worker still holds it (``any_owner``: unless delivered)."""
        condition = (
            DeliveryRecord.status != DELIVERED
            if any_owner
            else and_(DeliveryRecord.status == SENDING, DeliveryRecord.lease_owner == self.owner)
        )
        result = session.execute(
            update(DeliveryRecord)
            .where(DeliveryRecord.id == delivery_id, condition)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        return cast("CursorResult[Any]", result).rowcount == 1

    def release(self, items: Sequence[Claimed], next_attempt: datetime | None) -> None:
        """Hand claimed deliveries back without an attempt (stopping, or their channel got paused)."""
        values: dict[str, Any] = {
            "status": PENDING,
            "lease_owner": None,
            "lease_expires_at": None,
            "updated_at": self._clock(),
        }
        if next_attempt is not None:
            values["next_attempt_at"] = next_attempt
        # Due at once: wake the other workers (a hint, see provider/events/wakeup.py).
        self._update_leased(items, values, notify=next_attempt is None)

    def renew(self, items: Sequence[Claimed]) -> None:
        self._update_leased(items, {"lease_expires_at": self._clock() + self.lease})

    def _update_leased(
        self, items: Sequence[Claimed], values: Mapping[str, Any], *, notify: bool = False
    ) -> None:
        """Set ``values`` on those of ``items`` this worker still leases (status sending, owner us)."""
        if not items:
            return
        with self._db.session(immediate=True) as session:
            if notify:
                notify_workers(session)
            session.execute(
                update(DeliveryRecord)
                .where(
                    DeliveryRecord.id.in_([item.id for item in items]),
                    DeliveryRecord.status == SENDING,
                    DeliveryRecord.lease_owner == self.owner,
                )
                .values(**values)
                .execution_options(synchronize_session=False)
            )

    # --- pauses -----------------------------------------------------------------

    def _note_pauses(self, states: Mapping[str, ChannelState], now: datetime) -> None:
        checked = time.monotonic()
        for name, state in states.items():
            self._pause_checked[name] = checked
            if state.paused_until is not None and state.paused_until > now:
                self._paused[name] = state.paused_until

    def paused_until(self, channel: str, now: datetime) -> datetime | None:
        """Until when the channel is paused (by any worker), looking again every few tenths of a second."""
        checked = self._pause_checked.get(channel)
        if checked is None or time.monotonic() - checked >= PAUSE_CHECK_SECONDS:
            with self._db.session() as session:
                until = session.scalar(
                    select(ChannelState.paused_until).where(ChannelState.channel == channel)
                )
            self._pause_checked[channel] = time.monotonic()
            known = self._paused.get(channel)
            if until is not None and (known is None or until > known):
                self._paused[channel] = until
        paused = self._paused.get(channel)
        return paused if paused is not None and paused > now else None

    def pause(self, session: Session, name: str, until: datetime, status: int | None, now: datetime) -> None:
        """Pause the channel for every worker until ``until`` (never shortening a pause)."""
        state = self.locked_state(session, name, now)
        notify_workers(session, f"{PAUSED}{name}")  # the other workers look at once (PostgreSQL)
        if state.paused_until is None or state.paused_until < until:
            state.paused_until = until
            state.pause_reason = f"HTTP {status}" if status is not None else "partner asked to pause"
            state.updated_at = now
        metrics.CHANNEL_PAUSED.labels(channel=name).set(1)
        log.warning(
            "channel paused",
            extra={"event": "channel.paused", "channel": name, "until": until.isoformat(), "status": status},
        )

    def look_again(self, name: str) -> None:
        """Another worker paused ``name``: read its pause before the next send (any thread may call)."""
        self._pause_checked.pop(name, None)

    def remember_pause(self, name: str, until: datetime) -> None:
        """This worker paused ``name`` (after the pause committed)."""
        self._paused[name] = until

    def forget_pauses(self, now: datetime) -> None:
        """Drop the pauses that are over."""
        self._paused = {name: until for name, until in self._paused.items() if until > now}
