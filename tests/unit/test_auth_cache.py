"""The TTL cache and the caching authenticator (over a real in-tree authenticator)."""

from __future__ import annotations

import pytest

from provider.auth.cache import CachingAuthenticator, TTLCache
from provider.domain import Identity
from provider.errors import AuthenticationFailed, DirectoryUnavailable


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class CountingDirectory:
    """A tiny in-memory authenticator that counts the calls that reach it."""

    def __init__(self, users: dict[str, str]) -> None:
        self.users = users
        self.lookups = 0
        self.down = False

    def authenticate(self, username: str, password: str, *, client_address: str | None = None) -> Identity:
        if self.down:
            raise DirectoryUnavailable("down")
        if self.users.get(username.strip().lower()) != password:
            raise AuthenticationFailed("bad_password")
        return Identity(username=username.strip(), email=f"{username.strip().lower()}@example.org")

    def lookup(self, username: str) -> Identity | None:
        self.lookups += 1
        if self.down:
            raise DirectoryUnavailable("down")
        name = username.strip().lower()
        return Identity(username=name) if name in self.users else None


def test_entries_expire() -> None:
    clock = Clock()
    cache: TTLCache[str, int] = TTLCache(clock=clock)
    cache.put("a", 1, ttl=10)
    assert cache.get("a") == (True, 1)
    clock.now = 10.0
    assert cache.get("a") == (False, None)
    assert len(cache) == 0


def test_least_recently_used_entries_go_first() -> None:
    cache: TTLCache[str, int] = TTLCache(max_entries=2)
    cache.put("a", 1, ttl=60)
    cache.put("b", 2, ttl=60)
    cache.get("a")
    cache.put("c", 3, ttl=60)
    assert cache.get("b") == (False, None)
    assert cache.get("a") == (True, 1)
    assert cache.get("c") == (True, 3)


def test_nothing_is_stored_with_a_zero_ttl() -> None:
    cache: TTLCache[str, int] = TTLCache()
    cache.put("a", 1, ttl=0)
    assert cache.get("a") == (False, None)


def test_repeated_lookups_hit_the_directory_once_per_ttl() -> None:
    clock = Clock()
    inner = CountingDirectory({"alice": "pw"})
    auth = CachingAuthenticator(inner, ttl=60, cache=TTLCache(clock=clock))
    for spelling in ("alice", " Alice ", "ALICE"):
        identity = auth.lookup(spelling)
        assert identity is not None and identity.username == "alice"
    assert inner.lookups == 1
    clock.now = 61
    auth.lookup("alice")
    assert inner.lookups == 2


def test_unknown_users_are_cached_for_a_shorter_time() -> None:
    clock = Clock()
    inner = CountingDirectory({})
    auth = CachingAuthenticator(inner, ttl=60, cache=TTLCache(clock=clock))
    assert auth.lookup("ghost") is None
    assert auth.lookup("ghost") is None
    assert inner.lookups == 1
    clock.now = 6
    inner.users["ghost"] = "pw"
    assert auth.lookup("ghost") is not None
    assert inner.lookups == 2


def test_outages_are_not_cached() -> None:
    inner = CountingDirectory({"alice": "pw"})
    auth = CachingAuthenticator(inner, ttl=60)
    inner.down = True
    for _ in range(2):
        with pytest.raises(DirectoryUnavailable):
            auth.lookup("alice")
    assert inner.lookups == 2
    inner.down = False
    assert auth.lookup("alice") is not None


def test_a_successful_login_refreshes_the_cached_identity() -> None:
    inner = CountingDirectory({"alice": "pw"})
    auth = CachingAuthenticator(inner, ttl=60)
    identity = auth.authenticate("Alice", "pw")
    assert auth.lookup("alice") == identity
    assert inner.lookups == 0


def test_authentication_is_never_answered_from_the_cache() -> None:
    inner = CountingDirectory({"alice": "pw"})
    auth = CachingAuthenticator(inner, ttl=60)
    auth.authenticate("alice", "pw")
    try:
        auth.authenticate("alice", "wrong")
    except AuthenticationFailed as exc:
        assert exc.reason == "bad_password"
    else:
        raise AssertionError("a cached identity answered a wrong password")


def test_look_alike_spellings_share_one_cache_entry() -> None:
    inner = CountingDirectory({"alice": "pw"})
    auth = CachingAuthenticator(inner, ttl=60, cache=TTLCache(clock=Clock()))
    for spelling in (
        "alice",
        "\uff41\uff4c\uff49\uff43\uff45",
        "\uff41lice",
        "\u24d0lice",
    ):  # fullwidth, mixed, enclosed
        auth.lookup(spelling)
    assert inner.lookups == 1
