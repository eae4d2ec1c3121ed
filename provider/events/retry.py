"""The retry policy of deliveries: pure functions, no clock, no database.

A failed attempt (a :class:`~provider.errors.ChannelError`) becomes an
:class:`Outcome`: retry after ``wait`` seconds (stored by the worker as the next
attempt time, never slept), or ``failed``. The rules, from the partners' guidance:

- ``final`` errors (400/403/404/413/422 and the like, decided by the channel) fail at once;
- an HTTP status listed in the channel's ``retry_waits`` waits that long (SmartCOMM:
  500 -> 5 s, 429 -> 60 s, 503 -> 120 s), or the partner's ``Retry-After`` when larger;
- anything else (timeouts, connection errors, 502/504, a 401 the channel could not
  cure by refreshing its token) backs off exponentially with jitter: the ceiling
  ``min(backoff_max, backoff * 2**(attempt-1))``, the wait drawn in its upper half;
- 429 and 503 (or a channel asking for it) also pause the whole channel for the wait;
- the delivery fails once it has made ``max_attempts`` attempts, or when its next
  attempt would come later than ``max_age`` seconds after it was created (or retried
  by hand).

The values are one :class:`~provider.channels.policy.ChannelPolicy`: the channel
settings' generic keys (``retry_waits``, ``max_attempts``, ``max_age``, ``rate_limit``)
over the type's defaults, the backoff and the fallbacks for ``max_attempts``/``max_age``
from :class:`~provider.settings.WorkerSettings` (:func:`provider.channels.policy.channel_policy`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from provider.channels.policy import PAUSE_STATUSES, ChannelPolicy


@dataclass(frozen=True)
class Outcome:
    """What to do after a failed attempt.

    ``kind`` is ``retry`` (try again in ``wait`` seconds) or ``failed`` (stop;
    ``reason`` says why: ``final``, ``max_attempts`` or ``max_age``). ``pause`` is
    how long to hold the whole channel, when the partner asked for that.
    """

    kind: Literal["retry", "failed"]
    wait: float = 0.0
    pause: float | None = None
    reason: str = ""


def backoff_wait(policy: ChannelPolicy, attempt: int, random: Callable[[], float]) -> float:
    """Exponential backoff with jitter for attempt number ``attempt`` (1-based).

    The ceiling doubles per attempt up to ``backoff_max``; the wait is drawn
    uniformly from its upper half, so it is never less than half the ceiling.
    """
    exponent = max(0, min(attempt - 1, 60))
    ceiling = min(policy.backoff_max, policy.backoff * (2.0**exponent))
    return ceiling / 2.0 + random() * ceiling / 2.0


def decide(
    policy: ChannelPolicy,
    *,
    status: int | None,
    final: bool,
    retry_after: float | None,
    pause_requested: bool,
    attempt: int,
    age: float,
    random: Callable[[], float],
) -> Outcome:
    """The outcome of failed attempt number ``attempt`` (1-based).

    ``age`` is the seconds from the delivery's creation (or manual retry) to now;
    ``random`` returns a float in [0, 1) (``random.random``).
    """
    if final:
        return Outcome("failed", reason="final")
    partner_wait = retry_after if retry_after is not None and retry_after > 0 else 0.0
    if status is not None and status in policy.retry_waits:
        wait = max(policy.retry_waits[status], partner_wait)
    else:
        wait = max(backoff_wait(policy, attempt, random), partner_wait)
    pause = wait if (pause_requested or status in PAUSE_STATUSES) else None
    if attempt >= policy.max_attempts:
        return Outcome("failed", pause=pause, reason="max_attempts")
    if age + wait > policy.max_age:
        return Outcome("failed", pause=pause, reason="max_age")
    return Outcome("retry", wait=wait, pause=pause)
