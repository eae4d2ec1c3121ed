"""The configured channels as one delivery worker knows them: policy now, channel on first use.

:class:`ChannelCache` reloads the channel configurations through
:class:`~provider.channels.config.ChannelStore` (inside the claim's transaction),
keeps each channel's :class:`~provider.channels.policy.ChannelPolicy`, builds a
channel the first time a delivery needs it and rebuilds it when its type or settings
change. A channel that cannot be built (invalid settings, an unset ``${VAR}``) has a
redacted ``problem`` that its deliveries record as their error.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy.orm import Session

from provider.channels.base import Channel
from provider.channels.config import ChannelConfig, ChannelStore
from provider.channels.policy import ChannelPolicy, channel_policy, default_policy
from provider.channels.validation import allowed_environment
from provider.errors import ConfigError
from provider.redact import redact, secret_values
from provider.settings import Settings

log = logging.getLogger("provider.events.worker")


class ChannelFactory(Protocol):
    """Builds a channel from its stored settings (``registry.build_channel``'s signature)."""

    def __call__(
        self,
        name: str,
        type_name: str,
        settings: Mapping[str, Any],
        *,
        environment: Mapping[str, str],
        timeout: float,
    ) -> Channel: ...


@dataclass
class CachedChannel:
    """A configured channel as this worker knows it."""

    config: ChannelConfig
    policy: ChannelPolicy
    secrets: frozenset[str]
    problem: str | None = None
    channel: Channel | None = None
    built: bool = False

    def close(self) -> None:
        """Close the built channel (if any); the next use builds it again."""
        if self.channel is not None:
            try:
                self.channel.close()
            except Exception:  # noqa: BLE001 - closing must never stop the worker
                log.warning(
                    "channel did not close cleanly",
                    extra={"event": "worker.channel_close_failed", "channel": self.config.name},
                )
            self.channel = None
        self.built = False


class ChannelCache:
    """The channels of one worker (not thread-safe: the worker's thread drives it; sends run elsewhere)."""

    def __init__(self, settings: Settings, factory: ChannelFactory) -> None:
        # Only the variables channel settings may reference (ST_PROVIDER_SECRET_VARS, never
        # ST_PROVIDER_*): a refused name resolves as unset, so it can never be sent.
        self._environment = allowed_environment(settings.environment, settings.secret_vars)
        self._worker = settings.worker
        self._factory = factory
        self._entries: dict[str, CachedChannel] = {}
        # Replaced or removed while a send may still use them: closed by close_retired().
        self.retired: list[CachedChannel] = []
        self.fallback = default_policy(settings.worker)

    def get(self, name: str) -> CachedChannel | None:
        return self._entries.get(name)

    def policy(self, name: str) -> ChannelPolicy:
        """The channel's policy; the worker's defaults for a channel nobody configured."""
        entry = self._entries.get(name)
        return entry.policy if entry is not None else self.fallback

    def names(self) -> list[str]:
        """The configured channels' names."""
        return list(self._entries)

    def disabled(self) -> set[str]:
        return {name for name, entry in self._entries.items() if not entry.config.enabled}

    def refresh(self, session: Session) -> None:
        """Load the channel configurations; retire a channel whose type or settings changed."""
        seen: set[str] = set()
        for config in ChannelStore.all(session):
            seen.add(config.name)
            entry = self._entries.get(config.name)
            if entry is not None and entry.config.version == config.version:
                entry.config = config  # ``enabled`` may have changed
                continue
            if entry is not None:
                self.retired.append(entry)
            self._entries[config.name] = self._new_entry(config)
        for name in set(self._entries) - seen:
            self.retired.append(self._entries.pop(name))

    def close_retired(self, busy: Collection[int]) -> None:
        """Close the replaced or removed channels, except those (by ``id``) still sending."""
        keep = []
        for entry in self.retired:
            if entry.channel is not None and id(entry.channel) in busy:
                keep.append(entry)
            else:
                entry.close()
        self.retired = keep

    def _new_entry(self, config: ChannelConfig) -> CachedChannel:
        secrets = secret_values(config.settings, self._environment)
        try:
            policy = channel_policy(config.type, config.settings, self._worker)
        except ConfigError as exc:
            problem = redact(f"channel {config.name!r}: {exc}", secrets)
            return CachedChannel(config, self.fallback, secrets, problem=problem)
        return CachedChannel(config, policy, secrets)

    def channel(self, entry: CachedChannel) -> Channel | None:
        """The entry's channel, built on first use; ``None`` when it cannot be (see ``entry.problem``)."""
        if not entry.built:
            entry.built = True
            if entry.problem is None:
                try:
                    entry.channel = self._factory(
                        entry.config.name,
                        entry.config.type,
                        entry.config.settings,
                        environment=self._environment,
                        timeout=self._worker.http_timeout,
                    )
                except ConfigError as exc:
                    entry.problem = redact(str(exc), entry.secrets)
                    log.error(
                        "channel cannot be built",
                        extra={
                            "event": "worker.channel_unavailable",
                            "channel": entry.config.name,
                            "error": entry.problem,
                        },
                    )
        return entry.channel

    def close(self) -> None:
        """Close every channel this worker built."""
        for entry in [*self._entries.values(), *self.retired]:
            entry.close()
        self._entries.clear()
        self.retired = []
