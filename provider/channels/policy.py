"""The delivery policy of a channel: retry waits, limits, pauses and rate limit, in one type.

A channel's settings may carry the generic keys (:data:`GENERIC_KEYS`) beside its own:
``retry_waits`` (HTTP status -> seconds, merged status by status over the type's
waits), ``max_attempts``, ``max_age`` (a duration) and ``rate_limit`` (``{calls, per}``,
``[calls, per]``, ``"calls/per"``, or ``off``), ``concurrency`` (sends of the channel one
worker has in flight at once, 1 to :data:`MAX_CONCURRENCY`; default the worker's
``ST_PROVIDER_WORKER_CONCURRENCY``) and ``category`` (``transactional``,
the default, ``otp`` or ``promotional``: what the suppression list applies to, see
:mod:`provider.comms.optouts`). :func:`channel_policy` turns them, over
the type's defaults (:mod:`provider.channels.specs`) and the worker's settings (the
backoff, and ``max_attempts``/``max_age`` when the channel sets none), into one
:class:`ChannelPolicy`; :func:`policy_problems` is the validation the rules loader and
the channel registry share. What a failed attempt then leads to is decided by the
pure functions of :mod:`provider.events.retry`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from provider.channels.specs import SPECS
from provider.errors import ConfigError
from provider.settings import WorkerSettings

GENERIC_KEYS = frozenset({"retry_waits", "max_attempts", "max_age", "rate_limit", "category", "concurrency"})
#: message categories (``category:`` of a channel): opt-outs never suppress ``otp``
CATEGORIES = ("transactional", "otp", "promotional")
DEFAULT_CATEGORY = "transactional"
#: waits used when a channel's type is unknown (the SmartCOMM guidance)
DEFAULT_RETRY_WAITS: Mapping[int, float] = MappingProxyType({500: 5.0, 429: 60.0, 503: 120.0})
#: statuses that pause the whole channel for every worker (and that the channels report as such)
PAUSE_STATUSES = frozenset({429, 503})
#: the most sends of one channel a worker has in flight (the HTTP client's connection pool)
MAX_CONCURRENCY = 20

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$", re.IGNORECASE)
_UNIT = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


@dataclass(frozen=True)
class ChannelPolicy:
    """How one channel retries and how fast it may send.

    ``retry_waits`` maps an HTTP status to the seconds to wait (a larger ``Retry-After``
    wins; other failures back off exponentially from ``backoff`` up to ``backoff_max``);
    ``rate_limit`` is ``(calls, seconds)`` shared by every worker, or ``None``.
    """

    retry_waits: Mapping[int, float] = field(default_factory=lambda: DEFAULT_RETRY_WAITS)
    max_attempts: int = 8
    max_age: float = 86_400.0
    backoff: float = 10.0
    backoff_max: float = 3600.0
    rate_limit: tuple[int, float] | None = None
    category: str = DEFAULT_CATEGORY
    #: sends of this channel one worker may have in flight (``None``: the worker's bound)
    concurrency: int | None = None


def parse_category(value: Any) -> str:
    """``otp``, ``transactional`` or ``promotional`` (any case); raises ValueError."""
    text = str(value).strip().lower() if isinstance(value, str) else ""
    if text not in CATEGORIES:
        raise ValueError(f"must be one of {', '.join(CATEGORIES)}")
    return text


def parse_duration(value: Any) -> float:
    """Seconds from ``90``, ``"90s"``, ``"30m"``, ``"24h"``, ``"2d"``; raises ValueError."""
    if isinstance(value, bool):
        raise ValueError("must be a duration such as 30, '90s', '30m', '24h'")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError("must be a duration such as 30, '90s', '30m', '24h'")
        unit = match.group(2).lower() if match.group(2) else None
        seconds = float(match.group(1)) * _UNIT[unit]
    if seconds < 0:
        raise ValueError("must not be negative")
    return seconds


def _parse_rate_limit(value: Any) -> tuple[int, float]:
    """``{calls: 100, per: 60}``, ``[100, 60]`` or ``"100/60s"`` -> ``(100, 60.0)``."""
    if isinstance(value, Mapping):
        calls = value.get("calls")
        per = value.get("per", value.get("seconds"))
        extra = set(value) - {"calls", "per", "seconds"}
        if extra or calls is None or per is None:
            raise ValueError("must be {calls: N, per: SECONDS}")
    elif isinstance(value, list | tuple) and len(value) == 2:
        calls, per = value
    elif isinstance(value, str) and "/" in value:
        calls, per = value.split("/", 1)
    else:
        raise ValueError("must be {calls: N, per: SECONDS}, [N, SECONDS] or 'N/SECONDS'")
    if isinstance(calls, bool):
        raise ValueError("calls must be a positive whole number")
    count = int(str(calls).strip())
    seconds = parse_duration(per)
    if count <= 0 or seconds <= 0:
        raise ValueError("calls and period must be positive")
    return count, seconds


def _parse_rate_limit_setting(value: Any) -> tuple[int, float] | None:
    """Like :func:`_parse_rate_limit`, but ``false``/``off``/``none`` mean no limit."""
    if value is False or (isinstance(value, str) and value.strip().lower() in {"off", "none"}):
        return None
    return _parse_rate_limit(value)


def _parse_retry_waits(value: Any) -> dict[int, float]:
    """``{429: 60, "503": "2m"}`` -> ``{429: 60.0, 503: 120.0}`` (keys as numbers or text)."""
    if not isinstance(value, Mapping):
        raise ValueError("must be a mapping of HTTP status to seconds, e.g. {429: 60, 503: 120}")
    waits: dict[int, float] = {}
    for status, wait in value.items():
        if isinstance(status, bool):
            raise ValueError(f"{status!r} is not an HTTP status")
        code = int(str(status).strip())
        if not 100 <= code <= 599:
            raise ValueError(f"{status!r} is not an HTTP status")
        waits[code] = parse_duration(wait)
    return waits


def _parse_max_attempts(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("must be a positive whole number")
    number = int(str(value).strip())
    if number <= 0:
        raise ValueError("must be a positive whole number")
    return number


def _parse_concurrency(value: Any) -> int:
    number = _parse_max_attempts(value)
    if number > MAX_CONCURRENCY:
        raise ValueError(f"must be at most {MAX_CONCURRENCY}")
    return number


def _parse_max_age(value: Any) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError("must be positive")
    return seconds


_POLICY_PARSERS: dict[str, Callable[[Any], Any]] = {
    "rate_limit": _parse_rate_limit_setting,
    "retry_waits": _parse_retry_waits,
    "max_attempts": _parse_max_attempts,
    "max_age": _parse_max_age,
    "category": parse_category,
    "concurrency": _parse_concurrency,
}


def policy_problems(settings: Mapping[str, Any]) -> list[str]:
    """Problems with the generic keys of ``settings`` (empty when they are valid or absent)."""
    problems = []
    for key, parse in _POLICY_PARSERS.items():
        if key in settings and settings[key] is not None:
            try:
                parse(settings[key])
            except (ValueError, TypeError) as exc:
                problems.append(f"setting {key!r}: {exc}")
    return problems


def default_policy(worker: WorkerSettings) -> ChannelPolicy:
    """The policy of a channel nobody configured (or whose type is unknown): the worker's settings."""
    return ChannelPolicy(
        retry_waits=DEFAULT_RETRY_WAITS,
        max_attempts=worker.max_attempts,
        max_age=float(worker.max_age_seconds),
        backoff=worker.retry_backoff,
        backoff_max=worker.retry_backoff_max,
    )


def channel_policy(
    type_name: str, settings: Mapping[str, Any], worker: WorkerSettings | None = None
) -> ChannelPolicy:
    """The policy of one configured channel; raises ConfigError for invalid generic keys.

    The type's waits and rate limit (:data:`DEFAULT_RETRY_WAITS` and none for an unknown
    type: building the channel fails and says so), overridden by the channel's generic
    keys: ``retry_waits`` status by status; ``rate_limit: null`` keeps the type's,
    ``rate_limit: off`` (or ``false``/``none``) removes it. The backoff, and
    ``max_attempts``/``max_age`` when the channel sets none, come from ``worker``
    (default :class:`~provider.settings.WorkerSettings`).
    """
    problems = policy_problems(settings)
    if problems:
        raise ConfigError("; ".join(problems))
    base = default_policy(worker or WorkerSettings())
    spec = SPECS.get(type_name)
    rate_limit = spec.rate_limit if spec is not None else None
    waits = dict(spec.retry_waits if spec is not None else DEFAULT_RETRY_WAITS)
    if settings.get("rate_limit") is not None:
        rate_limit = _parse_rate_limit_setting(settings["rate_limit"])
    if settings.get("retry_waits") is not None:
        waits.update(_parse_retry_waits(settings["retry_waits"]))
    max_attempts = settings.get("max_attempts")
    max_age = settings.get("max_age")
    return ChannelPolicy(
        retry_waits=MappingProxyType(waits),
        max_attempts=_parse_max_attempts(max_attempts) if max_attempts is not None else base.max_attempts,
        max_age=_parse_max_age(max_age) if max_age is not None else base.max_age,
        backoff=base.backoff,
        backoff_max=base.backoff_max,
        rate_limit=rate_limit,
        category=parse_category(settings["category"])
        if settings.get("category") is not None
        else DEFAULT_CATEGORY,
        concurrency=_parse_concurrency(settings["concurrency"])
        if settings.get("concurrency") is not None
        else None,
    )
