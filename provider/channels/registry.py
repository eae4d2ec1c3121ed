"""Channel types by name: validation of their settings and construction.

The rules loader calls :func:`validate_channel_settings` for every entry of a rules
file's ``channels:`` section; the delivery worker calls :func:`build_channel`.
Settings may hold ``${VAR}`` references; they are resolved from
``Settings.environment`` only when a channel is built, and never stored resolved.
Generic keys (:data:`GENERIC_KEYS`) are the worker's (retries, pauses, rate limit);
channels ignore them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from provider.channels.base import Channel
from provider.errors import ConfigError

CHANNEL_TYPES: tuple[str, ...] = ("uniphore-sms", "smartcomm", "smartconnect", "webhook", "email")
GENERIC_KEYS = frozenset({"retry_waits", "max_attempts", "max_age", "rate_limit"})


def validate_channel_settings(type_name: str, settings: Mapping[str, Any]) -> list[str]:
    """Every problem with one channel's settings (empty when valid), without resolving secrets."""
    if type_name not in CHANNEL_TYPES:
        return [f"unknown channel type {type_name!r} (known: {', '.join(CHANNEL_TYPES)})"]
    return []


def build_channel(
    name: str,
    type_name: str,
    settings: Mapping[str, Any],
    *,
    environment: Mapping[str, str],
    timeout: float,
) -> Channel:
    """A ready channel; raises ConfigError for invalid settings or an unset ``${VAR}``."""
    raise ConfigError(f"channel {name!r}: type {type_name!r} cannot be built yet")
