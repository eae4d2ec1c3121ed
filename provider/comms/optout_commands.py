"""``st-provider optout add|remove|list``: the suppression list from the command line.

- ``optout add ADDRESS [--kind sms|email] [--event-type N] [--reason TEXT] [--actor NAME]``
- ``optout remove ADDRESS [--kind sms|email] [--event-type N] [--actor NAME]``
- ``optout list [ADDRESS] [--format table|json|csv]``

ADDRESS is a phone number with its country code (stored as E.164) or an e-mail
address (stored lower-cased). Changes are audited (``optout_audit``) with the same
actor as the rules commands (:func:`provider.rules.cli_support.change_actor`).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from provider.comms import optouts
from provider.events.commands import FORMATS, _emit, format_table
from provider.rules.cli_support import add_actor_argument, change_actor, command_line, open_database
from provider.settings import Settings


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``optout`` sub-commands to the CLI."""
    optout = subparsers.add_parser("optout", help="the suppression list (who is not to be notified)")
    sub = optout.add_subparsers(dest="optout_command", required=True, metavar="ACTION")
    add = sub.add_parser("add", help="opt an address out (of everything, one kind or one event type)")
    _address_arguments(add)
    add.add_argument("--reason", help="why (kept with the opt-out and in the audit)")
    add_actor_argument(add)
    add.set_defaults(handler=cmd_add)
    remove = sub.add_parser("remove", help="remove one opt-out of an address")
    _address_arguments(remove)
    add_actor_argument(remove)
    remove.set_defaults(handler=cmd_remove)
    listing = sub.add_parser("list", help="list opt-outs, oldest first")
    listing.add_argument("address", nargs="?", help="only this address's")
    listing.add_argument("--format", choices=FORMATS, default="table")
    listing.set_defaults(handler=cmd_list)


def _address_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("address", help="phone number with country code (+CC...) or e-mail address")
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("--kind", choices=optouts.KINDS, help="only messages of this kind")
    scope.add_argument("--event-type", type=int, help="only this numeric SmarterTrack event type")


def cmd_add(args: argparse.Namespace, settings: Settings) -> int:
    with open_database(settings) as database:
        row = optouts.add(
            database,
            args.address,
            kind=args.kind,
            event_type=args.event_type,
            reason=args.reason,
            actor=change_actor(args, settings),
            command=command_line(),
        )
    print(f"opted out: {row.address} ({row.scope})")
    return 0


def cmd_remove(args: argparse.Namespace, settings: Settings) -> int:
    with open_database(settings) as database:
        row = optouts.remove(
            database,
            args.address,
            kind=args.kind,
            event_type=args.event_type,
            actor=change_actor(args, settings),
            command=command_line(),
        )
    print(f"removed: {row.address} ({row.scope})")
    return 0


def _table(rows: Sequence[optouts.OptOutRow]) -> str:
    return format_table(
        ["ADDRESS", "SCOPE", "REASON", "BY", "SINCE"],
        [[r.address, r.scope, r.reason, r.actor, r.created_at] for r in rows],
    )


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    with open_database(settings) as database:
        rows = optouts.list_optouts(database, args.address)
    _emit(rows, args.format, _table)
    return 0
