"""Sending claimed deliveries concurrently: a bounded thread pool with per-channel windows.

Why threads and not asyncio: every channel sends with a blocking client (httpx's sync
``Client``, zeep over that client for Uniphore SOAP, ``smtplib`` for e-mail), and the
partner clients are shared by the channels' code paths and tests. Rewriting them as
async clients would double every channel for no gain: a send spends nearly all its time
waiting on a socket, which releases the GIL, so a few threads overlap the waits just as
well. The httpx clients are thread-safe (one connection pool per channel, see
:func:`provider.channels.impl.http.make_client`, :class:`~provider.channels.impl.http.Endpoint`
for webhooks); the channels that keep state between
sends guard it (SmartCOMM and SmartConnect tokens under a lock, the Uniphore SOAP
transport's last status per thread); e-mail opens one SMTP connection per send.

The contract of this module, which keeps the worker simple:

- **Only :func:`send_one` runs on the pool's threads**: it calls ``channel.send`` and
  turns every failure into a :class:`~provider.errors.ChannelError`. Claiming, checking
  pauses and opt-outs, and recording (every database access) stay on the worker's own
  thread, so the worker never competes with itself for SQLite's write lock and the
  :class:`~provider.events.channel_cache.ChannelCache` stays single-threaded.
- **Bounded**: at most ``concurrency`` sends at once per worker
  (``ST_PROVIDER_WORKER_CONCURRENCY``), and per channel at most its policy's
  ``concurrency`` (default: the worker's, capped by
  :data:`~provider.channels.policy.MAX_CONCURRENCY`, the HTTP client's connection pool).
- **Slow start per channel**: a channel's window of sends in flight starts at one,
  doubles after each success up to its limit, and drops back to one after a failure.
  A partner that starts answering 429 or 503 therefore sees one request, not a burst,
  before the channel is paused for every worker (and the rest of the batch is handed
  back without being sent), exactly as when deliveries went one at a time.
- A :class:`BaseException` that is not an :class:`Exception` raised by a send (the
  process is being torn down) is re-raised on the worker's thread by :meth:`Sender.finished`.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

from provider.channels.base import Channel, SendResult
from provider.errors import ChannelError, ProviderError
from provider.events.leases import Claimed

log = logging.getLogger("provider.events.worker")


@dataclass(frozen=True)
class Job:
    """One delivery about to be sent: the claimed row, its channel (``None``: not available)."""

    item: Claimed
    channel: Channel | None
    problem: str | None
    limit: int
    started: datetime


@dataclass(frozen=True)
class Sent:
    """A finished send: the partner's answer or the failure, and how long it took (seconds)."""

    job: Job
    outcome: SendResult | ChannelError
    duration: float

    @property
    def item(self) -> Claimed:
        return self.job.item


def send_one(job: Job) -> Sent:
    """Send ``job`` through its channel (on a pool thread); never raises an ``Exception``."""
    begin = time.perf_counter()
    outcome = _outcome(job)
    return Sent(job, outcome, time.perf_counter() - begin)


def _outcome(job: Job) -> SendResult | ChannelError:
    item = job.item
    if job.channel is None:
        return ChannelError(job.problem or f"channel {item.channel!r} is unavailable")
    try:
        return job.channel.send(item.params, delivery_key=item.key)
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


class Sender:
    """The sends of one worker in flight (see module docstring). Driven by one thread."""

    def __init__(self, concurrency: int, on_done: Callable[[], None]) -> None:
        self.concurrency = max(1, concurrency)
        self._on_done = on_done
        self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="delivery")
        self._running: dict[Future[Sent], Job] = {}
        self._per_channel: Counter[str] = Counter()
        self._window: dict[str, int] = {}

    @property
    def in_flight(self) -> int:
        return len(self._running)

    def items(self) -> list[Claimed]:
        """The deliveries being sent right now (their leases must be kept)."""
        return [job.item for job in self._running.values()]

    def channels(self) -> set[int]:
        """The channels (by ``id``) sending right now: not to be closed yet."""
        return {id(job.channel) for job in self._running.values() if job.channel is not None}

    def can_start(self, channel: str, limit: int) -> bool:
        """Whether one more send of ``channel`` fits the worker's bound and the channel's window."""
        if len(self._running) >= self.concurrency:
            return False
        window = min(self._window.get(channel, 1), max(1, limit))
        return self._per_channel[channel] < window

    def start(self, job: Job) -> None:
        future = self._pool.submit(send_one, job)
        self._running[future] = job
        self._per_channel[job.item.channel] += 1
        future.add_done_callback(lambda _: self._on_done())

    def finished(self) -> list[Sent]:
        """The sends that ended since the last call (the windows adjusted to their outcome)."""
        done = [future for future in self._running if future.done()]
        results = []
        for future in done:
            job = self._running.pop(future)
            self._per_channel[job.item.channel] -= 1
            sent = future.result()  # re-raises a BaseException from the send (see module docstring)
            self._adjust(job, sent)
            results.append(sent)
        return results

    def _adjust(self, job: Job, sent: Sent) -> None:
        name = job.item.channel
        if isinstance(sent.outcome, SendResult):
            self._window[name] = min(max(1, job.limit), self._window.get(name, 1) * 2)
        else:
            self._window[name] = 1

    def close(self, *, wait: bool) -> None:
        """Stop the pool (``wait``: after the sends in flight end)."""
        self._pool.shutdown(wait=wait, cancel_futures=True)
