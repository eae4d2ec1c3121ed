"""The settings of concurrent delivery: the worker's bound, a channel's ``concurrency``, wake-ups."""

from __future__ import annotations

import pytest

from provider.channels.policy import MAX_CONCURRENCY, channel_policy, policy_problems
from provider.errors import ConfigError
from provider.settings import Settings


def test_worker_concurrency_and_wakeups_have_defaults_and_are_validated() -> None:
    defaults = Settings.from_mapping({}).worker
    assert (defaults.concurrency, defaults.wakeups) == (16, True)
    chosen = Settings.from_mapping({"worker_concurrency": "4", "worker_wakeups": "off"}).worker
    assert (chosen.concurrency, chosen.wakeups) == (4, False)
    for wrong in ("0", "257", "many"):
        with pytest.raises(ConfigError, match="ST_PROVIDER_WORKER_CONCURRENCY"):
            Settings.from_mapping({"worker_concurrency": wrong})


def test_channel_concurrency_is_optional_and_bounded() -> None:
    assert channel_policy("webhook", {}).concurrency is None
    assert channel_policy("webhook", {"concurrency": 3}).concurrency == 3
    assert channel_policy("webhook", {"concurrency": "20"}).concurrency == MAX_CONCURRENCY
    for wrong in (0, MAX_CONCURRENCY + 1, "two", True):
        (problem,) = policy_problems({"concurrency": wrong})
        assert problem.startswith("setting 'concurrency':"), problem
        with pytest.raises(ConfigError):
            channel_policy("webhook", {"concurrency": wrong})


def test_a_channel_connection_pool_keeps_alive_every_connection_it_may_open() -> None:
    # httpcore closes "surplus" idle connections (counting all of them) even when one was just
    # handed to a waiting send, which then fails mid-request: no surplus, no such close.
    from provider.channels.impl import http

    assert http.LIMITS.max_keepalive_connections == http.LIMITS.max_connections
    assert http.LIMITS.max_connections is not None and http.LIMITS.max_connections >= MAX_CONCURRENCY
