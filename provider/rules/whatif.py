"""What-if: replay journaled calls against a draft rule set, in-process, sending and writing nothing.

:func:`whatif` reads the newest journaled calls (default: the last 24 hours, at most
10,000) and answers each twice with the domain's own :class:`~provider.calls.Provider`
and the rules engine: once with the current rule set, once with the set an import of
the draft would produce (``replace``: exactly the file's rules; else the stored rules
with the file's added or updated by name, as ``rules import`` does). Each call sees
what it saw when it was made: its input variables (secret values stay redacted) and
the user, groups and directory attributes the journal recorded. Nothing reaches a
partner or the database: NotifyEventFired is answered without an event store, and its
notifications are compared instead.

Login calls are replayed as if the password had been accepted (their recorded outcome
says whether it was): the recorded user, or a user with only the name when the login
failed before the directory said who it was. Calls refused before the rules were asked
(``fault``, ``permission_denied``, ``error``) are not replayed.

``st-provider rules whatif FILE [--replace] [--since T] [--limit N] [--format table|json]``
prints the number of calls replayed per operation, how many would be answered
differently, and for each such call the differences (Success, Message, output
variables, custom fields, HTML; notifications added or dropped).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from provider.calls import AUTH_PASSWORD_VARIABLE, Provider
from provider.comms.templates import global_variables
from provider.db.journal import CallJournalRecord
from provider.db.session import Database
from provider.domain import CallRequest, Identity, Operation
from provider.journal.entry import answer_document
from provider.rules.engine import CompiledRule, RuleCompileError, RuleSet, compile_rule
from provider.rules.model import Rule, RulesFile
from provider.rules.store import Snapshot
from provider.settings import Secret
from provider.variables import InputVariables

log = logging.getLogger("provider.rules.whatif")

DEFAULT_HOURS = 24
MAX_CALLS = 10_000
REPLAYED_OUTCOMES = ("ok", "denied")
_REPLAY_PASSWORD = "what-if-replay-password-not-a-secret"  # noqa: S105 (in-process only)
_LOGIN_PASSWORD = "what-if-replay"  # noqa: S105 (the replayed login is accepted whatever it says)
_QUIET_LOGGERS = ("provider.calls", "provider.rules")


@dataclass
class OperationCount:
    replayed: int = 0
    changed: int = 0


@dataclass(frozen=True)
class ChangedCall:
    """One call the draft would answer differently."""

    id: int
    time: datetime
    operation: str
    user: str | None
    before: dict[str, Any]
    after: dict[str, Any]
    diff: dict[str, Any]


@dataclass
class WhatIfReport:
    """The replay's result; ``calls`` are the changed calls, newest first."""

    replayed: int = 0
    changed: int = 0
    by_operation: dict[str, OperationCount] = field(default_factory=dict)
    calls: list[ChangedCall] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        payload = asdict(self)
        for call in payload["calls"]:
            call["time"] = call["time"].astimezone(UTC).isoformat().replace("+00:00", "Z")
        return payload


# --- the rule sets ---------------------------------------------------------------------


def current_rule_set(snapshot: Snapshot, read_only_vars: Mapping[str, str] | None = None) -> RuleSet:
    """The stored rules compiled as a serving process compiles them (a broken one skipped)."""
    return RuleSet(
        _compiled((r.position, r.rule) for r in snapshot.rules if r.rule is not None),
        version=snapshot.version,
        variables=global_variables(read_only_vars or {}, snapshot.variables),
    )


def draft_rule_set(
    snapshot: Snapshot,
    rules_file: RulesFile,
    *,
    replace: bool,
    read_only_vars: Mapping[str, str] | None = None,
) -> RuleSet:
    """The rules an import of ``rules_file`` would store, compiled, with the global variables it
    would leave. Raises RuleCompileError."""
    editable = rules_file.variables if replace else (*snapshot.variables, *rules_file.variables)
    variables = global_variables(read_only_vars or {}, editable)
    if replace:
        positioned = [(index, rule) for index, rule in enumerate(rules_file.rules)]
    else:
        stored = {r.name: (r.position, r.rule) for r in snapshot.rules if r.rule is not None}
        next_position = 1 + max((r.position for r in snapshot.rules), default=-1)
        for rule in rules_file.rules:
            if rule.name in stored:
                stored[rule.name] = (stored[rule.name][0], rule)
            else:
                stored[rule.name] = (next_position, rule)
                next_position += 1
        positioned = list(stored.values())
    return RuleSet(
        (compile_rule(rule, position) for position, rule in positioned), version=-1, variables=variables
    )


def _compiled(rules: Iterable[tuple[int, Rule]]) -> Iterator[CompiledRule]:
    for position, rule in rules:
        try:
            yield compile_rule(rule, position)
        except RuleCompileError:
            continue


# --- replaying -----------------------------------------------------------------------


class _ReplayDirectory:
    """The user each replayed call saw, as recorded (an Authenticator for one call at a time)."""

    def __init__(self) -> None:
        self.identity: Identity | None = None
        self.login_name = ""

    def authenticate(self, username: str, password: str, *, client_address: str | None = None) -> Identity:
        return self.identity or Identity(username=self.login_name or username)

    def lookup(self, username: str) -> Identity | None:
        return self.identity


def _identity(document: Mapping[str, Any] | None) -> Identity | None:
    if not document:
        return None
    return Identity(
        username=str(document.get("username") or ""),
        email=document.get("email"),
        display_name=document.get("display_name"),
        dn=document.get("dn"),
        attributes={str(k): tuple(v) for k, v in (document.get("attributes") or {}).items()},
        groups=tuple(document.get("groups") or ()),
    )


def _request(record: CallJournalRecord, operation: Operation) -> CallRequest:
    pairs = [(str(n), str(v)) for n, v in record.variables or []]
    pairs.append((AUTH_PASSWORD_VARIABLE, _REPLAY_PASSWORD))
    if operation is Operation.AUTHENTICATE:
        pairs.append(("loginPassword", _LOGIN_PASSWORD))
    return CallRequest(operation=operation, variables=InputVariables(pairs), request_id=f"whatif-{record.id}")


def journaled_calls(database: Database, *, since: datetime, limit: int) -> list[CallJournalRecord]:
    """The newest replayable journaled calls since ``since`` (at most ``limit``)."""
    operations = [str(o) for o in Operation]
    query = (
        select(CallJournalRecord)
        .where(
            CallJournalRecord.at >= since,
            CallJournalRecord.outcome.in_(REPLAYED_OUTCOMES),
            CallJournalRecord.operation.in_(operations),
        )
        .order_by(CallJournalRecord.at.desc(), CallJournalRecord.id.desc())
        .limit(limit)
    )
    with database.session() as session:
        return list(session.scalars(query).all())


def replay(records: Sequence[CallJournalRecord], current: RuleSet, draft: RuleSet) -> WhatIfReport:
    """Answer each record with ``current`` and with ``draft``; the differences."""
    directory = _ReplayDirectory()
    password = Secret(_REPLAY_PASSWORD)
    before_provider = Provider(password, authenticator=directory, user_lookup=directory, rules=current)
    after_provider = Provider(password, authenticator=directory, user_lookup=directory, rules=draft)
    report = WhatIfReport()
    unchanged = {op for op in Operation if _same_rules(current, draft, op)}
    with _quiet():
        for record in records:
            operation = Operation(record.operation)
            counts = report.by_operation.setdefault(record.operation, OperationCount())
            counts.replayed += 1
            report.replayed += 1
            if operation in unchanged:
                continue  # the same rules in the same order answer the same
            directory.identity = _identity(record.identity)
            directory.login_name = record.username or ""
            request = _request(record, operation)
            before = answer_document(before_provider.call(request))
            after = answer_document(after_provider.call(request))
            if before == after:
                continue
            counts.changed += 1
            report.changed += 1
            report.calls.append(
                ChangedCall(
                    record.id,
                    record.at,
                    record.operation,
                    record.username,
                    before,
                    after,
                    diff(before, after),
                )
            )
    return report


def _same_rules(current: RuleSet, draft: RuleSet, operation: Operation) -> bool:
    """Whether both sets apply the same enabled rules to ``operation``, in the same order."""
    before, after = current.for_method(operation), draft.for_method(operation)
    return len(before) == len(after) and all(
        a.rule.to_mapping() == b.rule.to_mapping() for a, b in zip(before, after, strict=True)
    )


def whatif(
    database: Database,
    current: RuleSet,
    draft: RuleSet,
    *,
    since: datetime | None = None,
    limit: int = MAX_CALLS,
    now: datetime | None = None,
) -> WhatIfReport:
    """Replay the journaled calls since ``since`` (default: the last 24 h) against both rule sets."""
    start = since or (now or datetime.now(UTC)) - timedelta(hours=DEFAULT_HOURS)
    return replay(journaled_calls(database, since=start, limit=min(limit, MAX_CALLS)), current, draft)


@contextmanager
def _quiet() -> Iterator[None]:
    """Replayed calls log nothing of their own (a login refused, a rule skipped)."""
    loggers = [logging.getLogger(name) for name in _QUIET_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


# --- differences -----------------------------------------------------------------------


def diff(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """What differs between two answers: ``[before, after]`` per plain value, added/removed/changed
    output variables, the custom fields before and after, notifications added or dropped."""
    changes: dict[str, Any] = {}
    for key in ("success", "message", "html"):
        if before.get(key) != after.get(key):
            changes[key] = [before.get(key), after.get(key)]
    old = {n: v for n, v in before.get("output", [])}
    new = {n: v for n, v in after.get("output", [])}
    if old != new:
        changes["output"] = {
            "added": {n: v for n, v in new.items() if n not in old},
            "removed": {n: v for n, v in old.items() if n not in new},
            "changed": {n: [old[n], new[n]] for n in old if n in new and old[n] != new[n]},
        }
    if before.get("fields") != after.get("fields"):
        changes["fields"] = [before.get("fields"), after.get("fields")]
    old_notes, new_notes = before.get("notifications", []), after.get("notifications", [])
    if old_notes != new_notes:
        changes["notifications"] = {
            "added": [n for n in new_notes if n not in old_notes],
            "dropped": [n for n in old_notes if n not in new_notes],
        }
    return changes


# --- the command -----------------------------------------------------------------------


def register_whatif(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``rules whatif`` to the ``rules`` sub-commands."""
    from provider.events.commands import _since  # the CLI's one ISO 8601 parser

    parser = sub.add_parser(
        "whatif", help="replay journaled calls against a rules file; nothing is stored or sent"
    )
    parser.add_argument("file", metavar="FILE")
    parser.add_argument("--replace", action="store_true", help="as `rules import --replace` would store it")
    parser.add_argument(
        "--since", type=_since, help="calls at or after (ISO 8601; default: the last 24 hours)"
    )
    parser.add_argument(
        "--limit", type=int, default=MAX_CALLS, help=f"newest calls replayed (at most {MAX_CALLS})"
    )
    parser.add_argument("--format", choices=("table", "json"), default="table")
    parser.set_defaults(handler=cmd_whatif)


def cmd_whatif(args: argparse.Namespace, settings: Any) -> int:
    from provider.errors import RulesFileError
    from provider.rules.cli_support import open_database
    from provider.rules.commands import EXIT_PROBLEMS, _print_problems, load_for_store
    from provider.rules.store import RuleStore

    with open_database(settings) as database:
        store = RuleStore(database)
        try:
            rules_file = load_for_store(args.file, store, replace=args.replace, settings=settings)
            snapshot = store.snapshot()
            draft = draft_rule_set(
                snapshot, rules_file, replace=args.replace, read_only_vars=settings.read_only_vars
            )
        except RulesFileError as exc:
            _print_problems(exc, args.file)
            return EXIT_PROBLEMS
        current = current_rule_set(snapshot, settings.read_only_vars)
        report = whatif(database, current, draft, since=args.since, limit=args.limit)
    if args.format == "json":
        print(json.dumps(report.as_dict(), ensure_ascii=False, indent=2, default=str))
        return 0
    print_report(report)
    return 0


def print_report(report: WhatIfReport) -> None:
    """The table form of ``report`` (also the what-if part of ``rules import --dry-run``)."""
    from provider.events.commands import format_table
    from provider.events.export import utc_text

    print(f"of the last {report.replayed} calls, {report.changed} would be answered differently")
    if report.by_operation:
        rows = [[op, c.replayed, c.changed] for op, c in sorted(report.by_operation.items())]
        print(format_table(["OPERATION", "REPLAYED", "CHANGED"], rows))
    for call in report.calls:
        print(f"\n#{call.id} {utc_text(call.time, 'seconds')} {call.operation} {call.user or ''}".rstrip())
        print(json.dumps(call.diff, ensure_ascii=False, indent=2, default=str))
