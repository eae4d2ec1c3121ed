"""Rules and channels in the database: import, export, enable/disable, version, audit.

(Over 500 lines because one transaction writes channels, templates, variables and rules
together; the row helpers are in :mod:`provider.rules.rows` and :mod:`provider.comms.rows`.)

Every change runs in one transaction that first locks the rule-set version row
(``SELECT ... FOR UPDATE`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), so
concurrent changes from many hosts apply one after the other. A change that
changes something bumps the version (serving processes poll it, see
:meth:`RuleStore.version`) and writes one audit row per rule or channel touched:
who, when, which command, and the stored form before and after.

Import semantics:

* without ``replace``: channels, templates, variables and rules of the file are added, or update the stored
  ones of the same name (which keep their place in the order); new rules go after the
  stored ones; nothing else changes. ``notify`` may use channels already stored.
* with ``replace``: the stored rules, channels, templates and variables become exactly the file's
  (same-named ones are updated, others deleted), in the file's order.

Nothing is written when the file does not fit (RulesFileError); database failures
are StorageError. Both leave the stored rule set as it was.

Versions: every change that bumps the version also stores, in the same transaction,
the whole new rule set as ``rules export`` writes it (:mod:`provider.rules.versions`);
``dry_run`` runs an import to the end and rolls it back, so its summary and texts
say exactly what the import would do.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from provider.changes import DISABLED, ENABLED, Change
from provider.channels.config import ChannelStore
from provider.channels.validation import DEFAULT_SECRET_VARS
from provider.comms.rows import stored_templates, stored_variables, write_templates, write_variables
from provider.comms.templates import MessageTemplate
from provider.db.base import utcnow
from provider.db.rules import RULE_SET_ROW_ID, RuleAudit, RuleRecord, RuleSetVersion
from provider.db.session import Database
from provider.errors import RuleNotFound, RuleProblem, RulesFileError, StorageError
from provider.rules import versions
from provider.rules.loader import dump_rules, parse_rules, rule_from_mapping
from provider.rules.model import ChannelEntry, Rule, RulesFile
from provider.rules.rows import rule_mapping, write_rules

log = logging.getLogger("provider.rules.store")

_VERSION_QUERY = select(RuleSetVersion.version).where(RuleSetVersion.id == RULE_SET_ROW_ID)


@dataclass(frozen=True)
class ImportSummary:
    """What an import changed (or, dry, would change), and the rule-set version after it.

    ``before`` and ``after`` are the whole rule set as ``rules export`` writes it.
    """

    version: int
    changes: tuple[Change, ...]
    unchanged_rules: int
    unchanged_channels: int
    before: str = ""
    after: str = ""
    dry_run: bool = False

    def count(self, kind: str, action: str) -> int:
        return sum(1 for c in self.changes if c.kind == kind and c.action == action)


@dataclass(frozen=True)
class StoredRule:
    """A rule as stored, with its place in the order and its timestamps.

    ``rule`` is ``None`` when the stored definition no longer validates (``problem``
    says why); such a rule is skipped by the serving processes.
    """

    name: str
    position: int
    priority: int
    enabled: bool
    mapping: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    rule: Rule | None
    problem: str | None = None


@dataclass(frozen=True)
class StoredChannel:
    entry: ChannelEntry
    created_at: datetime | None
    updated_at: datetime | None


@dataclass(frozen=True)
class Snapshot:
    """The stored rule set at one version (rules in file order)."""

    version: int
    rules: tuple[StoredRule, ...]
    channels: tuple[StoredChannel, ...]
    templates: tuple[MessageTemplate, ...] = ()
    variables: tuple[tuple[str, str], ...] = ()

    def valid_rules(self) -> tuple[Rule, ...]:
        return tuple(r.rule for r in self.rules if r.rule is not None)

    def to_rules_file(self) -> RulesFile:
        return RulesFile(
            rules=self.valid_rules(),
            channels=tuple(c.entry for c in self.channels),
            templates=self.templates,
            variables=self.variables,
        )

    def export_text(self, header: str | None = None) -> str:
        """The rule set as ``rules export`` writes it (the content of a version)."""
        return dump_rules(self.to_rules_file(), header=header)


class _DryRun(Exception):
    """Raised inside a dry-run import's transaction to roll it back."""

    def __init__(self, summary: ImportSummary) -> None:
        self.summary = summary


@dataclass(frozen=True)
class AuditEntry:
    id: int
    created_at: datetime
    actor: str
    command: str
    action: str
    kind: str
    subject: str
    version: int
    before: Any
    after: Any


class RuleStore:
    """Reads and changes the stored rule set. One per process is enough; thread-safe."""

    def __init__(self, database: Database) -> None:
        self._db = database

    # --- reading ------------------------------------------------------------------

    def version(self) -> int:
        """The current rule-set version: one primary-key lookup of one small row.

        Runs on a plain pooled connection (no ORM session): serving processes call it
        every few seconds. Raises StorageError when the database cannot answer.
        """
        try:
            with self._db.engine.connect() as connection:
                value = connection.execute(_VERSION_QUERY).scalar_one_or_none()
        except SQLAlchemyError as exc:
            raise StorageError(f"database error: {type(exc).__name__}") from exc
        return int(value or 0)

    def snapshot(self) -> Snapshot:
        """Every rule and channel, consistent with the version returned with them.

        The version is read first: should a change commit in between, the next poll
        sees a newer version and loads again.
        """
        with self._db.session() as session:
            return self._snapshot_in(session)

    @classmethod
    def _snapshot_in(cls, session: Session) -> Snapshot:
        """The rule set as ``session`` sees it (inside a change: with the change)."""
        version = session.execute(
            select(RuleSetVersion.version).where(RuleSetVersion.id == RULE_SET_ROW_ID)
        ).scalar_one_or_none()
        channels = ChannelStore.all(session)
        records = session.scalars(select(RuleRecord).order_by(RuleRecord.position, RuleRecord.id)).all()
        channel_specs = tuple(
            StoredChannel(
                ChannelEntry(name=c.name, type=c.type, settings=dict(c.settings), enabled=c.enabled),
                c.created_at,
                c.updated_at,
            )
            for c in channels
        )
        types = {c.name: c.type for c in channels}
        templates = tuple(stored_templates(session))
        rules = tuple(cls._stored_rule(r, types, templates) for r in records)
        return Snapshot(
            version=int(version or 0),
            rules=rules,
            channels=channel_specs,
            templates=templates,
            variables=stored_variables(session),
        )

    @staticmethod
    def _stored_rule(
        record: RuleRecord, channel_types: dict[str, str], templates: tuple[MessageTemplate, ...]
    ) -> StoredRule:
        mapping = rule_mapping(record)
        rule: Rule | None = None
        problem = None
        try:
            rule = rule_from_mapping(mapping, channels=channel_types, templates=templates)
        except RulesFileError as exc:
            problem = str(exc)
            log.error(
                "stored rule is invalid; skipped",
                extra={"event": "rules.invalid_stored", "rule": record.name},
            )
        return StoredRule(
            name=record.name,
            position=record.position,
            priority=record.priority,
            enabled=record.enabled,
            mapping=mapping,
            created_at=record.created_at,
            updated_at=record.updated_at,
            rule=rule,
            problem=problem,
        )

    def templates(self) -> list[MessageTemplate]:
        """Stored message templates, in file order."""
        with self._db.session() as session:
            return stored_templates(session)

    def channel_types(self) -> dict[str, str]:
        """Stored channels: name -> type."""
        with self._db.session() as session:
            return ChannelStore.types(session)

    @staticmethod
    def file_text(rules_file: RulesFile) -> str:
        """A rules file as ``rules export`` writes it, comparable with a version's content."""
        return dump_rules(rules_file)

    def export(self) -> RulesFile:
        """The stored rule set as a rules file (``${VAR}`` references intact)."""
        return self.snapshot().to_rules_file()

    def history(self, limit: int = 50, subject: str | None = None) -> list[AuditEntry]:
        """The newest audit entries first."""
        with self._db.session() as session:
            query = select(RuleAudit).order_by(RuleAudit.id.desc()).limit(limit)
            if subject is not None:
                query = query.where(RuleAudit.subject == subject)
            return [
                AuditEntry(
                    id=a.id,
                    created_at=a.created_at,
                    actor=a.actor,
                    command=a.command,
                    action=a.action,
                    kind=a.kind,
                    subject=a.subject,
                    version=a.version,
                    before=a.before,
                    after=a.after,
                )
                for a in session.scalars(query).all()
            ]

    # --- changing -----------------------------------------------------------------

    @staticmethod
    def _lock(session: Session) -> RuleSetVersion:
        state = session.get(RuleSetVersion, RULE_SET_ROW_ID, with_for_update=True)
        if state is None:
            state = RuleSetVersion(id=RULE_SET_ROW_ID, version=0, updated_at=utcnow())
            session.add(state)
            session.flush()
        return state

    @staticmethod
    def _audit(
        session: Session,
        changes: Sequence[tuple[Change, Any, Any]],
        *,
        version: int,
        actor: str,
        command: str,
    ) -> None:
        now = utcnow()
        for change, before, after in changes:
            session.add(
                RuleAudit(
                    created_at=now,
                    actor=actor[:200],
                    command=command[:500],
                    action=change.action,
                    kind=change.kind,
                    subject=change.subject,
                    version=version,
                    before=before,
                    after=after,
                )
            )

    def import_rules(
        self,
        rules_file: RulesFile,
        *,
        replace: bool,
        actor: str,
        command: str,
        action: str | None = None,
        note: str = "",
        dry_run: bool = False,
    ) -> ImportSummary:
        """Store ``rules_file`` (see the module docstring) in one transaction.

        ``action`` names the change in ``rules versions`` (default import or replace),
        ``note`` is prefixed to its summary. With ``dry_run`` nothing is stored: the
        summary says what would change. Raises RulesFileError (nothing written) when a
        ``notify`` names a channel that would not exist; StorageError when the database fails.
        """
        try:
            summary = self._import(
                rules_file,
                replace=replace,
                actor=actor,
                command=command,
                action=action or (versions.REPLACE if replace else versions.IMPORT),
                note=note,
                dry_run=dry_run,
            )
        except _DryRun as dry:
            return dry.summary
        log.info(
            "rules imported",
            extra={
                "event": "rules.imported",
                "version": summary.version,
                "replace": replace,
                "changes": len(summary.changes),
                "actor": actor,
            },
        )
        return summary

    def _import(
        self,
        rules_file: RulesFile,
        *,
        replace: bool,
        actor: str,
        command: str,
        action: str,
        note: str,
        dry_run: bool,
    ) -> ImportSummary:
        with self._db.session(immediate=True) as session:
            state = self._lock(session)
            before = self._snapshot_in(session).export_text()
            stored_channels = ChannelStore.types(session)
            stored_rules = {r.name: r for r in session.scalars(select(RuleRecord)).all()}
            self._check_channels(rules_file, set() if replace else set(stored_channels))
            changes: list[tuple[Change, Any, Any]] = []
            now = utcnow()
            channel_changes, unchanged_channels = ChannelStore.write(
                session, rules_file.channels, replace=replace, now=now
            )
            changes.extend((Change("channel", c.name, c.action), c.before, c.after) for c in channel_changes)
            write_variables(session, rules_file.variables, replace=replace, now=now, changes=changes)
            write_templates(session, rules_file.templates, replace=replace, now=now, changes=changes)
            unchanged_rules = write_rules(
                session,
                rules_file=rules_file,
                stored=stored_rules,
                replace=replace,
                now=now,
                changes=changes,
            )
            after = before
            if changes:
                self._keep_baseline(session, state.version, before)
                state.version += 1
                state.updated_at = now
                self._audit(session, changes, version=state.version, actor=actor, command=command)
                session.flush()
                after = self._snapshot_in(session).export_text()
                summary_text = versions.summarise([(c.kind, c.subject, c.action) for c, _, _ in changes])
                versions.record(
                    session,
                    version=state.version,
                    actor=actor,
                    action=action,
                    summary=f"{note}{summary_text}",
                    content=after,
                )
            summary = ImportSummary(
                version=state.version,
                changes=tuple(c for c, _, _ in changes),
                unchanged_rules=unchanged_rules,
                unchanged_channels=unchanged_channels,
                before=before,
                after=after,
                dry_run=dry_run,
            )
            if dry_run:
                raise _DryRun(summary)
        return summary

    @staticmethod
    def _keep_baseline(session: Session, version: int, content: str) -> None:
        """Keep the version a change starts from when it has no snapshot (made before they existed)."""
        if not versions.has_snapshot(session, version):
            versions.record(
                session,
                version=version,
                actor="(unknown)",
                action=versions.BASELINE,
                summary="the rule set before the first change with versions kept",
                content=content,
            )

    def rollback(
        self,
        version: int,
        *,
        actor: str,
        command: str,
        secret_vars: Sequence[str] = DEFAULT_SECRET_VARS,
    ) -> ImportSummary:
        """Make the stored rule set equal to kept ``version`` again, as a new version.

        An import with ``replace`` of that version's content (audited like one, with
        action ``rollback``). Raises RuleVersionNotFound, RulesFileError (the old content
        no longer validates, e.g. a channel type was removed) or StorageError.
        """
        content = versions.content_of(self._db, version)
        rules_file = parse_rules(content, stored_channels={}, secret_vars=secret_vars)
        return self.import_rules(
            rules_file,
            replace=True,
            actor=actor,
            command=command,
            action=versions.ROLLBACK,
            note=f"to version {version}: ",
        )

    @staticmethod
    def _check_channels(rules_file: RulesFile, stored: set[str]) -> None:
        available = stored | {c.name for c in rules_file.channels}
        problems = [
            RuleProblem(
                message=f"notify: unknown channel {entry.channel!r} (define it under channels:)",
                rule=rule.name,
                line=rule.line,
            )
            for rule in rules_file.rules
            for entry in rule.then.notify
            if entry.channel not in available
        ]
        if problems:
            raise RulesFileError(problems)

    def set_enabled(self, name: str, enabled: bool, *, actor: str, command: str) -> tuple[int, bool]:
        """Enable or disable the rule ``name``; returns (version, whether it changed).

        Raises RuleNotFound (with a "did you mean") when no rule has that name.
        """
        with self._db.session(immediate=True) as session:
            state = self._lock(session)
            record = session.scalars(select(RuleRecord).where(RuleRecord.name == name)).one_or_none()
            if record is None:
                names = session.scalars(select(RuleRecord.name)).all()
                close = difflib.get_close_matches(name, names, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise RuleNotFound(f"no rule is named {name!r}{hint}")
            if record.enabled == enabled:
                return state.version, False
            now = utcnow()
            self._keep_baseline(session, state.version, self._snapshot_in(session).export_text())
            record.enabled = enabled
            record.updated_at = now
            state.version += 1
            state.updated_at = now
            change = Change("rule", name, ENABLED if enabled else DISABLED)
            self._audit(
                session,
                [(change, {"enabled": not enabled}, {"enabled": enabled})],
                version=state.version,
                actor=actor,
                command=command,
            )
            session.flush()
            versions.record(
                session,
                version=state.version,
                actor=actor,
                action=versions.ENABLE if enabled else versions.DISABLE,
                summary=f"rule {name!r} {change.action}",
                content=self._snapshot_in(session).export_text(),
            )
            version = state.version
        log.info(
            "rule %s",
            change.action,
            extra={"event": f"rules.{change.action}", "rule": name, "version": version},
        )
        return version, True


__all__ = [
    "AuditEntry",
    "Change",
    "ImportSummary",
    "RuleStore",
    "Snapshot",
    "StoredChannel",
    "StoredRule",
]
