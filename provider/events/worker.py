"""The delivery worker: claims due deliveries, sends them concurrently, records every attempt.

Run it as ``st-provider worker`` (see :mod:`provider.events.commands`; ``st-provider
serve`` starts one as a child process unless ``--no-worker``).

How deliveries move (table ``deliveries``):

- **claim** (:mod:`provider.events.leases`): due rows become ``sending`` with a lease
  this worker renews (every third of ``lease_seconds``) for as long as it holds them:
  waiting in its queue, being sent, or waiting to be recorded. Channels that are
  disabled, paused or out of their rate limit are skipped. While the worker has fewer
  sends in flight than its ``concurrency``, it claims the next batch, so claiming,
  sending and recording overlap.
- **suppress** (:mod:`provider.comms.optouts`): just before sending, a delivery whose
  recipient is on the suppression list becomes ``suppressed`` (final, no attempt, never
  retried); an e-mail loses only its opted-out recipients. This is done at send time,
  not when the outbox creates the delivery, so an opt-out added after the event (or
  while a delivery waits for a retry) is still honoured, and removing one lets queued
  deliveries go. ``otp`` channels are exempt.
- **send** (:mod:`provider.events.sending`), outside any transaction, on a bounded pool
  of threads (``ST_PROVIDER_WORKER_CONCURRENCY``, and per channel its ``concurrency``
  with a slow start), through the channel (:class:`~provider.channels.base.Channel`,
  built by :class:`~provider.events.channel_cache.ChannelCache`), with the channel's own
  timeout. A delivery of a channel paused meanwhile (by any worker) is handed back
  unsent, due when the pause ends.
- **record** (:mod:`provider.events.recording`; finished sends in groups, one
  transaction each; a success waits up to 50 ms for others while sends are in flight, a
  failure is recorded at once): an attempt row (time, duration, HTTP status, partner message id,
  redacted error) and the delivery's new state: ``delivered``; ``pending`` with the
  next attempt time the retry policy chose (:mod:`provider.events.retry`; nothing ever
  sleeps); or ``failed``. A 429/503 pauses the channel for every worker
  (``channel_state.paused_until``).

Every database access happens on the worker's own thread; only the sends run on the pool.

Idle workers wait for a wake-up (:mod:`provider.events.wakeup`: PostgreSQL
``LISTEN/NOTIFY``, SQLite change polling) or ``poll_interval``, whichever comes first;
each wake-up is logged at debug level (``worker.wake``, field ``wake``: ``notify``,
``listening``, ``change``, ``watching`` or ``poll``).

Delivery is at least once. If a worker dies after the partner accepted a
notification but before the outcome is recorded, the lease expires, another
worker records a ``lost`` attempt and sends it again: the partner then receives it
twice. That window (the sends of the dead worker that were in flight or not yet
recorded) is the only source of duplicates. Every send carries the delivery's stable
``key``, which channels pass on where the partner can de-duplicate.

Stopping: set the ``stop`` event. The worker hands the deliveries it has not started
back (``pending``, due at once), waits for the sends in flight, records them and returns.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random as random_module
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import delete, select

from provider import metrics
from provider.channels import registry
from provider.channels.base import SendResult
from provider.channels.policy import MAX_CONCURRENCY
from provider.comms import optouts
from provider.db.base import utcnow
from provider.db.events import EventDedup, EventRecord
from provider.db.session import Database
from provider.errors import ProviderError
from provider.events import reports
from provider.events.channel_cache import CachedChannel, ChannelCache, ChannelFactory
from provider.events.leases import Claimed, Leases
from provider.events.recording import MAX_GROUP, Recorder
from provider.events.sending import Job, Sender, Sent
from provider.events.wakeup import PAUSED, Waker, start_waker
from provider.journal.retention import PurgeSchedule
from provider.settings import Settings

log = logging.getLogger("provider.events.worker")

HOUSEKEEPING_SECONDS = 10.0
ERROR_BACKOFF_SECONDS = 5.0
#: how often a busy worker looks at ``stop``, its leases and the clock while sends are in flight
TICK_SECONDS = 0.2
#: the longest a finished success waits to be recorded with others while sends are in flight
RECORD_AFTER_SECONDS = 0.05


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
        self._recorder = Recorder(
            database,
            self._leases,
            self._channels,
            worker=self.name,
            clock=clock,
            random=random or random_module.random,
        )
        self._attention = threading.Event()  # a send ended, or a wake-up came
        self._sender = Sender(self._config.concurrency, self._attention.set)
        self._queue: deque[Claimed] = deque()  # claimed, not started
        self._unrecorded: list[Sent] = []  # sent, not yet recorded
        self._first_unrecorded = 0.0  # when the oldest of them finished (monotonic)
        self._renewed = time.monotonic()
        self._wake_reason: str | None = None  # set by the waker's thread
        self._want_claim = True
        self._next_poll = 0.0
        self._next_housekeeping = 0.0
        # Retention (call journal, events, rules audit): see provider/journal/retention.py.
        self._retention = PurgeSchedule(database, settings.retention)

    # --- loops ------------------------------------------------------------------

    def run_once(self, stop: threading.Event | None = None) -> int:
        """Claim one batch of due deliveries and work through it; the number claimed.

        Raises StorageError when the database fails (nothing is lost: unfinished
        claims return to the queue when their lease expires).
        """
        claimed = self._claim()
        self._work_off(stop)
        return claimed

    def drain(self, stop: threading.Event | None = None, *, max_batches: int = 100_000) -> int:
        """Work until nothing is due (or ``stop`` is set); the number of deliveries claimed.

        Batches overlap: the next is claimed while the sends of the last are in flight.
        """
        total = 0
        batches = 0
        while stop is None or not stop.is_set():
            if batches < max_batches and self._held() < self._sender.concurrency:
                count = self._claim()
                batches += 1
                total += count
                if count == 0:
                    batches = max_batches  # nothing more is due: finish what is held
            if not self._held():
                break
            self._step(stop)
        self._work_off(stop)
        return total

    def run(self, stop: threading.Event) -> None:
        """Work until ``stop`` is set; when idle, wait for a wake-up or ``poll_interval``."""
        log.info("delivery worker started", extra={"event": "worker.started", "worker": self.name})
        waker = start_waker(self._db, self._woken, worker=self.name, listen=self._config.wakeups)
        try:
            while not stop.is_set():
                try:
                    self._cycle(stop)
                except ProviderError as exc:
                    log.warning(
                        "delivery worker could not reach the database",
                        extra={"event": "worker.storage_error", "worker": self.name, "error": str(exc)},
                    )
                    stop.wait(max(self._config.poll_interval, ERROR_BACKOFF_SECONDS))
                except Exception:  # one bad batch must not end delivery for good
                    log.exception(
                        "delivery worker failed; continuing",
                        extra={"event": "worker.crashed_batch", "worker": self.name},
                    )
                    stop.wait(max(self._config.poll_interval, ERROR_BACKOFF_SECONDS))
        finally:
            self._finish(waker, stop)
            log.info("delivery worker stopped", extra={"event": "worker.stopped", "worker": self.name})

    def close(self) -> None:
        """Stop the send threads (after the sends in flight) and close every channel this worker built."""
        self._sender.close(wait=True)
        self._channels.close()

    def _finish(self, waker: Waker | None, stop: threading.Event) -> None:
        try:
            if waker is not None:
                waker.close()
            self._work_off(stop)
        except ProviderError as exc:
            log.warning(
                "could not record the last sends; their leases will expire",
                extra={"event": "worker.storage_error", "worker": self.name, "error": str(exc)},
            )
        finally:
            self.close()

    def _cycle(self, stop: threading.Event) -> None:
        """One turn of :meth:`run`: claim if there is room and reason to, then send, or wait idle."""
        if self._take_wake() is not None or time.monotonic() >= self._next_poll:
            self._want_claim = True
        if self._want_claim and self._held() < self._sender.concurrency:
            self._want_claim = self._claim() >= self._config.batch_size
            self._next_poll = time.monotonic() + self._config.poll_interval
        if self._held():
            self._step(stop)
            return
        reason = self._idle_wait(stop)
        if reason is not None:
            self._want_claim = True

    def _idle_wait(self, stop: threading.Event) -> str | None:
        """Wait for a wake-up or the next poll; its reason (``None``: stopping)."""
        log.debug("worker idle", extra={"event": "worker.idle", "worker": self.name})
        while not stop.is_set():
            reason = self._take_wake()
            if reason is not None:
                return reason
            left = self._next_poll - time.monotonic()
            if left <= 0:
                log.debug("worker woken", extra={"event": "worker.wake", "worker": self.name, "wake": "poll"})
                return "poll"
            self._attention.wait(min(left, TICK_SECONDS))
            self._attention.clear()
        return None

    def _woken(self, reason: str) -> None:
        """Called by the waker's thread: a hint that deliveries may be due, or that a channel was paused."""
        if reason.startswith(PAUSED):
            self._leases.look_again(reason.removeprefix(PAUSED))
            return
        self._wake_reason = reason
        self._attention.set()

    def _take_wake(self) -> str | None:
        """The reason of the wake-up that came since the last call (logged), if one did."""
        reason, self._wake_reason = self._wake_reason, None
        if reason is not None:
            log.debug("worker woken", extra={"event": "worker.wake", "worker": self.name, "wake": reason})
        return reason

    # --- claim, send, record ----------------------------------------------------

    def _held(self) -> int:
        """Deliveries this worker holds the lease of: queued, in flight, or sent but not recorded."""
        return len(self._queue) + self._sender.in_flight + len(self._unrecorded)

    def _claim(self) -> int:
        now = self._clock()
        self._housekeeping(now)
        self._retention.run_if_due(now)  # at most once a minute, bounded, never raises
        if not self._held():
            self._renewed = time.monotonic()
        claimed = self._leases.claim(now)
        self._channels.close_retired(self._sender.channels())
        self._queue.extend(claimed)
        return len(claimed)

    def _work_off(self, stop: threading.Event | None) -> None:
        """Send and record everything held (``stop``: hand the unstarted back first)."""
        while self._held():
            self._step(stop)

    def _step(self, stop: threading.Event | None) -> None:
        """Start what may start, wait a little for sends to end, record those that did, renew leases."""
        if stop is not None and stop.is_set() and self._queue:
            items = list(self._queue)
            self._queue.clear()
            self._leases.release(items, None)
        self._dispatch()
        if self._sender.in_flight and not self._record_now():
            self._attention.wait(self._patience())
        self._attention.clear()
        finished = self._sender.finished()
        for sent in finished:
            metrics.DELIVERY_LATENCY.labels(channel=sent.item.channel).observe(sent.duration)
        if finished and not self._unrecorded:
            self._first_unrecorded = time.monotonic()
        self._unrecorded.extend(finished)
        if self._record_now():
            while self._unrecorded:
                group = self._unrecorded[:MAX_GROUP]
                self._recorder.record(group)  # StorageError: kept, tried again on the next step
                del self._unrecorded[: len(group)]
        self._renew_if_due()

    def _record_now(self) -> bool:
        """Whether to record the finished sends now, rather than wait for more to record with them.

        Successes wait (at most :data:`RECORD_AFTER_SECONDS`, up to a group of
        :data:`~provider.events.recording.MAX_GROUP`) while other sends are in flight:
        recording in larger groups is what lets one worker keep up with a fast partner.
        A failure is recorded at once (it may pause its channel), and so is everything
        when nothing else is in flight.
        """
        if not self._unrecorded:
            return False
        return (
            not self._sender.in_flight
            or len(self._unrecorded) >= MAX_GROUP
            or time.monotonic() - self._first_unrecorded >= RECORD_AFTER_SECONDS
            or any(not isinstance(sent.outcome, SendResult) for sent in self._unrecorded)
        )

    def _patience(self) -> float:
        """How long to wait for a send to end before looking at everything again."""
        if not self._unrecorded:
            return TICK_SECONDS
        return max(0.0, RECORD_AFTER_SECONDS - (time.monotonic() - self._first_unrecorded))

    def _dispatch(self) -> None:
        """Start the queued deliveries that fit the bounds; hand back those of paused channels."""
        now = self._clock()
        waiting: deque[Claimed] = deque()
        full: set[str] = set()
        paused: dict[datetime, list[Claimed]] = {}
        while self._queue and self._sender.in_flight < self._sender.concurrency:
            item = self._queue.popleft()
            if item.channel in full:
                waiting.append(item)
                continue
            until = self._leases.paused_until(item.channel, now)
            if until is not None:
                paused.setdefault(until, []).append(item)
                continue
            entry = self._channels.get(item.channel)
            limit = self._limit(entry)
            if not self._sender.can_start(item.channel, limit):
                full.add(item.channel)
                waiting.append(item)
                continue
            job = self._job(item, entry, limit, now)
            if job is not None:
                self._sender.start(job)
        waiting.extend(self._queue)
        self._queue = waiting
        for until, items in paused.items():
            self._leases.release(items, until)

    def _limit(self, entry: CachedChannel | None) -> int:
        own = entry.policy.concurrency if entry is not None else None
        return min(own or MAX_CONCURRENCY, self._sender.concurrency)

    def _job(self, item: Claimed, entry: CachedChannel | None, limit: int, now: datetime) -> Job | None:
        """The send of ``item`` (``None``: suppressed, recorded as such)."""
        if entry is None:
            return Job(item, None, f"channel {item.channel!r} is not configured", limit, now)
        found = self._suppression(item, entry)
        if found is not None and found.params is None:
            self._recorder.suppressed(item, found)
            return None
        if found is not None and found.params is not None:
            item = dataclasses.replace(item, params=found.params)
        channel = self._channels.channel(entry)
        return Job(item, channel, entry.problem, limit, now)

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

    def _renew_if_due(self) -> None:
        """Extend the leases of everything held, every third of the lease."""
        if time.monotonic() - self._renewed <= self._leases.lease.total_seconds() / 3:
            return
        held = [*self._queue, *self._sender.items(), *(sent.item for sent in self._unrecorded)]
        if held:
            self._leases.renew(held)
        self._renewed = time.monotonic()

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
