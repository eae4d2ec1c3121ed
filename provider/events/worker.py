"""The delivery worker: claims due deliveries, sends them, records every attempt.

Run it as ``st-provider worker`` (see :mod:`provider.events.commands`; ``st-provider
serve`` starts one as a child process unless ``--no-worker``).

How deliveries move (table ``deliveries``):

- **claim** (:mod:`provider.events.leases`): due rows become ``sending`` with a lease
  this worker renews while it works through the batch; channels that are disabled,
  paused or out of their rate limit are skipped.
- **suppress** (:mod:`provider.comms.optouts`): just before sending, a delivery whose
  recipient is on the suppression list becomes ``suppressed`` (final, no attempt, never
  retried); an e-mail loses only its opted-out recipients. This is done at send time,
  not when the outbox creates the delivery, so an opt-out added after the event (or
  while a delivery waits for a retry) is still honoured, and removing one lets queued
  deliveries go. ``otp`` channels are exempt.
- **send**, outside any transaction, through the channel
  (:class:`~provider.channels.base.Channel`, built by
  :class:`~provider.events.channel_cache.ChannelCache`), with the channel's own timeout.
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

import dataclasses
import json
import logging
import os
import random as random_module
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select

from provider import metrics
from provider.channels import registry
from provider.channels.base import SendResult
from provider.channels.policy import ChannelPolicy
from provider.comms import optouts
from provider.db.base import utcnow
from provider.db.events import (
    DELIVERED,
    FAILED,
    OUTCOME_DELIVERED,
    OUTCOME_FAILED,
    OUTCOME_RETRY,
    PENDING,
    SUPPRESSED,
    DeliveryAttempt,
    EventDedup,
    EventRecord,
)
from provider.db.session import Database
from provider.errors import ChannelError, ProviderError
from provider.events import reports
from provider.events.channel_cache import CachedChannel, ChannelCache, ChannelFactory
from provider.events.leases import Claimed, Leases
from provider.events.retry import decide
from provider.journal.retention import PurgeSchedule
from provider.redact import redact
from provider.settings import Settings

log = logging.getLogger("provider.events.worker")

HOUSEKEEPING_SECONDS = 10.0
ERROR_BACKOFF_SECONDS = 5.0


def default_worker_name() -> str:
    """``host:pid:random`` — unique per worker, readable in attempts and logs."""
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


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
        self._config = settings.worker
        self._db = database
        self._clock = clock
        self._random = random or random_module.random
        self.name = (name or default_worker_name())[:100]
        self._channels = ChannelCache(settings, channel_factory or registry.build_channel)
        self._leases = Leases(
            database,
            self._channels,
            owner=self.name,
            lease_seconds=self._config.lease_seconds,
            batch_size=self._config.batch_size,
            clock=clock,
        )
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
        claimed = self._leases.claim(now)
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
        self._channels.close()

    # --- send and record --------------------------------------------------------

    def _process(self, claimed: Sequence[Claimed], stop: threading.Event | None) -> None:
        renewed = time.monotonic()
        for index, item in enumerate(claimed):
            if stop is not None and stop.is_set():
                self._leases.release(claimed[index:], None)
                return
            if time.monotonic() - renewed > self._leases.lease.total_seconds() / 3:
                self._leases.renew(claimed[index:])
                renewed = time.monotonic()
            self._deliver(item)

    def _deliver(self, item: Claimed) -> None:
        now = self._clock()
        paused = self._leases.paused_until(item.channel, now)
        if paused is not None:
            self._leases.release([item], paused)
            return
        entry = self._channels.get(item.channel)
        secrets = entry.secrets if entry is not None else frozenset()
        if entry is not None:
            found = self._suppression(item, entry)
            if found is not None and found.params is None:
                self._record_suppressed(item, found)
                return
            if found is not None and found.params is not None:
                item = dataclasses.replace(item, params=found.params)
        begin = time.perf_counter()
        outcome = self._send(item, entry)
        duration = time.perf_counter() - begin
        metrics.DELIVERY_LATENCY.labels(channel=item.channel).observe(duration)
        if isinstance(outcome, SendResult):
            self._record_success(item, now, duration, outcome, secrets)
        else:
            policy = self._channels.policy(item.channel)
            self._record_failure(
                item, started=now, duration=duration, error=outcome, policy=policy, secrets=secrets
            )

    def _send(self, item: Claimed, entry: CachedChannel | None) -> SendResult | ChannelError:
        """Send ``item`` through its channel: the partner's answer, or the failure as a ChannelError."""
        if entry is None:
            return ChannelError(f"channel {item.channel!r} is not configured")
        channel = self._channels.channel(entry)
        if channel is None:
            return ChannelError(entry.problem or f"channel {item.channel!r} is unavailable")
        try:
            return channel.send(item.params, delivery_key=item.key)
        except ChannelError as exc:
            return exc
        except ProviderError as exc:
            return ChannelError(f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # a channel bug must not stop the worker
            log.exception(
                "channel raised an unexpected error",
                extra={"event": "worker.channel_bug", "channel": item.channel, "delivery_id": item.id},
            )
            return ChannelError(f"unexpected {type(exc).__name__} in channel {item.channel!r}")

    def _suppression(self, item: Claimed, entry: CachedChannel) -> optouts.Suppression | None:
        """What the suppression list says about ``item`` (``None``: send it as it is)."""
        category = entry.policy.category
        if not optouts.applies(entry.config.type, category):
            return None
        with self._db.session() as session:
            event_type = session.scalar(select(EventRecord.event_type).where(EventRecord.id == item.event_id))
            return optouts.suppression(
                session,
                channel_type=entry.config.type,
                category=category,
                params=item.params,
                event_type=event_type,
            )

    def _record_suppressed(self, item: Claimed, found: optouts.Suppression) -> None:
        """``item`` is not sent: final status ``suppressed``, no attempt counted."""
        finished = self._clock()
        scopes = sorted({scope for found_scopes in found.removed.values() for scope in found_scopes})
        values = {
            "status": SUPPRESSED,
            "finished_at": finished,
            "updated_at": finished,
            "lease_owner": None,
            "lease_expires_at": None,
            "last_error": f"not sent: the recipient opted out ({', '.join(scopes)})",
        }
        with self._db.session(immediate=True) as session:
            owned = self._leases.owned(session, item.id, values, any_owner=False)
        metrics.DELIVERIES.labels(channel=item.channel, outcome="suppressed").inc()
        log.info(
            "delivery suppressed",
            extra={
                "event": "delivery.suppressed",
                "delivery_id": item.id,
                "channel": item.channel,
                "scopes": scopes,
                "recorded": owned,
            },
        )

    def _attempt(self, item: Claimed, started: datetime, duration: float, **fields: Any) -> DeliveryAttempt:
        """The row of the attempt being recorded for ``item`` (its number: ``attempts + 1``)."""
        return DeliveryAttempt(
            delivery_id=item.id,
            number=item.attempts + 1,
            started_at=started,
            duration=duration,
            worker=self.name,
            **fields,
        )

    def _record_success(
        self, item: Claimed, started: datetime, duration: float, result: SendResult, secrets: frozenset[str]
    ) -> None:
        finished = self._clock()
        number = item.attempts + 1
        partner_id = str(result.partner_id)[:200] if result.partner_id is not None else None
        values = {
            **_ended(number, finished, result.status),
            "status": DELIVERED,
            "finished_at": finished,
            "last_error": None,
            "partner_id": partner_id,
            "documents": _documents_as_json(result.documents),
        }
        with self._db.session(immediate=True) as session:
            # A success is the truth even if our lease ran out meanwhile.
            owned = self._leases.owned(session, item.id, values, any_owner=True)
            session.add(
                self._attempt(
                    item,
                    started,
                    duration,
                    outcome=OUTCOME_DELIVERED,
                    http_status=result.status,
                    partner_id=partner_id,
                    error=None,
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
        policy: ChannelPolicy,
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
        message = redact(_error_text(error), secrets)
        retry = outcome.kind == "retry"
        next_attempt = finished + timedelta(seconds=outcome.wait) if retry else None
        values: dict[str, Any] = {**_ended(number, finished, error.status), "last_error": message}
        if next_attempt is not None:
            values.update(status=PENDING, next_attempt_at=next_attempt)
        else:
            values.update(status=FAILED, finished_at=finished)
        paused_until = finished + timedelta(seconds=outcome.pause) if outcome.pause else None
        with self._db.session(immediate=True) as session:
            owned = self._leases.owned(session, item.id, values, any_owner=False)
            session.add(
                self._attempt(
                    item,
                    started,
                    duration,
                    outcome=OUTCOME_RETRY if retry else OUTCOME_FAILED,
                    http_status=error.status,
                    error=message,
                    next_attempt_at=next_attempt,
                )
            )
            if paused_until is not None:
                self._leases.pause(session, item.channel, paused_until, error.status, finished)
        if paused_until is not None:
            self._leases.remember_pause(item.channel, paused_until)
        metrics.DELIVERIES.labels(channel=item.channel, outcome="retry" if retry else "failed").inc()
        log.log(
            logging.WARNING if retry else logging.ERROR,
            "delivery attempt failed",
            extra={
                "event": "delivery.retry" if retry else "delivery.failed",
                "delivery_id": item.id,
                "channel": item.channel,
                "attempt": number,
                "status": error.status,
                "final": error.final,
                "reason": outcome.reason or None,
                "wait": round(outcome.wait, 3) if retry else None,
                "error": message,
                "recorded": owned,
            },
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
        self._leases.forget_pauses(now)
        reports.refresh_queue_metrics(self._db, now)


def _ended(number: int, finished: datetime, status: int | None) -> dict[str, Any]:
    """The delivery columns every recorded attempt sets: its count, and the lease released."""
    return {
        "attempts": number,
        "updated_at": finished,
        "lease_owner": None,
        "lease_expires_at": None,
        "last_status": status,
    }


def _error_text(error: ChannelError) -> str:
    """The failure as recorded (before redaction): the message, with the partner's code if it adds one."""
    text = str(error)
    if error.partner_code and error.partner_code not in text:
        text = f"{text} (partner code {error.partner_code})"
    return text


def _documents_as_json(documents: Mapping[str, Any]) -> dict[str, Any] | None:
    """The partner's documents as plain JSON data, any other value as its text (``None`` when none)."""
    if not documents:
        return None
    plain: dict[str, Any] = json.loads(json.dumps(dict(documents), default=str))
    return plain
