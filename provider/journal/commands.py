"""The ``st-provider calls`` sub-commands: the call journal.

- ``calls list [--operation OP] [--outcome O] [--user NAME] [--since T] [--until T]
  [--limit N] [--format table|json|csv]``: the newest calls first;
- ``calls show ID [--format table|json]``: one call with its input variables (without
  ``authPW``/``loginPassword``; secret-looking values redacted), the user the rules
  saw, the rules that matched and the answer.

Dates and output formats as for ``deliveries list`` (:mod:`provider.events.commands`).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from provider.db.session import Database
from provider.domain import Operation
from provider.events.commands import FORMATS, _emit, _print_json, _since, _until, format_table
from provider.journal import queries
from provider.journal.entry import OUTCOMES
from provider.settings import Settings


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``calls`` sub-commands to the CLI."""
    calls = subparsers.add_parser("calls", help="see the SOAP calls SmarterTrack made (the call journal)")
    sub = calls.add_subparsers(dest="calls_command", required=True, metavar="ACTION")
    listing = sub.add_parser("list", help="list journaled calls, newest first")
    listing.add_argument(
        "--operation",
        choices=[*(str(o) for o in Operation), "unknown"],
        metavar="OP",
        help="one of the seven operations, or unknown (a request refused before its operation was known)",
    )
    listing.add_argument("--outcome", choices=OUTCOMES)
    listing.add_argument("--user", help="the user's name (case-insensitive)")
    listing.add_argument("--since", type=_since, help="at or after (ISO 8601)")
    listing.add_argument("--until", type=_until, help="before (ISO 8601; a date includes that day)")
    listing.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    listing.add_argument("--format", choices=FORMATS, default="table")
    listing.set_defaults(handler=cmd_calls_list)

    show = sub.add_parser("show", help="one journaled call in full")
    show.add_argument("id", type=int)
    show.add_argument("--format", choices=("table", "json"), default="table")
    show.set_defaults(handler=cmd_calls_show)


def _calls_table(rows: Sequence[queries.CallRow]) -> str:
    return format_table(
        ["ID", "TIME", "OPERATION", "OUTCOME", "USER", "CLIENT", "MS", "MESSAGE", "RULES"],
        [
            [
                r.id,
                r.at,
                r.operation,
                r.outcome,
                r.user,
                r.client,
                r.duration_ms,
                r.message,
                ",".join(r.matched),
            ]
            for r in rows
        ],
    )


def cmd_calls_list(args: argparse.Namespace, settings: Settings) -> int:
    filters = queries.CallFilter(
        operation=args.operation, outcome=args.outcome, user=args.user, since=args.since, until=args.until
    )
    with Database(settings.database_url) as database:
        rows = queries.list_calls(database, filters, limit=args.limit)
    _emit(rows, args.format, _calls_table)
    return 0


def cmd_calls_show(args: argparse.Namespace, settings: Settings) -> int:
    with Database(settings.database_url) as database:
        detail = queries.get_call(database, args.id)
    if args.format == "json":
        _print_json(detail)
        return 0
    c = detail.call
    answer = detail.answer or {}
    identity = detail.identity or {}
    fields = [
        ("Call", c.id),
        ("Time", c.at),
        ("Operation", c.operation),
        ("Outcome", c.outcome + (f" ({detail.fault})" if detail.fault else "")),
        ("Request id", c.request_id),
        ("Client", c.client),
        ("Duration ms", c.duration_ms),
        ("User", c.user),
        ("Groups", ", ".join(identity.get("groups", []))),
        ("Rules matched", ", ".join(c.matched)),
        ("Success", answer.get("success")),
        ("Message", answer.get("message")),
    ]
    print(format_table(["FIELD", "VALUE"], [[k, v] for k, v in fields]))
    sections: list[tuple[str, list[list[Any]]]] = [
        ("Input variables", [[n, v] for n, v in detail.variables]),
        ("Output variables", [list(p) for p in answer.get("output", [])]),
        ("Directory attributes", [[k, ", ".join(v)] for k, v in identity.get("attributes", {}).items()]),
    ]
    for title, rows in sections:
        if rows:
            print(f"\n{title}:")
            print(format_table(["NAME", "VALUE"], rows))
    for title, key in (("Custom fields", "fields"), ("Notifications", "notifications")):
        if answer.get(key):
            print(f"\n{title}:")
            print(json.dumps(answer[key], ensure_ascii=False, indent=2))
    return 0
