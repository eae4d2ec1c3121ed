"""The ``st-provider rules`` sub-commands.

(About 500 lines: one handler per sub-command, each short; versions, diff and rollback live in
:mod:`provider.rules.version_commands`, what-if in :mod:`provider.rules.whatif`.)

* ``rules import FILE [--replace] [--dry-run] [--actor NAME]``: validate the whole file,
  then store it in one transaction (nothing is written if any problem is found; every
  problem is printed with its line and rule). ``--replace`` makes the stored rules and
  channels exactly the file's. ``--dry-run`` prints the diff against the stored set
  and what would be created, updated and deleted, and stores nothing.
* ``rules export [FILE]``: the stored rules and channels as a rules file (stdout by
  default); importing it again changes nothing.
* ``rules validate FILE [--replace]``: the checks of ``import``, writing nothing.
* ``rules list [--json]``: the stored rules in evaluation order, and the channels.
* ``rules enable NAME`` / ``rules disable NAME`` (``--actor NAME``).
* ``rules history [--limit N] [--rule NAME]``: the audit trail, newest first.
* ``rules versions``, ``rules diff [A] [B|FILE]``, ``rules rollback VERSION``: see
  :mod:`provider.rules.version_commands`.
* ``rules test OP name=value ... [--user NAME] [--json]``: evaluate one call against
  the stored rules (enabled and disabled) without SmarterTrack, and print each rule's
  outcome in order (matched, no match and why, error, disabled, not reached) and the
  result SmarterTrack would get. ``--user`` takes the user from the configured
  directory; without it the user is looked up from the call's variables as the
  service does. A login is evaluated as if the password were right: give no password.

Every change is recorded with who made it (``actor``, see :func:`actor`) and the
command line. ``validate`` and ``import`` warn (stderr, exit status unchanged) about
unset channel variables and unguarded lookups (:mod:`provider.rules.lint`). Problems
end the command with status 1 and a message on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.engine import make_url

from provider.auth import build_authenticator
from provider.comms.signin_checks import otp_problems
from provider.comms.templates import MessageTemplate
from provider.db.session import Database
from provider.domain import Operation
from provider.errors import ConfigError, RulesFileError, StorageError
from provider.rules import version_commands
from provider.rules.cli_support import (
    add_actor_argument,
    change_actor,
    command_line,
    open_database,
    print_problems,
)
from provider.rules.drafts import draft_warnings, parse_for_store, summary_lines
from provider.rules.engine import NOT_REACHED
from provider.rules.loader import load_rules_file, read_rules_text
from provider.rules.model import RulesFile
from provider.rules.store import RuleStore
from provider.rules.trial import parse_operation, trial_call, variable_pairs
from provider.rules.whatif import register_whatif
from provider.settings import Settings

T = TypeVar("T")

EXIT_OK = 0
EXIT_PROBLEMS = 1


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``rules`` and its actions to the CLI."""
    rules = subparsers.add_parser("rules", help="manage the rules that make the provider's decisions")
    sub = rules.add_subparsers(dest="rules_command", required=True, metavar="ACTION")

    imp = sub.add_parser("import", help="validate a rules file and store it")
    imp.add_argument("file", metavar="FILE")
    imp.add_argument(
        "--replace", action="store_true", help="make the stored rules and channels exactly the file's"
    )
    imp.add_argument(
        "--dry-run", action="store_true", help="show the diff and what would change; store nothing"
    )
    add_actor_argument(imp)
    imp.set_defaults(handler=cmd_import)

    exp = sub.add_parser("export", help="write the stored rules and channels as a rules file")
    exp.add_argument("file", metavar="FILE", nargs="?", help="where to write (default: stdout)")
    exp.set_defaults(handler=cmd_export)

    val = sub.add_parser("validate", help="check a rules file without storing it")
    val.add_argument("file", metavar="FILE")
    val.add_argument(
        "--replace", action="store_true", help="check it as a replacement (ignore stored channels)"
    )
    val.set_defaults(handler=cmd_validate)

    lst = sub.add_parser("list", help="show the stored rules in evaluation order")
    lst.add_argument("--json", action="store_true", help="print JSON")
    lst.set_defaults(handler=cmd_list)

    for action in ("enable", "disable"):
        toggle = sub.add_parser(action, help=f"{action} one rule")
        toggle.add_argument("name", metavar="NAME")
        add_actor_argument(toggle)
        toggle.set_defaults(handler=cmd_enable if action == "enable" else cmd_disable)

    hist = sub.add_parser("history", help="show who changed which rule or channel, and when")
    hist.add_argument("--limit", type=int, default=50)
    hist.add_argument("--rule", help="only this rule or channel")
    hist.add_argument("--json", action="store_true", help="print JSON")
    hist.set_defaults(handler=cmd_history)

    test = sub.add_parser("test", help="evaluate one call against the stored rules and explain the result")
    test.add_argument("operation", metavar="OP", help=", ".join(op.value for op in Operation))
    test.add_argument("variables", nargs="*", metavar="NAME=VALUE", help="the call's input variables")
    test.add_argument("--user", help="take this user (attributes, groups) from the directory")
    test.add_argument("--json", action="store_true", help="print JSON")
    test.set_defaults(handler=cmd_test)

    register_whatif(sub)
    version_commands.register(sub)


# --- helpers -------------------------------------------------------------------------


def _stored_channel_types(settings: Settings) -> dict[str, str]:
    """Stored channel names for ``validate``, without creating or migrating anything."""
    return _read_stored(settings, RuleStore.channel_types, {})


def _stored_templates(settings: Settings) -> list[MessageTemplate]:
    """Stored message templates for ``validate``, without creating or migrating anything."""
    return _read_stored(settings, RuleStore.templates, [])


def _read_stored(settings: Settings, read: Callable[[RuleStore], T], empty: T) -> T:
    """``read`` of the configured database, or ``empty`` when there is none or it cannot answer."""
    url = make_url(settings.database_url) if "://" in settings.database_url else None
    is_sqlite = url is not None and url.get_backend_name() == "sqlite"
    if is_sqlite and url is not None and (not url.database or not Path(url.database).exists()):
        return empty
    with Database(settings.database_url) as database:
        try:
            return read(RuleStore(database))
        except StorageError:
            return empty


def _print_problems(exc: RulesFileError, source: str) -> None:
    print_problems(exc, f"{source}: {len(exc.problems)} problem(s); nothing was stored")


def _print_warnings(rules_file: RulesFile, settings: Settings) -> None:
    """Warn (stderr, not an error) about each ``${VAR}`` a channel references that is not
    set, and each unguarded lookup of a value SmarterTrack may not send."""
    for warning in [
        *draft_warnings(rules_file, settings.environment, settings.secret_vars),
        *otp_problems(settings, rules_file.channels, rules_file.templates),
    ]:
        print(f"warning: {warning}", file=sys.stderr)


# --- import / export / validate ---------------------------------------------------------


def load_for_store(path: str, store: RuleStore, *, replace: bool, settings: Settings) -> RulesFile:
    """The rules file at ``path`` as ``rules import`` reads it: its channels and templates checked
    against the stored ones, unless ``replace`` (which drops them). Raises :class:`RulesFileError`."""
    return parse_for_store(
        read_rules_text(path),
        store,
        replace=replace,
        secret_vars=settings.secret_vars,
        read_only_vars=settings.read_only_vars,
    )


def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    with open_database(settings) as database:
        store = RuleStore(database)
        try:
            rules_file = load_for_store(args.file, store, replace=args.replace, settings=settings)
            summary = store.import_rules(
                rules_file,
                replace=args.replace,
                actor=change_actor(args, settings),
                command=command_line(),
                dry_run=args.dry_run,
            )
        except RulesFileError as exc:
            _print_problems(exc, args.file)
            return EXIT_PROBLEMS
        if args.dry_run:
            _print_warnings(rules_file, settings)
            version_commands.print_dry_run(args.file, summary)
            version_commands.print_whatif(
                database, rules_file, replace=args.replace, read_only_vars=settings.read_only_vars
            )
            return EXIT_OK
    _print_warnings(rules_file, settings)
    print(
        f"imported {args.file}: {len(rules_file.rules)} rules, {len(rules_file.channels)} channels, "
        f"{len(rules_file.templates)} templates, {len(rules_file.variables)} variables"
    )
    for line in summary_lines(summary):
        print(f"  {line}")
    return EXIT_OK


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    with open_database(settings) as database:
        snapshot = RuleStore(database).snapshot()
    broken = [r for r in snapshot.rules if r.rule is None]
    for rule in broken:
        print(
            f"st-provider: stored rule {rule.name!r} is invalid and not exported: {rule.problem}",
            file=sys.stderr,
        )
    text = snapshot.export_text(
        header=f"st-provider rules export (rule set version {snapshot.version})\n"
        "${VAR} references are resolved from the environment when a channel is used.",
    )
    if args.file:
        try:
            Path(args.file).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot write {args.file}: {exc.strerror}") from exc
        exported = len(snapshot.rules) - len(broken)
        print(f"exported {exported} rules, {len(snapshot.channels)} channels to {args.file}")
    else:
        sys.stdout.write(text)
    return EXIT_PROBLEMS if broken else EXIT_OK


def cmd_validate(args: argparse.Namespace, settings: Settings) -> int:
    try:
        rules_file = load_rules_file(
            args.file,
            stored_channels={} if args.replace else (lambda: _stored_channel_types(settings)),
            secret_vars=settings.secret_vars,
            stored_templates=() if args.replace else _stored_templates(settings),
            read_only_vars=settings.read_only_vars,
        )
    except RulesFileError as exc:
        print_problems(exc, f"{args.file}: {len(exc.problems)} problem(s)")
        return EXIT_PROBLEMS
    _print_warnings(rules_file, settings)
    print(f"{args.file}: valid ({len(rules_file.rules)} rules, {len(rules_file.channels)} channels)")
    return EXIT_OK


# --- list / enable / disable / history --------------------------------------------------


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    with open_database(settings) as database:
        snapshot = RuleStore(database).snapshot()
    ordered = sorted(snapshot.rules, key=lambda r: (r.priority, r.position))
    if args.json:
        payload = {
            "version": snapshot.version,
            "rules": [
                {
                    "name": r.name,
                    "priority": r.priority,
                    "enabled": r.enabled,
                    "methods": r.rule.method_names() if r.rule is not None else [],
                    "when": r.mapping.get("when"),
                    "actions": list(r.mapping["then"]),
                    "valid": r.rule is not None,
                    "problem": r.problem,
                    "updated_at": r.updated_at.isoformat(),
                }
                for r in ordered
            ],
            "channels": [
                {"name": c.entry.name, "type": c.entry.type, "enabled": c.entry.enabled}
                for c in snapshot.channels
            ],
        }
        print(json.dumps(payload, indent=2, ensure_ascii=False))
        return EXIT_OK
    print(f"rule set version {snapshot.version}: {len(ordered)} rules, {len(snapshot.channels)} channels")
    if ordered:
        width = max(len(r.name) for r in ordered)
        print(f"  {'priority':>8}  {'rule':<{width}}  {'state':<8}  methods / actions / when")
        for r in ordered:
            state = "enabled" if r.enabled else "disabled"
            if r.rule is None:
                state = "INVALID"
            methods = ",".join(r.rule.method_names()) if r.rule is not None else "?"
            actions = ",".join(r.mapping["then"])
            when = r.mapping.get("when") or "(always)"
            print(f"  {r.priority:>8}  {r.name:<{width}}  {state:<8}  {methods}  [{actions}]  when {when}")
    for c in snapshot.channels:
        print(f"  channel {c.entry.name} ({c.entry.type}){'' if c.entry.enabled else ' disabled'}")
    return EXIT_OK


def _toggle(args: argparse.Namespace, settings: Settings, enabled: bool) -> int:
    with open_database(settings) as database:
        version, changed = RuleStore(database).set_enabled(
            args.name, enabled, actor=change_actor(args, settings), command=command_line()
        )
    state = "enabled" if enabled else "disabled"
    if changed:
        print(f"rule {args.name!r} {state}; rule set version {version}")
    else:
        print(f"rule {args.name!r} was already {state}; rule set version {version}")
    return EXIT_OK


def cmd_enable(args: argparse.Namespace, settings: Settings) -> int:
    return _toggle(args, settings, True)


def cmd_disable(args: argparse.Namespace, settings: Settings) -> int:
    return _toggle(args, settings, False)


def cmd_history(args: argparse.Namespace, settings: Settings) -> int:
    with open_database(settings) as database:
        entries = RuleStore(database).history(limit=max(1, args.limit), subject=args.rule)
    if args.json:
        print(json.dumps([asdict(e) for e in entries], indent=2, default=str, ensure_ascii=False))
        return EXIT_OK
    for e in entries:
        print(
            f"{e.created_at.isoformat(timespec='seconds')}  v{e.version:<4} {e.kind:<7} {e.subject}  "
            f"{e.action}  by {e.actor}  ({e.command})"
        )
    if not entries:
        print("no changes recorded")
    return EXIT_OK


# --- test --------------------------------------------------------------------------


def cmd_test(args: argparse.Namespace, settings: Settings) -> int:
    operation = parse_operation(args.operation)
    pairs = variable_pairs(args.variables)
    with open_database(settings) as database:
        report = trial_call(
            settings,
            database,
            operation,
            pairs,
            authenticator=build_authenticator(settings, database),
            user=args.user,
        )
    payload = report.payload()
    if args.json:
        print(json.dumps(payload, indent=2, ensure_ascii=False, default=str))
        return EXIT_OK
    _print_test(payload, report.stored, list(report.invalid))
    return EXIT_OK


def _print_test(payload: dict[str, Any], stored: int, invalid: list[str]) -> None:
    trace = payload["trace"]
    print(
        f"rule set version {payload['version']}: {len(trace)} of {stored} stored rules apply to "
        f"{payload['operation']}; user: {payload['user'] or '(none)'}"
    )
    for name in invalid:
        print(f"  ! stored rule {name!r} is invalid and never applies")
    if not payload["evaluated"]:
        print("  the rules were not evaluated: the call ended before (for a login: no such user)")
    if trace:
        width = max(len(t["rule"]) for t in trace)
        for i, t in enumerate(trace, 1):
            outcome = t["outcome"].upper() if t["outcome"] != NOT_REACHED else t["outcome"]
            detail = f": {t['detail']}" if t["detail"] else ""
            print(f"  {i:>3}. [{t['priority']:>5}] {t['rule']:<{width}}  {outcome}{detail}")
    result = payload["result"]
    print("result:")
    print(f"  Success: {str(result['success']).lower()}")
    print(f"  Message: {result['message']}")
    print("  OutputVariables:")
    for entry in result["output"]:
        print(f"    {entry}")
    if result["custom_fields"]:
        print("  CustomFieldDataItems:")
        for f in result["custom_fields"]:
            print(f"    {json.dumps(f, ensure_ascii=False)}")
    if result["user_info_html"] is not None:
        print(f"  UserInfoHtml: {result['user_info_html']}")
    if payload["notifications"]:
        print("notifications (rendered, not sent):")
        for n in payload["notifications"]:
            print(f"  {n['channel']} (rule {n['rule']}): {json.dumps(n['params'], ensure_ascii=False)}")
