"""How rules are written as rows: the stored mapping of a rule, and adding, updating,
deleting and reordering rule rows for an import (:mod:`provider.rules.store` runs it
inside its transaction and audits what it returns)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from provider.changes import CREATED, DELETED, UPDATED, Change
from provider.db.rules import RuleRecord
from provider.rules.model import Rule, RulesFile


def rule_mapping(record: RuleRecord) -> dict[str, Any]:
    """A stored rule as a rules file writes it."""
    out: dict[str, Any] = {"name": record.name}
    if record.description is not None:
        out["description"] = record.description
    out["method"] = record.method
    out["priority"] = record.priority
    if not record.enabled:
        out["enabled"] = False
    if record.when is not None:
        out["when"] = record.when
    if record.on_error is not None:
        out["on_error"] = record.on_error
    out["then"] = record.actions
    return out


def _record_values(rule: Rule) -> dict[str, Any]:
    mapping = rule.to_mapping()
    return {
        "description": rule.description,
        "method": mapping["method"],
        "priority": rule.priority,
        "enabled": rule.enabled,
        "when": rule.when,
        "on_error": rule.on_error,
        "actions": mapping["then"],
    }


def write_rules(
    session: Session,
    *,
    rules_file: RulesFile,
    stored: dict[str, RuleRecord],
    replace: bool,
    now: datetime,
    changes: list[tuple[Change, Any, Any]],
) -> int:
    """Add, update (and with ``replace`` delete and reorder) rules; returns how many were unchanged."""
    if replace:
        in_file = {r.name for r in rules_file.rules}
        for name, record in stored.items():
            if name not in in_file:
                changes.append((Change("rule", name, DELETED), rule_mapping(record), None))
                session.delete(record)
        session.flush()
    unchanged = 0
    next_position = 1 + max((r.position for r in stored.values()), default=-1)
    for index, rule in enumerate(rules_file.rules):
        values = _record_values(rule)
        existing = stored.get(rule.name)
        if existing is None:
            position = index if replace else next_position
            next_position += 1
            session.add(
                RuleRecord(name=rule.name, position=position, created_at=now, updated_at=now, **values)
            )
            changes.append(
                (Change("rule", rule.name, CREATED), None, {**rule.to_mapping(), "position": position})
            )
            continue
        position = index if replace else existing.position
        after = {**rule.to_mapping(), "position": position}
        before = {**rule_mapping(existing), "position": existing.position}
        if before == after:
            unchanged += 1
            continue
        for key, value in values.items():
            setattr(existing, key, value)
        existing.position = position
        existing.updated_at = now
        changes.append((Change("rule", rule.name, UPDATED), before, after))
    return unchanged
