"""Claiming deliveries and holding their leases; channel pauses and rate-limit windows.

How a worker takes work (table ``deliveries``, see :mod:`provider.events.worker`):

- **claim** (one short transaction): due rows are ``pending`` with
  ``next_attempt_at <= now``, or ``sending`` with an expired lease (their worker
  died: a ``lost`` attempt is recorded, and the delivery fails if that was its last).
  PostgreSQL takes them with ``SELECT ... FOR UPDATE SKIP LOCKED`` so any number of
  workers on any number of hosts share the table; SQLite takes its write lock first
  (``BEGIN IMMEDIATE``), so claimers simply take turns. Claimed rows become
  ``sending`` with a lease the worker renews while it works through the batch, in one
  ``UPDATE ... RETURNING`` (SQLAlchemy Core, no ORM objects; see :meth:`Leases.claim`).
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
from typing import Any, TypeAlias, cast

from sqlalchemy import CursorResult, Row, Subquery, Table, and_, case, insert, or_, select, update
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
from provider.db.session import Database, conflict_insert
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


_Row: TypeAlias = Row[*tuple[Any, ...]]
_DELIVERIES = cast("Table", DeliveryRecord.__table__)
_ATTEMPTS = cast("Table", DeliveryAttempt.__table__)
#: what a claim returns of each taken row (besides its previous lease)
_CLAIMED_COLUMNS = tuple(
    _DELIVERIES.c[name]
    for name in ("id", "key", "channel", "params", "attempts", "age_from", "event_id", "next_attempt_at")
)


@dataclass(frozen=True)
class _Taken:
    """A row the claim set to ``sending`` (``attempts`` already counts a ``lost`` one), and its lease before."""

    id: int
    key: str
    channel: str
    params: dict[str, Any]
    attempts: int
    age_from: datetime
    event_id: int
    next_attempt_at: datetime
    prev_status: str
    prev_owner: str | None
    prev_expires: datetime | None


def _claimed(row: _Taken) -> Claimed:
    return Claimed(
        id=row.id,
        key=row.key,
        channel=row.channel,
        params=dict(row.params),
        attempts=row.attempts,
        age_from=row.age_from,
        event_id=row.event_id,
    )


def _due(now: datetime) -> ColumnElement[bool]:
    deliveries = _DELIVERIES.c
    return or_(
        and_(deliveries.status == PENDING, deliveries.next_attempt_at <= now),
        and_(deliveries.status == SENDING, deliveries.lease_expires_at <= now),
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
        """Take up to one batch of due deliveries (refreshing the channels first).

        Works on the table with SQLAlchemy Core (no ORM objects): on PostgreSQL, when no
        channel has a rate limit, one ``UPDATE ... FROM (SELECT ... FOR UPDATE SKIP LOCKED
        LIMIT n) RETURNING``; otherwise (SQLite, under its write lock, or a rate-limited
        channel to count) the due rows' few columns are selected, the rate limits applied,
        and the kept rows taken with one ``UPDATE ... WHERE id IN (...) RETURNING``.
        """
        if self._db.is_sqlite:
            # Look before taking SQLite's only write lock (NotifyEventFired needs it too).
            with self._db.session() as session:
                if session.scalar(select(_DELIVERIES.c.id).where(_due(now)).limit(1)) is None:
                    return []
        with self._db.session(immediate=True) as session:
            self._channels.refresh(session)
            states = {state.channel: state for state in session.scalars(select(ChannelState))}
            self._note_pauses(states, now)
            blocked = self._blocked(states, now)
            candidates = (
                select(
                    _DELIVERIES.c.id,
                    _DELIVERIES.c.channel.label("prev_channel"),
                    _DELIVERIES.c.status.label("prev_status"),
                    _DELIVERIES.c.lease_owner.label("prev_owner"),
                    _DELIVERIES.c.lease_expires_at.label("prev_expires"),
                )
                .where(_due(now))
                .order_by(_DELIVERIES.c.next_attempt_at, _DELIVERIES.c.id)
                .limit(self._batch_size)
                .with_for_update(skip_locked=True)
            )
            if blocked:
                candidates = candidates.where(_DELIVERIES.c.channel.not_in(sorted(blocked)))
            if self._db.is_postgresql and not self._any_rate_limit():
                taken = self._take_at_once(session, candidates.subquery("due"), now)
            else:
                rows = self._within_rate_limits(session, session.execute(candidates).all(), now)
                taken = self._take(session, rows, now)
            taken.sort(key=lambda row: (row.next_attempt_at, row.id))
            return [
                _claimed(row)
                for row in taken
                if row.prev_status != SENDING or self._recover(session, row, now)
            ]

    def _take_at_once(self, session: Session, due: Subquery, now: datetime) -> list[_Taken]:
        """Lock and take the due rows in one statement (PostgreSQL); their previous lease with them."""
        statement = (
            update(_DELIVERIES)
            .where(_DELIVERIES.c.id == due.c.id)
            .values(self._taken_values(now))
            .returning(*_CLAIMED_COLUMNS, due.c.prev_status, due.c.prev_owner, due.c.prev_expires)
        )
        return [_Taken(**row._mapping) for row in session.execute(statement)]

    def _take(self, session: Session, rows: Sequence[_Row], now: datetime) -> list[_Taken]:
        """Take the selected (locked) rows with one ``UPDATE ... RETURNING``; their previous lease with them."""
        if not rows:
            return []
        previous = {row.id: row for row in rows}
        statement = (
            update(_DELIVERIES)
            .where(_DELIVERIES.c.id.in_(sorted(previous)))
            .values(self._taken_values(now))
            .returning(*_CLAIMED_COLUMNS)
        )
        taken = []
        for row in session.execute(statement):
            before = previous[row.id]
            taken.append(
                _Taken(
                    **row._mapping,
                    prev_status=before.prev_status,
                    prev_owner=before.prev_owner,
                    prev_expires=before.prev_expires,
                )
            )
        return taken

    def _taken_values(self, now: datetime) -> dict[str, Any]:
        """The claim's new values: ``sending`` under this worker's lease; a taken-over row counts an attempt."""
        return {
            "status": SENDING,
            "lease_owner": self.owner,
            "lease_expires_at": now + self.lease,
            "updated_at": now,
            # evaluated on the row before the update: an expired lease is a ``lost`` attempt
            "attempts": case(
                (_DELIVERIES.c.status == SENDING, _DELIVERIES.c.attempts + 1), else_=_DELIVERIES.c.attempts
            ),
        }

    def _any_rate_limit(self) -> bool:
        return any(self._rate_limit(name) is not None for name in self._channels.names())

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

    def _within_rate_limits(self, session: Session, rows: Sequence[_Row], now: datetime) -> list[_Row]:
        """The candidate rows the channels' rate-limit windows allow (counted in ``channel_state``)."""
        by_channel: dict[str, list[_Row]] = {}
        for row in rows:
            by_channel.setdefault(row.prev_channel, []).append(row)
        kept: set[int] = set()
        for name in sorted(by_channel):  # a fixed lock order across workers
            limit = self._rate_limit(name)
            if limit is None:
                kept.update(row.id for row in by_channel[name])
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
            kept.update(row.id for row in taken)
        return [row for row in rows if row.id in kept]

    def locked_state(self, session: Session, name: str, now: datetime) -> ChannelState:
        """The channel's shared state row, created if missing, locked until the transaction ends."""
        values = {"channel": name, "window_count": 0, "updated_at": now}
        insert = conflict_insert(self._db.engine.dialect.name, ChannelState)
        session.execute(insert.values(**values).on_conflict_do_nothing(index_elements=["channel"]))
        return session.execute(
            select(ChannelState)
            .where(ChannelState.channel == name)
            .with_for_update()
            .execution_options(populate_existing=True)
        ).scalar_one()

    def _recover(self, session: Session, row: _Taken, now: datetime) -> bool:
        """A delivery whose worker's lease expired: record a ``lost`` attempt; whether to send again.

        The claim already counted the attempt (``row.attempts``) and took the lease; if that
        was the delivery's last attempt it fails here instead.
        """
        number = row.attempts
        previous = row.prev_owner
        message = (
            f"worker {previous} did not record an outcome before its lease expired; "
            "the partner may have received this notification"
        )
        session.execute(
            insert(_ATTEMPTS).values(
                delivery_id=row.id,
                number=number,
                started_at=row.prev_expires or now,
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
            session.execute(
                update(_DELIVERIES)
                .where(_DELIVERIES.c.id == row.id)
                .values(
                    status=FAILED,
                    finished_at=now,
                    lease_owner=None,
                    lease_expires_at=None,
                    updated_at=now,
                    last_error=message,
                )
            )
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
