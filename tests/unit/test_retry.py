"""The retry policy: waits per status, backoff with jitter, final errors, limits, pauses."""

from __future__ import annotations

import random
from types import MappingProxyType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from provider.channels.policy import DEFAULT_RETRY_WAITS, ChannelPolicy, channel_policy, default_policy
from provider.events.retry import backoff_wait, decide
from provider.settings import WorkerSettings

SMARTCOMM = ChannelPolicy(
    retry_waits=MappingProxyType({500: 5.0, 429: 60.0, 503: 120.0}), backoff=10.0, backoff_max=3600.0
)


def _decide(policy: ChannelPolicy = SMARTCOMM, **kw: object) -> object:
    args: dict[str, object] = {
        "status": None,
        "final": False,
        "retry_after": None,
        "pause_requested": False,
        "attempt": 1,
        "age": 0.0,
        "random": lambda: 0.5,
    }
    args.update(kw)
    return decide(policy, **args)  # type: ignore[arg-type]


@pytest.mark.parametrize(("status", "wait"), [(500, 5.0), (429, 60.0), (503, 120.0)])
def test_documented_waits(status: int, wait: float) -> None:
    outcome = _decide(status=status)
    assert outcome.kind == "retry"
    assert outcome.wait == wait


def test_retry_after_wins_when_larger_only() -> None:
    assert _decide(status=429, retry_after=90.0).wait == 90.0
    assert _decide(status=429, retry_after=10.0).wait == 60.0
    assert _decide(status=503, retry_after=0.0).wait == 120.0


@pytest.mark.parametrize("status", [429, 503])
def test_429_and_503_pause_the_channel(status: int) -> None:
    outcome = _decide(status=status)
    assert outcome.pause == outcome.wait


def test_500_and_timeouts_do_not_pause() -> None:
    assert _decide(status=500).pause is None
    assert _decide(status=None).pause is None


def test_channel_may_ask_for_a_pause() -> None:
    assert _decide(status=None, pause_requested=True).pause is not None


def test_final_errors_fail_at_once() -> None:
    outcome = _decide(status=403, final=True)
    assert outcome.kind == "failed"
    assert outcome.reason == "final"


@pytest.mark.parametrize("status", [None, 502, 504, 401, 408])
def test_other_failures_back_off_exponentially(status: int | None) -> None:
    waits = [_decide(status=status, attempt=n, random=lambda: 0.0).wait for n in (1, 2, 3, 4)]
    assert waits == [5.0, 10.0, 20.0, 40.0]  # lower half of 10, 20, 40, 80
    top = [_decide(status=status, attempt=n, random=lambda: 0.999999).wait for n in (1, 2, 3)]
    assert top == pytest.approx([10.0, 20.0, 40.0], rel=1e-5)


def test_backoff_is_capped() -> None:
    policy = ChannelPolicy(backoff=10.0, backoff_max=60.0, max_attempts=100, max_age=1e9)
    assert backoff_wait(policy, 50, lambda: 0.999999) == pytest.approx(60.0, rel=1e-5)
    assert backoff_wait(policy, 10_000, lambda: 0.0) == 30.0


@given(attempt=st.integers(min_value=1, max_value=200), r=st.floats(min_value=0.0, max_value=0.999999))
def test_backoff_stays_within_half_and_full_ceiling(attempt: int, r: float) -> None:
    policy = ChannelPolicy(backoff=2.0, backoff_max=500.0)
    ceiling = min(500.0, 2.0 * 2.0 ** min(attempt - 1, 60))
    wait = backoff_wait(policy, attempt, lambda: r)
    assert ceiling / 2 <= wait <= ceiling


def test_jitter_spreads_waits() -> None:
    rng = random.Random(7)
    waits = {round(_decide(status=None, attempt=3, random=rng.random).wait, 6) for _ in range(20)}
    assert len(waits) > 10


def test_fails_after_max_attempts() -> None:
    policy = ChannelPolicy(retry_waits=SMARTCOMM.retry_waits, max_attempts=3)
    assert _decide(policy, status=500, attempt=2).kind == "retry"
    outcome = _decide(policy, status=500, attempt=3)
    assert outcome.kind == "failed"
    assert outcome.reason == "max_attempts"


def test_fails_when_next_attempt_would_be_too_old() -> None:
    policy = ChannelPolicy(retry_waits=SMARTCOMM.retry_waits, max_age=100.0)
    assert _decide(policy, status=429, age=30.0).kind == "retry"
    outcome = _decide(policy, status=429, age=50.0)
    assert outcome.kind == "failed"
    assert outcome.reason == "max_age"
    assert outcome.pause == 60.0  # the channel is still paused for everyone else


def test_channel_policy_uses_channel_values_over_worker_settings() -> None:
    worker = WorkerSettings(max_attempts=8, max_age_seconds=86_400, retry_backoff=3.0, retry_backoff_max=30.0)
    policy = channel_policy(
        "smartcomm", {"retry_waits": {429: 1, 503: 2}, "max_attempts": 3, "max_age": "2m"}, worker
    )
    assert dict(policy.retry_waits) == {429: 1.0, 503: 2.0, 500: 5.0}
    assert policy.max_attempts == 3
    assert policy.max_age == 120.0
    assert policy.rate_limit == (100, 60.0)
    assert (policy.backoff, policy.backoff_max) == (3.0, 30.0)


def test_channel_policy_falls_back_to_worker_settings() -> None:
    worker = WorkerSettings(max_attempts=5, max_age_seconds=600)
    policy = channel_policy("email", {}, worker)
    assert (policy.max_attempts, policy.max_age, policy.rate_limit) == (5, 600.0, None)
    unknown = default_policy(worker)
    assert dict(unknown.retry_waits) == dict(DEFAULT_RETRY_WAITS)
    assert unknown.max_attempts == 5


def test_partner_defaults_reach_the_worker() -> None:
    worker = WorkerSettings()
    smartcomm = channel_policy("smartcomm", {}, worker)
    assert dict(smartcomm.retry_waits) == {500: 5.0, 429: 60.0, 503: 120.0}
    assert smartcomm.rate_limit == (100, 60.0)
    tuned = channel_policy("smartcomm", {"retry_waits": {"429": 1}, "rate_limit": "off"}, worker)
    assert dict(tuned.retry_waits) == {500: 5.0, 429: 1.0, 503: 120.0}
    assert tuned.rate_limit is None
    unknown = channel_policy("no-such-type", {}, worker)
    assert dict(unknown.retry_waits) == dict(DEFAULT_RETRY_WAITS)
