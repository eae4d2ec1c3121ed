"""How templates and editable global variables are written as rows, inside an import's
transaction (:mod:`provider.rules.store` runs it and audits the changes returned).

Like rules: without ``replace`` the file's entries are added or update the stored ones
of the same name; with ``replace`` the stored ones become exactly the file's.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from provider.changes import CREATED, DELETED, UPDATED, Change
from provider.comms.templates import MessageTemplate
from provider.db.rules import TemplateRecord, VariableRecord

Changes = list[tuple[Change, Any, Any]]


def template_of(record: TemplateRecord) -> MessageTemplate:
    """A stored template."""
    return MessageTemplate(
        name=record.name,
        kind=record.kind,
        params=dict(record.params),
        description=record.description,
        tags=tuple(record.tags or ()),
    )


def stored_templates(session: Session) -> list[MessageTemplate]:
    """Every stored template, in file order."""
    query = select(TemplateRecord).order_by(TemplateRecord.position, TemplateRecord.id)
    return [template_of(r) for r in session.scalars(query).all()]


def stored_variables(session: Session) -> tuple[tuple[str, str], ...]:
    """Every editable variable (name, value), in file order."""
    query = select(VariableRecord).order_by(VariableRecord.position, VariableRecord.id)
    return tuple((r.name, r.value) for r in session.scalars(query).all())


def write_templates(
    session: Session,
    templates: tuple[MessageTemplate, ...],
    *,
    replace: bool,
    now: datetime,
    changes: Changes,
) -> None:
    """Add, update (and with ``replace`` delete) template rows, noting each change."""
    stored = {r.name: r for r in session.scalars(select(TemplateRecord)).all()}
    if replace:
        wanted = {t.name for t in templates}
        for name, old in stored.items():
            if name not in wanted:
                changes.append((Change("template", name, DELETED), template_of(old).to_mapping(), None))
                session.delete(old)
        session.flush()
    next_position = 1 + max((r.position for r in stored.values()), default=-1)
    for index, template in enumerate(templates):
        record = stored.get(template.name)
        after = template.to_mapping()
        if record is None:
            session.add(
                TemplateRecord(
                    name=template.name,
                    kind=template.kind,
                    description=template.description,
                    tags=list(template.tags),
                    params=dict(template.params),
                    position=index if replace else next_position,
                    created_at=now,
                    updated_at=now,
                )
            )
            next_position += 1
            changes.append((Change("template", template.name, CREATED), None, after))
            continue
        before = template_of(record).to_mapping()
        position = index if replace else record.position
        if before == after and position == record.position:
            continue
        record.kind = template.kind
        record.description = template.description
        record.tags = list(template.tags)
        record.params = dict(template.params)
        record.position = position
        record.updated_at = now
        if before != after:
            changes.append((Change("template", template.name, UPDATED), before, after))


def write_variables(
    session: Session,
    variables: tuple[tuple[str, str], ...],
    *,
    replace: bool,
    now: datetime,
    changes: Changes,
) -> None:
    """Add, update (and with ``replace`` delete) editable variable rows, noting each change."""
    stored = {r.name.lower(): r for r in session.scalars(select(VariableRecord)).all()}
    if replace:
        wanted = {name.lower() for name, _ in variables}
        for key, old in stored.items():
            if key not in wanted:
                changes.append((Change("variable", old.name, DELETED), {"value": old.value}, None))
                session.delete(old)
        session.flush()
    next_position = 1 + max((r.position for r in stored.values()), default=-1)
    for index, (name, value) in enumerate(variables):
        record = stored.get(name.lower())
        if record is None:
            position = index if replace else next_position
            next_position += 1
            session.add(
                VariableRecord(name=name, value=value, position=position, created_at=now, updated_at=now)
            )
            changes.append((Change("variable", name, CREATED), None, {"value": value}))
            continue
        position = index if replace else record.position
        if record.value == value and record.name == name and record.position == position:
            continue
        changed = record.value != value or record.name != name
        before = {"value": record.value}
        record.name, record.value, record.position, record.updated_at = name, value, position, now
        if changed:
            changes.append((Change("variable", name, UPDATED), before, {"value": value}))
