"""A small TTL cache for user lookups (directory or local), and the authenticator wrapper that uses it.

SmarterTrack calls GetCustomFieldOptions, StartTicket, StartChat and GetUserDetails
for a logged-in user again and again; :class:`CachingAuthenticator` answers repeated
lookups of one username from memory for ``ttl`` seconds (per process) so those calls
do not hit the directory (or the database) every time. Failures (``DirectoryUnavailable``) are never
cached; "no such user" is cached for a shorter ``negative_ttl``.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

from provider.auth.usernames import username_key
from provider.domain import Authenticator, Identity

K = TypeVar("K")
V = TypeVar("V")

_MISSING = object()


class TTLCache(Generic[K, V]):
    """A thread-safe mapping whose entries expire; the least recently used go first when full."""

    def __init__(self, *, max_entries: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        if max_entries <= 0:
            raise ValueError("max_entries must be positive")
        self._max = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._items: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K) -> tuple[bool, V | None]:
        """``(True, value)`` for a live entry, ``(False, None)`` otherwise."""
        now = self._clock()
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return False, None
            expires, value = item
            if expires <= now:
                del self._items[key]
                return False, None
            self._items.move_to_end(key)
            return True, value

    def put(self, key: K, value: V, ttl: float) -> None:
        """Store ``value`` for ``ttl`` seconds (nothing is stored for ``ttl <= 0``)."""
        if ttl <= 0:
            return
        with self._lock:
            self._items[key] = (self._clock() + ttl, value)
            self._items.move_to_end(key)
            while len(self._items) > self._max:
                self._items.popitem(last=False)

    def discard(self, key: K) -> None:
        with self._lock:
            self._items.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


def cache_key(username: str) -> str:
    """The cache key of a typed username: its :func:`~provider.auth.usernames.username_key`."""
    return username_key(username)


class CachingAuthenticator:
    """Caches ``lookup`` results of another authenticator; ``authenticate`` always asks it.

    A successful ``authenticate`` refreshes the cached identity of that username.
    """

    def __init__(
        self,
        inner: Authenticator,
        *,
        ttl: float,
        negative_ttl: float | None = None,
        cache: TTLCache[str, Identity | None] | None = None,
    ) -> None:
        self._inner = inner
        self._ttl = ttl
        self._negative_ttl = min(ttl, 5.0) if negative_ttl is None else negative_ttl
        self._cache: TTLCache[str, Identity | None] = cache if cache is not None else TTLCache()

    @property
    def inner(self) -> Authenticator:
        return self._inner

    def authenticate(self, username: str, password: str, *, client_address: str | None = None) -> Identity:
        identity = self._inner.authenticate(username, password, client_address=client_address)
        self._cache.put(cache_key(username), identity, self._ttl)
        return identity

    def lookup(self, username: str) -> Identity | None:
        key = cache_key(username)
        hit, cached = self._cache.get(key)
        if hit:
            return cached
        identity = self._inner.lookup(username)
        self._cache.put(key, identity, self._ttl if identity is not None else self._negative_ttl)
        return identity
