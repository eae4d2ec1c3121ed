"""Configured channels: one configuration type and the one store of their records.

A :class:`ChannelConfig` is one configured channel as stored (table ``channels``):
its name, type, settings exactly as written (``${VAR}`` references unresolved) and
whether it is enabled. :class:`ChannelStore` is the only code that reads or writes
those records: the rules store imports channels with it (inside its own transaction,
so the rule-set version and audit move with them), the delivery worker and the
start-up check read them through it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from provider.db.rules import ChannelRecord

CREATED: Final = "created"
UPDATED: Final = "updated"
DELETED: Final = "deleted"


@dataclass(frozen=True)
class ChannelConfig:
    """One configured channel. ``settings`` are exactly as stored (``${VAR}`` unresolved)."""

    name: str
    type: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    enabled: bool = True
    created_at: datetime | None = field(default=None, compare=False)
    updated_at: datetime | None = field(default=None, compare=False)

    def mapping(self) -> dict[str, Any]:
        """What the audit trail records of it: type, enabled, settings."""
        return {"type": self.type, "enabled": self.enabled, "settings": dict(self.settings)}

    @property
    def version(self) -> str:
        """Changes whenever the type or the settings change (not with ``enabled``)."""
        return json.dumps([self.type, dict(self.settings)], sort_keys=True, default=str)


@dataclass(frozen=True)
class ChannelChange:
    """One channel a write created, updated or deleted (``before``/``after`` as :meth:`ChannelConfig.mapping`)."""

    name: str
    action: Literal["created", "updated", "deleted"]
    before: dict[str, Any] | None
    after: dict[str, Any] | None


def _config(record: ChannelRecord) -> ChannelConfig:
    return ChannelConfig(
        name=record.name,
        type=record.type,
        settings=dict(record.settings) if isinstance(record.settings, dict) else {},
        enabled=bool(record.enabled),
        created_at=record.created_at,
        updated_at=record.updated_at,
    )


class ChannelStore:
    """Reads and writes channel records inside the caller's session (and transaction)."""

    @staticmethod
    def all(session: Session) -> list[ChannelConfig]:
        """Every configured channel, in the order they were created."""
        return [_config(r) for r in session.scalars(select(ChannelRecord).order_by(ChannelRecord.id))]

    @staticmethod
    def types(session: Session) -> dict[str, str]:
        """Configured channels: name -> type."""
        return {
            name: type_ for name, type_ in session.execute(select(ChannelRecord.name, ChannelRecord.type))
        }

    @staticmethod
    def write(
        session: Session, configs: Sequence[ChannelConfig], *, replace: bool, now: datetime
    ) -> tuple[list[ChannelChange], int]:
        """Add or update ``configs`` (and with ``replace`` delete the others).

        Returns the changes and how many of ``configs`` were unchanged.
        """
        stored = {r.name: r for r in session.scalars(select(ChannelRecord))}
        changes: list[ChannelChange] = []
        unchanged = 0
        for config in configs:
            record = stored.get(config.name)
            after = config.mapping()
            if record is None:
                session.add(
                    ChannelRecord(
                        name=config.name,
                        type=config.type,
                        settings=dict(config.settings),
                        enabled=config.enabled,
                        created_at=now,
                        updated_at=now,
                    )
                )
                changes.append(ChannelChange(config.name, CREATED, None, after))
                continue
            before = _config(record).mapping()
            if before == after:
                unchanged += 1
                continue
            record.type, record.settings, record.enabled = config.type, dict(config.settings), config.enabled
            record.updated_at = now
            changes.append(ChannelChange(config.name, UPDATED, before, after))
        if replace:
            in_file = {c.name for c in configs}
            for name, record in stored.items():
                if name not in in_file:
                    changes.append(ChannelChange(name, DELETED, _config(record).mapping(), None))
                    session.delete(record)
            session.flush()
        return changes, unchanged


def names(configs: Sequence[ChannelConfig]) -> Mapping[str, str]:
    """``configs`` as name -> type (what ``notify`` entries are checked against)."""
    return {c.name: c.type for c in configs}
