"""The delivery worker: claims due deliveries, sends them, records every attempt.

Run it as ``st-provider worker`` (see :mod:`provider.events.commands`), or inside
another process with :func:`run_worker` / :func:`start_worker_thread` (what
``st-provider serve`` does unless ``--no-worker``).

How deliveries move (table ``deliveries``):

- **claim** (one short transaction): due rows are ``pending`` with
  ``next_attempt_at <= now``, or ``sending`` with an expired lease (their worker
  died). PostgreSQL takes them with ``SELECT ... FOR UPDATE SKIP LOCKED`` so any
  number of workers on any number of hosts share the table; SQLite takes its write
  lock first (``BEGIN IMMEDIATE``), so claimers simply take turns. Claimed rows
  become ``sending`` with a lease (``lease_seconds``) that the worker renews while
  it works through the batch. Channels that are disabled, paused, or out of their
  rate limit for the current window are skipped; the rate-limit window is counted in
  ``channel_state``, shared by every worker.
- **send**, outside any transaction, through the channel
  (:class:`~provider.channels.base.Channel`), with the channel's own timeout.
- **record** (one transaction per delivery): an attempt row (time, duration, HTTP
  status, partner message id, redacted error) and the delivery's new state:
  ``delivered``; ``pending`` with the next attempt time the retry policy chose
  (:mod:`provider.events.retry`; nothing ever sleeps); or ``failed``. A 429/503
  pauses the channel for every worker (``channel_state.paused_until``).

Delivery is at least once. If a worker dies after the partner accepted a
notification but before the outcome is recorded, the lease expires, another
worker records a ``lost`` attempt and sends it again: the partner then receives it
twice. That window (one send per claimed delivery of the dead worker) is the only
source of duplicates. Every send carries the delivery's stable ``key``, which
channels pass on where the partner can de-duplicate.

Stopping: set the ``stop`` event. The worker finishes the send in progress,
hands the rest of its batch back (``pending``, due at once) and returns.
"""

from __future__ import annotations

import json
import logging
import os
import random as random_module
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, cast

from sqlalchemy import CursorResult, and_, delete, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from provider import metrics
from provider.channels import registry
from provider.channels.base import Channel, SendResult
from provider.channels.config import ChannelDefaults, ChannelPolicy, allowed_environment, parse_policy
from provider.db.base import utcnow
from provider.db.events import (
    DELIVERED,
    FAILED,
    OUTCOME_DELIVERED,
    OUTCOME_FAILED,
    OUTCOME_LOST,
    OUTCOME_RETRY,
    PENDING,
    SENDING,
    ChannelState,
    DeliveryAttempt,
    DeliveryRecord,
    EventDedup,
)
from provider.db.rules import ChannelRecord
from provider.db.session import Database
from provider.errors import ChannelError, ConfigError, ProviderError
from provider.events import reports
from provider.events.redact import redact, secret_values
from provider.events.retry import DEFAULT_RETRY_WAITS, RetryPolicy, decide, make_policy
from provider.journal.retention import PurgeSchedule
from provider.settings import Settings

log = logging.getLogger("provider.events.worker")

HOUSEKEEPING_SECONDS = 10.0
#: how stale this worker's view of another worker's channel pause may get during a batch
PAUSE_CHECK_SECONDS = 0.25
ERROR_BACKOFF_SECONDS = 5.0


class ChannelFactory(Protocol):
    """Builds a channel from its stored settings (``registry.build_channel``'s signature)."""

    def __call__(
        self,
        name: str,
        type_name: str,
        settings: Mapping[str, Any],
        *,
        environment: Mapping[str, str],
        timeout: float,
    ) -> Channel: ...


def channel_policy(type_name: str, settings: Mapping[str, Any]) -> ChannelPolicy:
    """The channel's delivery policy: its type's defaults under its generic keys.

    Raises ConfigError for invalid generic keys.
    """
    try:
        defaults = registry.channel_defaults(type_name)
    except ConfigError:
        # An unknown type: building the channel fails and says so; retry with the defaults.
        defaults = ChannelDefaults(retry_waits=DEFAULT_RETRY_WAITS)
    return parse_policy(defaults, settings)


def default_worker_name() -> str:
    """``host:pid:random`` — unique per worker, readable in attempts and logs."""
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class _Config:
    name: str
    type_name: str
    settings: Mapping[str, Any]
    enabled: bool
    version: str


@dataclass
class _Entry:
    """A configured channel as this worker knows it: policy now, channel built on first use."""

    config: _Config
    policy: RetryPolicy
    secrets: frozenset[str]
    problem: str | None = None
    channel: Channel | None = None
    built: bool = False


@dataclass(frozen=True)
class Claimed:
    """A delivery this worker holds the lease of."""

    id: int
    key: str
    channel: str
    params: dict[str, Any]
    attempts: int
    age_from: datetime


class Worker:
    """One delivery worker (see module docstring). Not thread-safe: one thread drives it."""

    def __init__(
        self,
        settings: Settings,
        database: Database,
        *,
        channel_factory: ChannelFactory | None = None,
        clock: Callable[[], datetime] = utcnow,
        random: Callable[[], float] | None = None,
        name: str | None = None,
    ) -> None:
        self._settings = settings
        # Only the variables channel settings may reference (ST_PROVIDER_SECRET_VARS, never
        # ST_PROVIDER_*): a refused name resolves as unset, so it can never be sent.
        self._environment = allowed_environment(settings.environment, settings.secret_vars)
        self._config = settings.worker
        self._db = database
        self._factory: ChannelFactory = channel_factory or registry.build_channel
        self._clock = clock
        self._random = random or random_module.random
        self.name = (name or default_worker_name())[:100]
        self._lease = timedelta(seconds=self._config.lease_seconds)
        self._entries: dict[str, _Entry] = {}
        self._paused: dict[str, datetime] = {}
        self._pause_checked: dict[str, float] = {}
        self._next_housekeeping = 0.0
        # Retention (call journal, events, rules audit): see provider/journal/retention.py.
        self._retention = PurgeSchedule(database, settings.retention)

    # --- loops ------------------------------------------------------------------

    def run_once(self, stop: threading.Event | None = None) -> int:
        """Claim one batch of due deliveries and work through it; the number claimed.

        Raises StorageError when the database fails (nothing is lost: unfinished
        claims return to the queue when their lease expires).
        """
        now = self._clock()
        self._housekeeping(now)
        self._retention.run_if_due(now)  # at most once a minute, bounded, never raises
        claimed = self._claim(now)
        if claimed:
            self._process(claimed, stop)
        return len(claimed)

    def drain(self, stop: threading.Event | None = None, *, max_batches: int = 100_000) -> int:
        """Work until nothing is due (or ``stop`` is set); the number of deliveries claimed."""
        total = 0
        for _ in range(max_batches):
            if stop is not None and stop.is_set():
                break
            count = self.run_once(stop)
            total += count
            if count == 0:
                break
        return total

    def run(self, stop: threading.Event) -> None:
        """Work until ``stop`` is set, polling every ``poll_interval`` when idle."""
        log.info("delivery worker started", extra={"event": "worker.started", "worker": self.name})
        try:
            while not stop.is_set():
                try:
                    count = self.run_once(stop)
                except ProviderError as exc:
                    log.warning(
                        "delivery worker could not reach the database",
                        extra={"event": "worker.storage_error", "worker": self.name, "error": str(exc)},
                    )
                    stop.wait(max(self._config.poll_interval, ERROR_BACKOFF_SECONDS))
                    continue
                except Exception:  # one bad batch must not end delivery for good
                    log.exception(
                        "delivery worker failed; continuing",
                        extra={"event": "worker.crashed_batch", "worker": self.name},
                    )
                    stop.wait(max(self._config.poll_interval, ERROR_BACKOFF_SECONDS))
                    continue
                if count < self._config.batch_size:
                    stop.wait(self._config.poll_interval)
        finally:
            self.close()
            log.info("delivery worker stopped", extra={"event": "worker.stopped", "worker": self.name})

    def close(self) -> None:
        """Close every channel this worker built."""
        for entry in self._entries.values():
            _close(entry)
        self._entries.clear()

    # --- claim ------------------------------------------------------------------

    def _due(self, now: datetime) -> ColumnElement[bool]:
        return or_(
            and_(DeliveryRecord.status == PENDING, DeliveryRecord.next_attempt_at <= now),
            and_(DeliveryRecord.status == SENDING, DeliveryRecord.lease_expires_at <= now),
        )

    def _claim(self, now: datetime) -> list[Claimed]:
        if self._db.is_sqlite:
            # Look before taking SQLite's only write lock (NotifyEventFired needs it too).
            with self._db.session() as session:
                if session.scalar(select(DeliveryRecord.id).where(self._due(now)).limit(1)) is None:
                    return []
        with self._db.session(immediate=True) as session:
            self._refresh_channels(session)
            states = {state.channel: state for state in session.scalars(select(ChannelState))}
            checked = time.monotonic()
            for name, state in states.items():
                self._pause_checked[name] = checked
                if state.paused_until is not None and state.paused_until > now:
                    self._paused[name] = state.paused_until
            blocked = self._blocked(states, now)
            query = select(DeliveryRecord).where(self._due(now))
            if blocked:
                query = query.where(DeliveryRecord.channel.not_in(sorted(blocked)))
            query = (
                query.order_by(DeliveryRecord.next_attempt_at, DeliveryRecord.id)
                .limit(self._config.batch_size)
                .with_for_update(skip_locked=True, of=DeliveryRecord)
            )
            rows = self._within_rate_limits(session, list(session.scalars(query)), now)
            claimed = []
            for row in rows:
                if row.status == SENDING and not self._recover(session, row, now):
                    continue
                row.status = SENDING
                row.lease_owner = self.name
                row.lease_expires_at = now + self._lease
                row.updated_at = now
                claimed.append(
                    Claimed(
                        id=row.id,
                        key=row.key,
                        channel=row.channel,
                        params=dict(row.params),
                        attempts=row.attempts,
                        age_from=row.age_from,
                    )
                )
            return claimed

    def _blocked(self, states: Mapping[str, ChannelState], now: datetime) -> set[str]:
        """Channels not to claim for now: disabled, paused, or their rate-limit window full."""
        blocked = {name for name, entry in self._entries.items() if not entry.config.enabled}
        for name, state in states.items():
            if state.paused_until is not None and state.paused_until > now:
                blocked.add(name)
                continue
            entry = self._entries.get(name)
            limit = entry.policy.rate_limit if entry is not None else None
            if limit is not None and state.window_started_at is not None:
                calls, per = limit
                if now < state.window_started_at + timedelta(seconds=per) and state.window_count >= calls:
                    blocked.add(name)
        return blocked

    def _within_rate_limits(
        self, session: Session, rows: list[DeliveryRecord], now: datetime
    ) -> list[DeliveryRecord]:
        by_channel: dict[str, list[DeliveryRecord]] = {}
        for row in rows:
            by_channel.setdefault(row.channel, []).append(row)
        kept: list[DeliveryRecord] = []
        for name in sorted(by_channel):  # a fixed lock order across workers
            entry = self._entries.get(name)
            limit = entry.policy.rate_limit if entry is not None else None
            if limit is None:
                kept.extend(by_channel[name])
                continue
            calls, per = limit
            state = self._locked_state(session, name, now)
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

    def _locked_state(self, session: Session, name: str, now: datetime) -> ChannelState:
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
        entry = self._entries.get(row.channel)
        policy = entry.policy if entry is not None else make_policy(None, self._config)
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
        if number >= policy.max_attempts:
            row.status = FAILED
            row.finished_at = now
            row.lease_owner = None
            row.lease_expires_at = None
            row.updated_at = now
            row.last_error = message
            metrics.DELIVERIES.labels(channel=row.channel, outcome="failed").inc()
            return False
        return True

    # --- channels ---------------------------------------------------------------

    def _refresh_channels(self, session: Session) -> None:
        """Load the channel configurations; rebuild a channel when its settings changed."""
        seen: set[str] = set()
        for record in session.scalars(select(ChannelRecord)):
            settings = dict(record.settings or {})
            version = json.dumps([record.type, settings], sort_keys=True, default=str)
            config = _Config(record.name, record.type, settings, bool(record.enabled), version)
            seen.add(record.name)
            entry = self._entries.get(record.name)
            if entry is not None and entry.config.version == version:
                if entry.config.enabled != config.enabled:
                    entry.config = config
                continue
            if entry is not None:
                _close(entry)
            self._entries[record.name] = self._new_entry(config)
        for name in set(self._entries) - seen:
            _close(self._entries.pop(name))

    def _new_entry(self, config: _Config) -> _Entry:
        secrets = secret_values(config.settings, self._environment)
        try:
            policy = make_policy(channel_policy(config.type_name, config.settings), self._config)
        except ConfigError as exc:
            return _Entry(
                config,
                make_policy(None, self._config),
                secrets,
                problem=redact(f"channel {config.name!r}: {exc}", secrets),
            )
        return _Entry(config, policy, secrets)

    def _channel(self, entry: _Entry) -> Channel | None:
        if not entry.built:
            entry.built = True
            if entry.problem is None:
                try:
                    entry.channel = self._factory(
                        entry.config.name,
                        entry.config.type_name,
                        entry.config.settings,
                        environment=self._environment,
                        timeout=self._config.http_timeout,
                    )
                except ConfigError as exc:
                    entry.problem = redact(str(exc), entry.secrets)
                    log.error(
                        "channel cannot be built",
                        extra={
                            "event": "worker.channel_unavailable",
                            "channel": entry.config.name,
                            "error": entry.problem,
                        },
                    )
        return entry.channel

    # --- send and record --------------------------------------------------------

    def _process(self, claimed: Sequence[Claimed], stop: threading.Event | None) -> None:
        renewed = time.monotonic()
        for index, item in enumerate(claimed):
            if stop is not None and stop.is_set():
                self._release(claimed[index:], None)
                return
            if time.monotonic() - renewed > self._lease.total_seconds() / 3:
                self._renew(claimed[index:])
                renewed = time.monotonic()
            self._deliver(item)

    def _deliver(self, item: Claimed) -> None:
        now = self._clock()
        paused = self._paused_until(item.channel, now)
        if paused is not None:
            self._release([item], paused)
            return
        entry = self._entries.get(item.channel)
        secrets = entry.secrets if entry is not None else frozenset()
        started = now
        begin = time.perf_counter()
        result: SendResult | None = None
        error: ChannelError | None = None
        if entry is None:
            error = ChannelError(f"channel {item.channel!r} is not configured")
        else:
            channel = self._channel(entry)
            if channel is None:
                error = ChannelError(entry.problem or f"channel {item.channel!r} is unavailable")
            else:
                try:
                    result = channel.send(item.params, delivery_key=item.key)
                except ChannelError as exc:
                    error = exc
                except ProviderError as exc:
                    error = ChannelError(f"{type(exc).__name__}: {exc}")
                except Exception as exc:  # a channel bug must not stop the worker
                    log.exception(
                        "channel raised an unexpected error",
                        extra={
                            "event": "worker.channel_bug",
                            "channel": item.channel,
                            "delivery_id": item.id,
                        },
                    )
                    error = ChannelError(f"unexpected {type(exc).__name__} in channel {item.channel!r}")
        duration = time.perf_counter() - begin
        metrics.DELIVERY_LATENCY.labels(channel=item.channel).observe(duration)
        if result is not None:
            self._record_success(item, started, duration, result, secrets)
        else:
            assert error is not None
            policy = entry.policy if entry is not None else make_policy(None, self._config)
            self._record_failure(
                item, started=started, duration=duration, error=error, policy=policy, secrets=secrets
            )

    def _paused_until(self, channel: str, now: datetime) -> datetime | None:
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

    def _owned(
        self, session: Session, delivery_id: int, values: Mapping[str, Any], *, any_owner: bool
    ) -> bool:
        condition = (
            DeliveryRecord.status != DELIVERED
            if any_owner
            else and_(DeliveryRecord.status == SENDING, DeliveryRecord.lease_owner == self.name)
        )
        result = session.execute(
            update(DeliveryRecord)
            .where(DeliveryRecord.id == delivery_id, condition)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        return cast("CursorResult[Any]", result).rowcount == 1

    def _record_success(
        self, item: Claimed, started: datetime, duration: float, result: SendResult, secrets: frozenset[str]
    ) -> None:
        finished = self._clock()
        number = item.attempts + 1
        partner_id = str(result.partner_id)[:200] if result.partner_id is not None else None
        with self._db.session(immediate=True) as session:
            # A success is the truth even if our lease ran out meanwhile.
            owned = self._owned(
                session,
                item.id,
                {
                    "status": DELIVERED,
                    "attempts": number,
                    "updated_at": finished,
                    "finished_at": finished,
                    "lease_owner": None,
                    "lease_expires_at": None,
                    "last_status": result.status,
                    "last_error": None,
                    "partner_id": partner_id,
                    "documents": _plain(result.documents),
                },
                any_owner=True,
            )
            session.add(
                DeliveryAttempt(
                    delivery_id=item.id,
                    number=number,
                    started_at=started,
                    duration=duration,
                    outcome=OUTCOME_DELIVERED,
                    http_status=result.status,
                    partner_id=partner_id,
                    error=None,
                    worker=self.name,
                )
            )
        metrics.DELIVERIES.labels(channel=item.channel, outcome="delivered").inc()
        log.info(
            "delivered",
            extra={
                "event": "delivery.delivered",
                "delivery_id": item.id,
                "channel": item.channel,
                "attempt": number,
                "status": result.status,
                "partner_id": partner_id,
                "duration": round(duration, 4),
                "recorded": owned,
            },
        )

    def _record_failure(
        self,
        item: Claimed,
        *,
        started: datetime,
        duration: float,
        error: ChannelError,
        policy: RetryPolicy,
        secrets: frozenset[str],
    ) -> None:
        finished = self._clock()
        number = item.attempts + 1
        outcome = decide(
            policy,
            status=error.status,
            final=error.final,
            retry_after=error.retry_after,
            pause_requested=error.pause_channel,
            attempt=number,
            age=(finished - item.age_from).total_seconds(),
            random=self._random,
        )
        text = str(error)
        if error.partner_code and error.partner_code not in text:
            text = f"{text} (partner code {error.partner_code})"
        message = redact(text, secrets)
        values: dict[str, Any] = {
            "attempts": number,
            "updated_at": finished,
            "lease_owner": None,
            "lease_expires_at": None,
            "last_status": error.status,
            "last_error": message,
        }
        next_attempt: datetime | None = None
        if outcome.kind == "retry":
            next_attempt = finished + timedelta(seconds=outcome.wait)
            values.update(status=PENDING, next_attempt_at=next_attempt)
        else:
            values.update(status=FAILED, finished_at=finished)
        paused_until = finished + timedelta(seconds=outcome.pause) if outcome.pause else None
        with self._db.session(immediate=True) as session:
            owned = self._owned(session, item.id, values, any_owner=False)
            session.add(
                DeliveryAttempt(
                    delivery_id=item.id,
                    number=number,
                    started_at=started,
                    duration=duration,
                    outcome=OUTCOME_RETRY if outcome.kind == "retry" else OUTCOME_FAILED,
                    http_status=error.status,
                    error=message,
                    worker=self.name,
                    next_attempt_at=next_attempt,
                )
            )
            if paused_until is not None:
                self._pause(session, item.channel, paused_until, error.status, finished)
        if paused_until is not None:
            self._paused[item.channel] = paused_until
        metrics.DELIVERIES.labels(
            channel=item.channel, outcome="retry" if outcome.kind == "retry" else "failed"
        ).inc()
        log.log(
            logging.WARNING if outcome.kind == "retry" else logging.ERROR,
            "delivery attempt failed",
            extra={
                "event": "delivery.retry" if outcome.kind == "retry" else "delivery.failed",
                "delivery_id": item.id,
                "channel": item.channel,
                "attempt": number,
                "status": error.status,
                "final": error.final,
                "reason": outcome.reason or None,
                "wait": round(outcome.wait, 3) if outcome.kind == "retry" else None,
                "error": message,
                "recorded": owned,
            },
        )

    def _pause(self, session: Session, name: str, until: datetime, status: int | None, now: datetime) -> None:
        state = self._locked_state(session, name, now)
        if state.paused_until is None or state.paused_until < until:
            state.paused_until = until
            state.pause_reason = f"HTTP {status}" if status is not None else "partner asked to pause"
            state.updated_at = now
        metrics.CHANNEL_PAUSED.labels(channel=name).set(1)
        log.warning(
            "channel paused",
            extra={"event": "channel.paused", "channel": name, "until": until.isoformat(), "status": status},
        )

    def _release(self, items: Sequence[Claimed], next_attempt: datetime | None) -> None:
        """Hand claimed deliveries back without an attempt (stopping, or their channel got paused)."""
        now = self._clock()
        values: dict[str, Any] = {
            "status": PENDING,
            "lease_owner": None,
            "lease_expires_at": None,
            "updated_at": now,
        }
        if next_attempt is not None:
            values["next_attempt_at"] = next_attempt
        self._update_leased(items, values)

    def _renew(self, items: Sequence[Claimed]) -> None:
        self._update_leased(items, {"lease_expires_at": self._clock() + self._lease})

    def _update_leased(self, items: Sequence[Claimed], values: Mapping[str, Any]) -> None:
        """Set ``values`` on those of ``items`` this worker still leases (status sending, owner us)."""
        with self._db.session(immediate=True) as session:
            session.execute(
                update(DeliveryRecord)
                .where(
                    DeliveryRecord.id.in_([item.id for item in items]),
                    DeliveryRecord.status == SENDING,
                    DeliveryRecord.lease_owner == self.name,
                )
                .values(**values)
                .execution_options(synchronize_session=False)
            )

    # --- housekeeping -----------------------------------------------------------

    def _housekeeping(self, now: datetime) -> None:
        """Every few seconds: forget closed de-duplication windows, refresh the queue gauges."""
        if time.monotonic() < self._next_housekeeping:
            return
        self._next_housekeeping = time.monotonic() + HOUSEKEEPING_SECONDS
        with self._db.session(immediate=True) as session:
            session.execute(
                delete(EventDedup)
                .where(EventDedup.expires_at < now)
                .execution_options(synchronize_session=False)
            )
        self._paused = {name: until for name, until in self._paused.items() if until > now}
        reports.refresh_queue_metrics(self._db, now)


def _close(entry: _Entry) -> None:
    if entry.channel is not None:
        try:
            entry.channel.close()
        except Exception:  # noqa: BLE001 - closing must never stop the worker
            log.warning(
                "channel did not close cleanly",
                extra={"event": "worker.channel_close_failed", "channel": entry.config.name},
            )
        entry.channel = None
    entry.built = False


def _plain(documents: Mapping[str, Any]) -> dict[str, Any] | None:
    """The partner's documents as plain JSON data (``None`` when there are none)."""
    if not documents:
        return None
    plain: dict[str, Any] = json.loads(json.dumps(dict(documents), default=str))
    return plain


# --- embedding -----------------------------------------------------------------------


def run_worker(
    settings: Settings,
    database: Database,
    stop: threading.Event,
    *,
    channel_factory: ChannelFactory | None = None,
) -> None:
    """Run one delivery worker until ``stop`` is set (blocking). For ``st-provider worker``
    and for the worker embedded in ``st-provider serve``.

    Give it its own :class:`~provider.db.session.Database` (never one shared with a
    process that forks afterwards). It returns after the send in progress when
    ``stop`` is set; database errors are logged and retried, never raised.
    ``channel_factory`` defaults to :func:`provider.channels.registry.build_channel`.
    """
    Worker(settings, database, channel_factory=channel_factory).run(stop)


class WorkerThread:
    """A delivery worker on a daemon thread (see :func:`start_worker_thread`)."""

    def __init__(
        self,
        settings: Settings,
        database: Database,
        *,
        channel_factory: ChannelFactory | None = None,
        name: str = "st-provider-worker",
    ) -> None:
        self.stop_event = threading.Event()
        self.database = database
        self.thread = threading.Thread(
            target=run_worker,
            args=(settings, database, self.stop_event),
            kwargs={"channel_factory": channel_factory},
            name=name,
            daemon=True,
        )

    def start(self) -> WorkerThread:
        # A process that forks after this (the gunicorn master) must not hand the worker's
        # pooled connections to its children: they start with an empty pool instead.
        os.register_at_fork(after_in_child=self._forget_connections)
        self.thread.start()
        return self

    def _forget_connections(self) -> None:
        self.database.engine.dispose(close=False)

    def stop(self, timeout: float = 30.0) -> bool:
        """Ask the worker to stop and wait up to ``timeout`` s; whether it stopped."""
        self.stop_event.set()
        self.thread.join(timeout)
        return not self.thread.is_alive()


def start_worker_thread(
    settings: Settings, database: Database, *, channel_factory: ChannelFactory | None = None
) -> WorkerThread:
    """Start an embedded delivery worker on a daemon thread; call ``.stop()`` on shutdown.

    ``st-provider serve`` calls this once per server (not once per gunicorn worker),
    e.g. from the gunicorn master's ``when_ready`` hook, with a ``Database`` of its own
    that it disposes after ``.stop()``. Processes forked later (gunicorn workers) get an
    empty connection pool for that database, never the worker's connections.
    """
    return WorkerThread(settings, database, channel_factory=channel_factory).start()
