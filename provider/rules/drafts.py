"""A draft rules file against the stored rule set: validate it, and say what an import would change.

What ``rules import`` (with and without ``--dry-run``), ``rules whatif`` and the console's rules
editor share, so the two front ends run one implementation:

* :func:`parse_for_store`: the validator of ``rules import`` (:func:`~provider.rules.loader.parse_rules`)
  with the stored channels and templates ``notify`` may use (none with ``replace``).
* :func:`draft_warnings`: what ``validate`` and ``import`` warn about (unset channel ``${VAR}``,
  unguarded lookups); never errors.
* :func:`preview_import`: a dry-run import (run to the end in its transaction and rolled back):
  what would be created, updated and deleted, the unified diff against the current rule set, the
  summary lines the CLI prints, and optionally the journal-based what-if report.
* :func:`summary_lines`: the ``rules: 1 created, ...`` lines of an (actual or dry) import.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from provider.channels.validation import DEFAULT_SECRET_VARS
from provider.db.session import Database
from provider.errors import RuleProblem
from provider.rules import versions
from provider.rules.lint import unguarded_lookups
from provider.rules.loader import channel_warnings, parse_rules
from provider.rules.model import RulesFile
from provider.rules.store import ImportSummary, RuleStore
from provider.rules.whatif import MAX_CALLS, WhatIfReport, current_rule_set, draft_rule_set, whatif

KINDS = ("rule", "channel", "template", "variable")
ACTIONS = ("created", "updated", "deleted")


def parse_for_store(
    text: str,
    store: RuleStore,
    *,
    replace: bool,
    secret_vars: Sequence[str] = DEFAULT_SECRET_VARS,
    read_only_vars: Mapping[str, str] | None = None,
) -> RulesFile:
    """``text`` validated as ``rules import`` validates a file: ``notify`` may also use the stored
    channels and templates, unless ``replace`` (which drops them). Raises RulesFileError listing
    every problem with its line and rule name."""
    return parse_rules(
        text,
        stored_channels={} if replace else store.channel_types,
        secret_vars=secret_vars,
        stored_templates=() if replace else store.templates(),
        read_only_vars=read_only_vars,
    )


def draft_warnings(
    rules_file: RulesFile,
    environment: Mapping[str, str],
    secret_vars: Sequence[str] = DEFAULT_SECRET_VARS,
) -> list[RuleProblem]:
    """Each ``${VAR}`` a channel references that ``environment`` does not set, and each unguarded
    lookup of a value SmarterTrack may not send (warnings: the file is still imported)."""
    return [
        *channel_warnings(rules_file.channels, environment, secret_vars),
        *unguarded_lookups(rules_file.rules),
    ]


def summary_lines(summary: ImportSummary) -> list[str]:
    """What an import changed, one line per kind, then the rule-set version (as the CLI prints it)."""
    lines = []
    for kind in ("rule", "channel"):
        unchanged = summary.unchanged_rules if kind == "rule" else summary.unchanged_channels
        counts = ", ".join(f"{summary.count(kind, action)} {action}" for action in ACTIONS)
        lines.append(f"{kind}s: {counts}, {unchanged} unchanged")
    for kind in ("template", "variable"):
        changed = [action for action in ACTIONS if summary.count(kind, action)]
        if changed:
            lines.append(f"{kind}s: " + ", ".join(f"{summary.count(kind, a)} {a}" for a in changed))
    if summary.changes:
        lines.append(f"rule set version {summary.version}")
    else:
        lines.append(f"no changes; rule set version {summary.version}")
    return lines


def current_version(summary: ImportSummary) -> int:
    """The version a dry-run ``summary`` started from."""
    return summary.version - 1 if summary.changes else summary.version


def dry_run_diff(summary: ImportSummary, source: str) -> str:
    """The unified diff of a dry-run import: the current rule set against what it would become."""
    return versions.unified_diff(
        summary.before,
        summary.after,
        before_label=f"version {current_version(summary)} (current)",
        after_label=source,
    )


def dry_run_lines(summary: ImportSummary) -> list[str]:
    """:func:`summary_lines` of a dry run, its last line saying which version it would make."""
    lines = summary_lines(summary)[:-1]
    if summary.changes:
        lines.append(f"would be rule set version {summary.version}")
    else:
        lines.append(f"no changes; rule set version {summary.version}")
    return lines


@dataclass(frozen=True)
class ImportPreview:
    """What importing a draft would do; stores nothing.

    ``changed`` maps each kind (rule, channel, template, variable) to its ``(name, action)``
    pairs; ``whatif`` is the replay report when it was asked for.
    """

    replace: bool
    summary: ImportSummary
    diff: str
    lines: tuple[str, ...]
    changed: Mapping[str, tuple[tuple[str, str], ...]]
    whatif: WhatIfReport | None = None


def preview_import(
    database: Database,
    rules_file: RulesFile,
    *,
    replace: bool,
    source: str,
    whatif_limit: int | None = None,
    read_only_vars: Mapping[str, str] | None = None,
) -> ImportPreview:
    """A dry-run import of ``rules_file`` (``source`` names it in the diff). With ``whatif_limit``,
    also the newest journaled calls (at most that many, of the last 24 hours) replayed against the
    current rules and the draft. Raises RulesFileError (a ``notify`` channel that would not exist),
    StorageError."""
    summary = RuleStore(database).import_rules(
        rules_file, replace=replace, actor="(dry run)", command="(dry run)", dry_run=True
    )
    changed = {
        kind: tuple((c.subject, c.action) for c in summary.changes if c.kind == kind) for kind in KINDS
    }
    report = None
    if whatif_limit is not None:
        report = whatif_report(
            database, rules_file, replace=replace, limit=whatif_limit, read_only_vars=read_only_vars
        )
    return ImportPreview(
        replace=replace,
        summary=summary,
        diff=dry_run_diff(summary, source),
        lines=tuple(dry_run_lines(summary)),
        changed=changed,
        whatif=report,
    )


def whatif_report(
    database: Database,
    rules_file: RulesFile,
    *,
    replace: bool,
    limit: int | None = None,
    read_only_vars: Mapping[str, str] | None = None,
) -> WhatIfReport:
    """The journaled calls of the last 24 hours (the newest ``limit``, default the what-if's
    maximum) replayed against the current rules and the set an import of ``rules_file`` would make
    (see :mod:`provider.rules.whatif`). Raises RuleCompileError, StorageError."""
    snapshot = RuleStore(database).snapshot()
    draft = draft_rule_set(snapshot, rules_file, replace=replace, read_only_vars=read_only_vars)
    current = current_rule_set(snapshot, read_only_vars)
    return whatif(database, current, draft, limit=MAX_CALLS if limit is None else limit)


__all__ = [
    "ImportPreview",
    "current_version",
    "draft_warnings",
    "dry_run_diff",
    "dry_run_lines",
    "parse_for_store",
    "preview_import",
    "summary_lines",
    "whatif_report",
]
