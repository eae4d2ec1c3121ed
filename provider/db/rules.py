"""SQLAlchemy models for rules, channels, the rule-set version and the audit trail.

* ``rules``: one row per rule. ``method`` and ``actions`` are JSON exactly as the
  rules file writes them; ``position`` is the file order that breaks priority ties.
* ``channels``: one row per ``channels:`` entry. ``settings`` are stored as written:
  ``${VAR}`` references are never resolved here. The event worker reads this table.
* ``rule_set_version``: a single row (``id = 1``) whose ``version`` grows with every
  change to rules or channels; serving processes poll it to know when to reload.
* ``rule_audit``: who changed what, when, through which command.
* ``rule_set_snapshots``: the full rule set (export YAML) of every version since
  snapshots exist, for ``rules versions``, ``diff`` and ``rollback``.
* ``message_templates`` and ``global_variables``: the ``templates:`` and
  ``variables:`` sections, versioned and audited with the rules.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from provider.db.base import Base, UTCDateTime, utcnow

RULE_SET_ROW_ID = 1


class RuleRecord(Base):
    __tablename__ = "rules"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200), unique=True, nullable=False)
    description: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    method: Mapped[Any] = mapped_column(sa.JSON, nullable=False)
    priority: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=0)
    position: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    enabled: Mapped[bool] = mapped_column(sa.Boolean, nullable=False, default=True)
    when: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    # "deny" or "skip" as the rules file says; NULL when it does not (migration 0004).
    on_error: Mapped[str | None] = mapped_column(sa.String(10), nullable=True)
    actions: Mapped[Any] = mapped_column(sa.JSON, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class ChannelRecord(Base):
    __tablename__ = "channels"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(100), unique=True, nullable=False)
    type: Mapped[str] = mapped_column(sa.String(50), nullable=False)
    settings: Mapped[Any] = mapped_column(sa.JSON, nullable=False)
    enabled: Mapped[bool] = mapped_column(sa.Boolean, nullable=False, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class RuleSetVersion(Base):
    __tablename__ = "rule_set_version"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    version: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class RuleAudit(Base):
    __tablename__ = "rule_audit"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(sa.String(200), nullable=False)
    command: Mapped[str] = mapped_column(sa.String(500), nullable=False)
    action: Mapped[str] = mapped_column(sa.String(20), nullable=False)
    kind: Mapped[str] = mapped_column(sa.String(20), nullable=False)
    subject: Mapped[str] = mapped_column(sa.String(200), nullable=False)
    version: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    before: Mapped[Any | None] = mapped_column(sa.JSON, nullable=True)
    after: Mapped[Any | None] = mapped_column(sa.JSON, nullable=True)


class RuleSetSnapshot(Base):
    """The whole rule set at one version, as ``rules export`` writes it (``${VAR}`` intact).

    Written in the transaction that made the version; ``action`` is import, replace,
    enable, disable, rollback, or baseline (the state before the first change recorded
    after an upgrade from a schema without snapshots).
    """

    __tablename__ = "rule_set_snapshots"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    version: Mapped[int] = mapped_column(sa.Integer, unique=True, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    actor: Mapped[str] = mapped_column(sa.String(200), nullable=False)
    action: Mapped[str] = mapped_column(sa.String(20), nullable=False)
    summary: Mapped[str] = mapped_column(sa.String(500), nullable=False)
    content: Mapped[str] = mapped_column(sa.Text, nullable=False)


class TemplateRecord(Base):
    """One ``templates:`` entry (migration 0009): ``params`` are the template's parameters
    as written (Jinja2 text), ``tags`` a JSON list; ``position`` keeps the file order."""

    __tablename__ = "message_templates"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200), unique=True, nullable=False)
    kind: Mapped[str] = mapped_column(sa.String(50), nullable=False)
    description: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    tags: Mapped[Any] = mapped_column(sa.JSON, nullable=False)
    params: Mapped[Any] = mapped_column(sa.JSON, nullable=False)
    position: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class VariableRecord(Base):
    """One editable global variable of ``variables:`` (migration 0009)."""

    __tablename__ = "global_variables"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200), unique=True, nullable=False)
    value: Mapped[str] = mapped_column(sa.Text, nullable=False)
    position: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
