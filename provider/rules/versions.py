"""Rule-set versions kept whole: snapshots, listing, and a readable diff.

Every change to the stored rule set (import, replace, enable, disable, rollback)
writes one :class:`~provider.db.rules.RuleSetSnapshot` row in the same transaction as
the change (see :mod:`provider.rules.store`): the version number, who, how, a
one-line summary, and the whole rule set as ``rules export`` writes it (``${VAR}``
references intact, never resolved). Version 0 is the empty rule set. Versions made
before snapshots existed have none, except the one a later change started from (its
``baseline`` row).

This module only reads and writes those rows; it never changes the rule set itself
(``rules rollback`` is :meth:`provider.rules.store.RuleStore.rollback`).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from provider.db.base import utcnow
from provider.db.rules import RuleSetSnapshot
from provider.db.session import Database
from provider.errors import RuleVersionNotFound
from provider.rules.loader import dump_rules
from provider.rules.model import RulesFile

IMPORT = "import"
REPLACE = "replace"
ENABLE = "enable"
DISABLE = "disable"
ROLLBACK = "rollback"
BASELINE = "baseline"

_ACTION_ORDER = ("created", "updated", "deleted", "enabled", "disabled")

#: the content of version 0, the empty rule set
EMPTY = dump_rules(RulesFile())


@dataclass(frozen=True)
class VersionInfo:
    """One kept version (without its content)."""

    version: int
    created_at: datetime
    actor: str
    action: str
    summary: str


def record(session: Session, *, version: int, actor: str, action: str, summary: str, content: str) -> None:
    """Add the snapshot of ``version`` to the caller's transaction (one row)."""
    session.add(
        RuleSetSnapshot(
            version=version,
            created_at=utcnow(),
            actor=actor[:200],
            action=action[:20],
            summary=summary[:500],
            content=content,
        )
    )


def has_snapshot(session: Session, version: int) -> bool:
    """Whether ``version`` is kept (version 0, the empty set, always is)."""
    if version == 0:
        return True
    found = session.scalar(select(RuleSetSnapshot.id).where(RuleSetSnapshot.version == version))
    return found is not None


def list_versions(database: Database, *, limit: int = 50) -> list[VersionInfo]:
    """The kept versions, newest first."""
    query = select(RuleSetSnapshot).order_by(RuleSetSnapshot.version.desc()).limit(max(1, limit))
    with database.session() as session:
        return [
            VersionInfo(
                version=row.version,
                created_at=row.created_at,
                actor=row.actor,
                action=row.action,
                summary=row.summary,
            )
            for row in session.scalars(query)
        ]


def content_of(database: Database, version: int) -> str:
    """The export YAML of ``version``; raises RuleVersionNotFound when it is not kept."""
    if version == 0:
        return EMPTY
    with database.session() as session:
        content = session.scalar(select(RuleSetSnapshot.content).where(RuleSetSnapshot.version == version))
    if content is None:
        raise RuleVersionNotFound(
            f"rule set version {version} is not kept (see `st-provider rules versions`)"
        )
    return content


def previous_kept(database: Database, version: int) -> int:
    """The newest kept version before ``version`` (0, the empty set, when none is)."""
    with database.session() as session:
        found = session.scalar(
            select(RuleSetSnapshot.version)
            .where(RuleSetSnapshot.version < version)
            .order_by(RuleSetSnapshot.version.desc())
            .limit(1)
        )
    return int(found or 0)


def summarise(changes: Sequence[tuple[str, str, str]]) -> str:
    """A one-line summary of (kind, subject, action) changes: "rules: 2 created, 1 updated; ..."."""
    if len(changes) == 1:
        kind, subject, action = changes[0]
        return f"{kind} {subject!r} {action}"
    parts = []
    for kind in ("rule", "channel", "template", "variable"):
        counts: dict[str, int] = {}
        for k, _, action in changes:
            if k == kind:
                counts[action] = counts.get(action, 0) + 1
        if counts:
            ordered = sorted(counts.items(), key=lambda item: _ACTION_ORDER.index(item[0]))
            parts.append(f"{kind}s: " + ", ".join(f"{n} {a}" for a, n in ordered))
    return "; ".join(parts) or "no changes"


def unified_diff(before: str, after: str, *, before_label: str, after_label: str) -> str:
    """A unified diff of two rule-set texts (empty when they are equal)."""
    lines = difflib.unified_diff(
        before.splitlines(keepends=True),
        after.splitlines(keepends=True),
        fromfile=before_label,
        tofile=after_label,
        n=3,
    )
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


__all__ = [
    "BASELINE",
    "DISABLE",
    "EMPTY",
    "ENABLE",
    "IMPORT",
    "REPLACE",
    "ROLLBACK",
    "VersionInfo",
    "content_of",
    "has_snapshot",
    "list_versions",
    "previous_kept",
    "record",
    "summarise",
    "unified_diff",
]
