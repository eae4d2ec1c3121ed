"""The wrong-password limiter as a pure policy: injected clock, no HTTP."""

from __future__ import annotations

import pytest

from provider.password_limiter import PasswordFailureLimiter
from provider.settings import PasswordLimitSettings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limiter(
    clock: Clock, *, failures: int = 3, window: float = 60, cooldown: float = 30, size: int = 100
) -> PasswordFailureLimiter:
    return PasswordFailureLimiter(
        max_failures=failures,
        window_seconds=window,
        cooldown_seconds=cooldown,
        max_addresses=size,
        clock=clock,
    )


def fail(lim: PasswordFailureLimiter, key: str, times: int) -> list[bool]:
    return [lim.record_failure(key) for _ in range(times)]


def test_the_threshold_failure_starts_one_block_and_the_next_request_is_refused() -> None:
    clock = Clock()
    lim = limiter(clock)
    assert fail(lim, "203.0.113.7", 2) == [False, False]
    assert lim.retry_after("203.0.113.7") is None
    assert lim.record_failure("203.0.113.7") is True
    assert lim.retry_after("203.0.113.7") == 30
    # Failures answered while the block began do not start another one.
    assert lim.record_failure("203.0.113.7") is False


def test_retry_after_counts_down_in_whole_seconds_and_the_block_ends_by_itself() -> None:
    clock = Clock()
    lim = limiter(clock)
    fail(lim, "a", 3)
    clock.now += 10.2
    assert lim.retry_after("a") == 20  # 19.8 seconds left, rounded up
    clock.now += 19.7
    assert lim.retry_after("a") == 1
    clock.now += 0.1
    assert lim.retry_after("a") is None
    assert len(lim) == 0
    # A fresh count afterwards: one failure does not block again.
    assert lim.record_failure("a") is False
    assert lim.retry_after("a") is None


def test_failures_outside_the_window_do_not_add_up() -> None:
    clock = Clock()
    lim = limiter(clock, window=60)
    fail(lim, "a", 2)
    clock.now += 60
    assert fail(lim, "a", 2) == [False, False]
    assert lim.retry_after("a") is None
    clock.now += 59.9
    assert lim.record_failure("a") is True


def test_other_addresses_are_unaffected() -> None:
    clock = Clock()
    lim = limiter(clock)
    fail(lim, "blocked", 3)
    fail(lim, "other", 2)
    assert lim.retry_after("blocked") == 30
    assert lim.retry_after("other") is None
    assert lim.retry_after("never-seen") is None


def test_asking_allocates_nothing_and_unknown_addresses_are_never_counted() -> None:
    lim = limiter(Clock())
    for n in range(1000):
        assert lim.retry_after(f"198.51.100.{n}") is None
    assert lim.record_failure(None) is False
    assert lim.retry_after(None) is None
    assert len(lim) == 0


def test_the_table_is_bounded_and_forgets_the_least_recently_counted_address() -> None:
    clock = Clock()
    lim = limiter(clock, failures=2, size=10)
    lim.record_failure("old")
    for n in range(10_000):
        lim.record_failure(f"flood-{n}")
        assert len(lim) <= 10
    assert len(lim) == 10
    # "old" was forgotten: its second failure starts a new count.
    assert lim.record_failure("old") is False
    assert lim.retry_after("old") is None


def test_expired_entries_are_dropped_as_new_failures_arrive() -> None:
    clock = Clock()
    lim = limiter(clock, window=60, cooldown=30)
    for n in range(50):
        lim.record_failure(f"a-{n}")
    fail(lim, "blocked", 3)
    assert len(lim) == 51
    clock.now += 61
    lim.record_failure("late")
    assert len(lim) == 1  # the windows and the block all ended


def test_zero_turns_it_off() -> None:
    lim = limiter(Clock(), failures=0)
    assert not lim.enabled
    assert fail(lim, "a", 100) == [False] * 100
    assert lim.retry_after("a") is None and len(lim) == 0


def test_built_from_settings() -> None:
    clock = Clock()
    lim = PasswordFailureLimiter.from_settings(
        PasswordLimitSettings(max_failures=2, window_seconds=5, cooldown_seconds=7, max_addresses=3),
        clock=clock,
    )
    fail(lim, "a", 2)
    assert lim.retry_after("a") == 7
    assert lim.max_addresses == 3 and lim.window_seconds == 5


@pytest.mark.parametrize("field", ["window_seconds", "cooldown_seconds", "max_addresses", "max_failures"])
def test_invalid_limits_are_refused(field: str) -> None:
    values: dict[str, float] = {
        "max_failures": 1,
        "window_seconds": 1,
        "cooldown_seconds": 1,
        "max_addresses": 1,
    }
    values[field] = -1
    with pytest.raises(ValueError):
        PasswordFailureLimiter(
            max_failures=int(values["max_failures"]),
            window_seconds=values["window_seconds"],
            cooldown_seconds=values["cooldown_seconds"],
            max_addresses=int(values["max_addresses"]),
        )
