"""Wrong Web Service Passwords, counted per client address: a pure, bounded, in-memory policy.

After ``max_failures`` wrong (or missing) ``authPW`` values from one address within
``window_seconds`` of the first of them, the address is blocked for
``cooldown_seconds``: :meth:`PasswordFailureLimiter.retry_after` then answers the
seconds left, and the caller refuses the request without reading it (HTTP 429). A
block ends by itself; a correct password during the cooldown is refused too. The
window is fixed (it starts at the first failure and is not extended by later ones).

The table is state created by callers that have not authenticated, so it is strictly
bounded: at most ``max_addresses`` entries (the least recently counted address is
forgotten first), expired entries are dropped as new failures arrive, an entry is three
numbers, and an address is only ever added by a failure (asking allocates nothing).
It lives in one process: under gunicorn each worker counts on its own, so an address
may make up to ``max_failures`` attempts per worker (per instance: workers x
max_failures) before every worker refuses it. Thread-safe; the clock is injected
(monotonic seconds).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from provider.settings import PasswordLimitSettings


class _Entry:
    __slots__ = ("blocked_until", "failures", "window_start")

    def __init__(self, now: float) -> None:
        self.window_start = now
        self.failures = 0
        self.blocked_until: float | None = None


class PasswordFailureLimiter:
    """Counts wrong passwords per address key and says which keys are blocked.

    ``max_failures`` 0 turns it off (nothing is counted, nothing blocked). Keys are
    opaque strings (see :func:`provider.client_address.address_bucket`); ``None``
    (an unknown address) is never counted nor blocked.
    """

    def __init__(
        self,
        *,
        max_failures: int,
        window_seconds: float,
        cooldown_seconds: float,
        max_addresses: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_failures < 0 or window_seconds <= 0 or cooldown_seconds <= 0 or max_addresses <= 0:
            raise ValueError("limits must be positive (max_failures may be 0: off)")
        self.max_failures = max_failures
        self.window_seconds = window_seconds
        self.cooldown_seconds = cooldown_seconds
        self.max_addresses = max_addresses
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def from_settings(
        cls, settings: PasswordLimitSettings, *, clock: Callable[[], float] = time.monotonic
    ) -> PasswordFailureLimiter:
        return cls(
            max_failures=settings.max_failures,
            window_seconds=settings.window_seconds,
            cooldown_seconds=settings.cooldown_seconds,
            max_addresses=settings.max_addresses,
            clock=clock,
        )

    @property
    def enabled(self) -> bool:
        return self.max_failures > 0

    def __len__(self) -> int:
        """How many addresses are remembered now (expired ones included until dropped)."""
        return len(self._entries)

    def retry_after(self, key: str | None) -> int | None:
        """Whole seconds (at least 1) until ``key`` may call again; ``None`` when it is not blocked."""
        if key is None or not self.enabled:
            return None
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.blocked_until is None:
                return None
            left = entry.blocked_until - self._clock()
            if left <= 0:
                del self._entries[key]
                return None
            return max(1, math.ceil(left))

    def record_failure(self, key: str | None) -> bool:
        """Count one wrong password from ``key``; ``True`` when this failure started a block."""
        if key is None or not self.enabled:
            return False
        with self._lock:
            now = self._clock()
            self._drop_expired(now)
            entry = self._entries.get(key)
            if entry is None or self._expired(entry, now):
                entry = _Entry(now)
                self._entries[key] = entry
            self._entries.move_to_end(key)
            if entry.blocked_until is not None:
                return False  # answered while the block began: already counted
            entry.failures += 1
            started = entry.failures >= self.max_failures
            if started:
                entry.blocked_until = now + self.cooldown_seconds
            while len(self._entries) > self.max_addresses:
                self._entries.popitem(last=False)
            return started

    def _expired(self, entry: _Entry, now: float) -> bool:
        if entry.blocked_until is not None:
            return now >= entry.blocked_until
        return now - entry.window_start >= self.window_seconds

    def _drop_expired(self, now: float) -> None:
        """Forget expired entries from the least recently counted end (amortised O(1))."""
        while self._entries:
            key, entry = next(iter(self._entries.items()))
            if not self._expired(entry, now):
                return
            del self._entries[key]
