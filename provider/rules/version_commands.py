"""The ``st-provider rules`` sub-commands about versions.

* ``rules versions [--limit N] [--json]``: the kept versions, newest first: number,
  time, actor, action (import, replace, enable, disable, rollback, baseline), summary.
* ``rules diff [A] [B|FILE]``: a unified diff of two rule sets as ``rules export``
  writes them. No argument: the previous kept version against the current one; ``A``:
  version A against the current one; ``A B``: version A against version B, or against
  the rules file FILE (validated, written as an export would write it).
* ``rules rollback VERSION [--actor NAME]``: a new version whose rules and channels
  equal VERSION's (audited as a ``replace`` import with action ``rollback``). Serving
  processes pick it up like any change.

``rules import FILE --dry-run`` prints through :func:`print_dry_run`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from provider.db.session import Database
from provider.errors import RulesFileError
from provider.rules import versions
from provider.rules.cli_support import (
    add_actor_argument,
    change_actor,
    command_line,
    open_database,
    print_problems,
)
from provider.rules.loader import load_rules_file
from provider.rules.model import RulesFile
from provider.rules.store import ImportSummary, RuleStore
from provider.settings import Settings

EXIT_OK = 0
EXIT_PROBLEMS = 1


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``versions``, ``diff`` and ``rollback`` to ``rules``."""
    ver = sub.add_parser("versions", help="list the kept versions of the rule set")
    ver.add_argument("--limit", type=int, default=50)
    ver.add_argument("--json", action="store_true", help="print JSON")
    ver.set_defaults(handler=cmd_versions)

    diff = sub.add_parser("diff", help="show what changed between two versions (or a version and a file)")
    diff.add_argument("a", metavar="A", nargs="?", type=int, help="a version (default: the previous one)")
    diff.add_argument("b", metavar="B|FILE", nargs="?", help="a version or a rules file (default: current)")
    diff.set_defaults(handler=cmd_diff)

    back = sub.add_parser("rollback", help="make a new version equal to an earlier one")
    back.add_argument("version", metavar="VERSION", type=int)
    add_actor_argument(back)
    back.set_defaults(handler=cmd_rollback)


def cmd_versions(args: argparse.Namespace, settings: Settings) -> int:
    with open_database(settings) as database:
        current = RuleStore(database).version()
        kept = versions.list_versions(database, limit=args.limit)
    if args.json:
        payload = {"current": current, "versions": [asdict(v) for v in kept]}
        print(json.dumps(payload, indent=2, default=str, ensure_ascii=False))
        return EXIT_OK
    if not kept:
        print(f"rule set version {current}; no versions kept yet (they are kept from the next change)")
        return EXIT_OK
    width = max(len(v.actor) for v in kept)
    for v in kept:
        mark = "*" if v.version == current else " "
        print(
            f"{mark}v{v.version:<5} {v.created_at.isoformat(timespec='seconds')}  "
            f"{v.actor:<{width}}  {v.action:<8}  {v.summary}"
        )
    return EXIT_OK


def _is_version(text: str) -> bool:
    return text.isdigit() and not Path(text).exists()


def cmd_diff(args: argparse.Namespace, settings: Settings) -> int:
    with open_database(settings) as database:
        store = RuleStore(database)
        current = store.version()
        a = versions.previous_kept(database, current) if args.a is None else args.a
        before = versions.content_of(database, a)
        before_label = f"version {a}"
        if args.b is None:
            after, after_label = store.snapshot().export_text(), f"version {current} (current)"
        elif _is_version(args.b):
            after, after_label = _version_text(database, int(args.b), current), f"version {args.b}"
        else:
            try:
                rules_file = load_rules_file(
                    args.b, stored_channels=store.channel_types, secret_vars=settings.secret_vars
                )
            except RulesFileError as exc:
                print_problems(exc, f"{args.b}: {len(exc.problems)} problem(s)")
                return EXIT_PROBLEMS
            after, after_label = _file_text(rules_file), args.b
    text = versions.unified_diff(before, after, before_label=before_label, after_label=after_label)
    sys.stdout.write(text or f"no differences between {before_label} and {after_label}\n")
    return EXIT_OK


def _version_text(database: Database, version: int, current: int) -> str:
    if version == current:
        return RuleStore(database).snapshot().export_text()
    return versions.content_of(database, version)


def _file_text(rules_file: RulesFile) -> str:
    return RuleStore.file_text(rules_file)


def cmd_rollback(args: argparse.Namespace, settings: Settings) -> int:
    with open_database(settings) as database:
        try:
            summary = RuleStore(database).rollback(
                args.version,
                actor=change_actor(args, settings),
                command=command_line(),
                secret_vars=settings.secret_vars,
            )
        except RulesFileError as exc:
            print_problems(exc, f"version {args.version} no longer validates; nothing was changed")
            return EXIT_PROBLEMS
    if not summary.changes:
        print(
            f"version {args.version} equals the current rule set; nothing changed (version {summary.version})"
        )
        return EXIT_OK
    print(f"rolled back to version {args.version}: rule set version {summary.version}")
    for line in _change_lines(summary):
        print(f"  {line}")
    return EXIT_OK


def _change_lines(summary: ImportSummary) -> list[str]:
    lines = []
    for kind in ("rule", "channel"):
        counts = ", ".join(
            f"{summary.count(kind, action)} {action}" for action in ("created", "updated", "deleted")
        )
        lines.append(f"{kind}s: {counts}")
    return lines


def print_dry_run(source: str, summary: ImportSummary) -> None:
    """The output of ``rules import --dry-run``: the diff, then what would change."""
    from provider.rules.drafts import dry_run_diff, dry_run_lines

    print(f"dry run of {source}: nothing was stored")
    sys.stdout.write(dry_run_diff(summary, source) or "no differences\n")
    for line in dry_run_lines(summary):
        print(f"  {line}")


def print_whatif(
    database: Database,
    rules_file: RulesFile,
    *,
    replace: bool,
    read_only_vars: Mapping[str, str] | None = None,
) -> None:
    """The what-if summary of ``import --dry-run``: the journaled calls of the last 24 hours
    replayed against the current rules and the draft (see :mod:`provider.rules.whatif`)."""
    from provider.rules.drafts import whatif_report
    from provider.rules.whatif import print_report

    print_report(whatif_report(database, rules_file, replace=replace, read_only_vars=read_only_vars))
