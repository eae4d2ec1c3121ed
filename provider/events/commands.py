"""The ``st-provider`` sub-commands of the events capability.

- ``worker [--once] [--metrics-bind HOST:PORT]``: deliver queued notifications until
  SIGTERM/SIGINT (``--once``: deliver what is due now, then exit).
- ``deliveries list`` with ``--status --suppressed --kind --template --channel
  --event-type --recipient --since --until --event-id --limit --format table|json|csv``
  (CSV: :func:`provider.events.export.csv_text`, the console's download too).
- ``deliveries summary [--since T] [--by channel|template|status|day] [--format ...]``:
  counts and failure rates (:mod:`provider.events.summary`).
- ``deliveries show ID [--format table|json]``: one delivery with every attempt.
- ``deliveries retry ID`` (a failed or pending one, due now; audited) or
  ``deliveries retry --failed [--channel NAME]``.
- ``deliveries resend ID``: a NEW delivery of a delivered one's notification (audited;
  :mod:`provider.events.manual`, the console's **Send again**).
- ``events list`` with ``--event-type --since --until --has-errors --limit --format``
  (``ERRORS``: the rules that raised for the event, and the error type).
- ``events show ID [--format table|json]``: one event with its variables and rule errors.
- ``events replay ID``: evaluate the event again with the current stored rules and
  create only the deliveries it does not have yet (see :mod:`provider.events.replay`).

Dates are ISO 8601 (``2024-05-01`` or ``2024-05-01T12:00:00+02:00``; UTC when no
offset is given). A date alone in ``--until`` includes that whole day. Times are printed
in UTC as ISO 8601 with a ``Z`` in every format (table: to the second; json, csv: in full).

Output to a pipe closed early (``| head -1``) ends quietly (see :func:`provider.cli.main`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any

from provider.channels.specs import MESSAGE_KINDS
from provider.db.events import STATUSES, SUPPRESSED
from provider.db.migrate import pending
from provider.db.session import Database
from provider.errors import ConfigError, EventNotFound, ProviderError
from provider.events import manual, reports
from provider.events.export import csv_text, json_ready, utc_text
from provider.events.summary import GROUPINGS, SummaryRow, summarise
from provider.rules.cli_support import add_actor_argument, change_actor, command_line
from provider.settings import Settings

FORMATS = ("table", "json", "csv")
TABLE_ERROR_CHARS = 60


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add this capability's sub-commands to the CLI."""
    worker = subparsers.add_parser("worker", help="deliver queued event notifications")
    worker.add_argument("--once", action="store_true", help="deliver what is due now, then exit")
    worker.add_argument("--metrics-bind", metavar="HOST:PORT", help="serve Prometheus metrics there")
    worker.set_defaults(handler=cmd_worker)

    deliveries = subparsers.add_parser("deliveries", help="see and retry event notifications")
    dsub = deliveries.add_subparsers(dest="deliveries_command", required=True, metavar="ACTION")
    listing = dsub.add_parser("list", help="list deliveries, newest first")
    listing.add_argument("--status", choices=STATUSES)
    listing.add_argument(
        "--suppressed", action="store_true", help="only deliveries not sent because of an opt-out"
    )
    listing.add_argument("--kind", choices=MESSAGE_KINDS, help="message kind (by the channel's type)")
    listing.add_argument("--template", help="only deliveries rendered from this message template")
    listing.add_argument("--channel", help="channel name")
    listing.add_argument("--event-type", type=int, help="numeric SmarterTrack event type")
    listing.add_argument("--recipient", help="part of the recipient (phone number, e-mail address)")
    listing.add_argument("--since", type=_since, help="created at or after (ISO 8601)")
    listing.add_argument("--until", type=_until, help="created before (ISO 8601; a date includes that day)")
    listing.add_argument("--event-id", type=int, help="only this event's deliveries")
    listing.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    listing.add_argument("--format", choices=FORMATS, default="table")
    listing.set_defaults(handler=cmd_deliveries_list)

    _register_summary(dsub)

    show = dsub.add_parser("show", help="one delivery with every attempt")
    show.add_argument("id", type=int)
    show.add_argument("--format", choices=("table", "json"), default="table")
    show.set_defaults(handler=cmd_deliveries_show)

    _register_manual(dsub)

    events = subparsers.add_parser("events", help="see received events")
    esub = events.add_subparsers(dest="events_command", required=True, metavar="ACTION")
    elist = esub.add_parser("list", help="list events, newest first")
    elist.add_argument("--event-type", type=int)
    elist.add_argument("--since", type=_since)
    elist.add_argument("--until", type=_until)
    elist.add_argument("--has-errors", action="store_true", help="only events a rule raised for")
    elist.add_argument("--limit", type=int, default=100)
    elist.add_argument("--format", choices=FORMATS, default="table")
    elist.set_defaults(handler=cmd_events_list)

    eshow = esub.add_parser("show", help="one event, its deliveries by status and its rule errors")
    eshow.add_argument("id", type=int)
    eshow.add_argument("--format", choices=("table", "json"), default="table")
    eshow.set_defaults(handler=cmd_events_show)

    replay = esub.add_parser(
        "replay", help="evaluate an event again with the current rules; add only missing deliveries"
    )
    replay.add_argument("id", type=int)
    replay.set_defaults(handler=cmd_events_replay)


def _register_manual(dsub: argparse._SubParsersAction[Any]) -> None:
    retry = dsub.add_parser("retry", help="queue failed deliveries again")
    retry.add_argument("id", type=int, nargs="?", help="the failed or pending delivery to retry now")
    retry.add_argument("--failed", action="store_true", help="retry every failed delivery")
    retry.add_argument("--channel", help="with --failed: only this channel's")
    add_actor_argument(retry)
    retry.set_defaults(handler=cmd_deliveries_retry)

    resend = dsub.add_parser("resend", help="send a delivered notification again (a new delivery)")
    resend.add_argument("id", type=int, help="the delivered delivery to send again")
    add_actor_argument(resend)
    resend.set_defaults(handler=cmd_deliveries_resend)


def _register_summary(dsub: argparse._SubParsersAction[Any]) -> None:
    summary = dsub.add_parser(
        "summary", help="deliveries counted by channel, template, status or day, with failure rates"
    )
    summary.add_argument("--since", type=_since, help="created at or after (ISO 8601)")
    summary.add_argument("--by", choices=GROUPINGS, default="channel")
    summary.add_argument("--format", choices=FORMATS, default="table")
    summary.set_defaults(handler=cmd_deliveries_summary)


# --- argument types --------------------------------------------------------------


def _parse_when(text: str, *, end_of_day: bool) -> datetime:
    raw = text.strip()
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 date or time") from exc
    if end_of_day and len(raw) == 10:
        value += timedelta(days=1)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _since(text: str) -> datetime:
    return _parse_when(text, end_of_day=False)


def _until(text: str) -> datetime:
    return _parse_when(text, end_of_day=True)


# --- worker --------------------------------------------------------------------------


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    """Run a delivery worker in the foreground until SIGTERM/SIGINT (or once)."""
    from provider.events.worker import Worker  # partner clients are imported when a channel is built

    if pending(settings.database_url):
        raise ConfigError("the database is not at the newest migration: run `st-provider db upgrade`")
    if args.metrics_bind:
        _serve_metrics(args.metrics_bind)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with Database(settings.database_url) as database:
            worker = Worker(settings, database)
            if args.once:
                try:
                    count = worker.drain(stop)
                finally:
                    worker.close()
                print(f"{count} deliveries processed")
            else:
                worker.run(stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _serve_metrics(bind: str) -> None:
    from prometheus_client import start_http_server  # only with --metrics-bind

    host, _, port = bind.rpartition(":")
    if not port.isdigit():
        raise ConfigError(f"--metrics-bind: expected HOST:PORT, not {bind!r}")
    try:
        start_http_server(int(port), addr=host or "127.0.0.1")
    except OSError as exc:
        raise ConfigError(f"--metrics-bind: cannot listen on {bind}: {exc.strerror}") from exc


# --- reports ---------------------------------------------------------------------------


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return utc_text(value, "seconds")
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, Mapping):
        return json.dumps(json_ready(value), ensure_ascii=False, sort_keys=True)
    return " ".join(str(value).split())


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Rows as left-aligned columns under a header line."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.extend("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells)
    return "\n".join(lines)


def _print_json(record: Any) -> None:
    """One dataclass ``record`` (a ``show`` command's answer) as indented JSON on stdout."""
    print(json.dumps(json_ready(dataclasses.asdict(record)), ensure_ascii=False, indent=2))


def _emit(records: Sequence[Any], fmt: str, table: Callable[[Sequence[Any]], str]) -> None:
    if fmt == "json":
        print(json.dumps([json_ready(dataclasses.asdict(r)) for r in records], ensure_ascii=False, indent=2))
    elif fmt == "csv":
        sys.stdout.write(csv_text(records))
    else:
        print(table(records) if records else "(none)")


def _deliveries_table(rows: Sequence[reports.DeliveryRow]) -> str:
    return format_table(
        [
            "ID",
            "EVENT",
            "TYPE",
            "CHANNEL",
            "RECIPIENT",
            "STATUS",
            "ATTEMPTS",
            "CREATED",
            "NEXT",
            "HTTP",
            "PARTNER ID",
            "ERROR",
        ],
        [
            [
                r.id,
                r.event_id,
                r.event_type,
                r.channel,
                r.recipient,
                r.status,
                r.attempts,
                r.created_at,
                r.next_attempt_at,
                r.last_status,
                r.partner_id,
                _clip(_cell(r.last_error), TABLE_ERROR_CHARS),
            ]
            for r in rows
        ],
    )


def cmd_deliveries_list(args: argparse.Namespace, settings: Settings) -> int:
    if args.suppressed and args.status not in (None, SUPPRESSED):
        raise ProviderError("--suppressed and --status select different deliveries")
    filters = reports.DeliveryFilter(
        status=SUPPRESSED if args.suppressed else args.status,
        kind=args.kind,
        template=args.template,
        channel=args.channel,
        event_type=args.event_type,
        recipient=args.recipient,
        since=args.since,
        until=args.until,
        event_id=args.event_id,
    )
    with Database(settings.database_url) as database:
        rows = reports.list_deliveries(database, filters, limit=args.limit)
    _emit(rows, args.format, _deliveries_table)
    return 0


def _summary_table(rows: Sequence[SummaryRow]) -> str:
    return format_table(
        ["GROUP", "TOTAL", "DELIVERED", "FAILED", "SUPPRESSED", "PENDING", "FAILURE RATE"],
        [
            [
                r.group,
                r.total,
                r.delivered,
                r.failed,
                r.suppressed,
                r.pending,
                "-" if r.failure_rate is None else f"{r.failure_rate:.1%}",
            ]
            for r in rows
        ],
    )


def cmd_deliveries_summary(args: argparse.Namespace, settings: Settings) -> int:
    with Database(settings.database_url) as database:
        rows = summarise(database, by=args.by, since=args.since)
    _emit(rows, args.format, _summary_table)
    return 0


def cmd_deliveries_show(args: argparse.Namespace, settings: Settings) -> int:
    with Database(settings.database_url) as database:
        detail = reports.get_delivery(database, args.id)
    if args.format == "json":
        _print_json(detail)
        return 0
    d = detail.delivery
    fields = [
        ("Delivery", d.id),
        ("Event", f"{d.event_id} ({d.event_type} {d.event_name or ''})".strip()),
        ("Rule", d.rule),
        ("Channel", d.channel),
        ("Recipient", d.recipient),
        ("Status", d.status),
        ("Attempts", d.attempts),
        ("Created", d.created_at),
        ("Next attempt", d.next_attempt_at),
        ("Finished", d.finished_at),
        ("HTTP status", d.last_status),
        ("Partner id", d.partner_id),
        ("Template", d.template),
        ("Last error", d.last_error),
        ("Key", detail.key),
        ("Parameters", json.dumps(json_ready(detail.params), ensure_ascii=False, sort_keys=True)),
    ]
    if detail.documents:
        sizes = {name: len(json.dumps(value)) for name, value in detail.documents.items()}
        fields.append(("Documents", ", ".join(f"{n} ({s} bytes)" for n, s in sizes.items())))
    width = max(len(name) for name, _ in fields)
    for name, value in fields:
        print(f"{name.ljust(width)}  {_cell(value)}")
    print()
    print(
        format_table(
            ["#", "STARTED", "SECONDS", "OUTCOME", "HTTP", "PARTNER ID", "NEXT ATTEMPT", "WORKER", "ERROR"],
            [
                [
                    a.number,
                    a.started_at,
                    a.duration,
                    a.outcome,
                    a.http_status,
                    a.partner_id,
                    a.next_attempt_at,
                    a.worker,
                    a.error,
                ]
                for a in detail.attempts
            ],
        )
        if detail.attempts
        else "(no attempts yet)"
    )
    return 0


def cmd_deliveries_retry(args: argparse.Namespace, settings: Settings) -> int:
    if args.failed == (args.id is not None):
        raise ProviderError("give either a delivery ID or --failed")
    if args.channel and not args.failed:
        raise ProviderError("--channel goes with --failed")
    with Database(settings.database_url) as database:
        if args.failed:
            count = reports.retry_failed(database, channel=args.channel)
            print(f"{count} failed deliveries queued again")
        else:
            manual.retry_delivery(
                database, args.id, actor=change_actor(args, settings), command=command_line()
            )
            print(f"delivery {args.id} queued again")
    return 0


def cmd_deliveries_resend(args: argparse.Namespace, settings: Settings) -> int:
    with Database(settings.database_url) as database:
        new_id = manual.resend_delivery(
            database, args.id, actor=change_actor(args, settings), command=command_line()
        )
    print(f"delivery {args.id} sent again as delivery {new_id}")
    return 0


def _events_table(rows: Sequence[reports.EventRow]) -> str:
    return format_table(
        ["ID", "RECEIVED", "TYPE", "NAME", "REPEATS", "DELIVERIES", "ERRORS", "ARGUMENTS"],
        [
            [
                r.id,
                r.received_at,
                r.event_type,
                r.event_name,
                r.repeats,
                " ".join(f"{k}={v}" for k, v in sorted(r.deliveries.items())),
                _errors_text(r.rule_errors),
                _clip(_cell(r.arguments), TABLE_ERROR_CHARS),
            ]
            for r in rows
        ],
    )


def _errors_text(errors: Sequence[Mapping[str, str]]) -> str:
    return " ".join(f"{e.get('rule')}:{e.get('error')}" for e in errors)


def cmd_events_list(args: argparse.Namespace, settings: Settings) -> int:
    with Database(settings.database_url) as database:
        rows = reports.list_events(
            database,
            event_type=args.event_type,
            since=args.since,
            until=args.until,
            limit=args.limit,
            has_errors=args.has_errors,
        )
    _emit(rows, args.format, _events_table)
    return 0


def cmd_events_show(args: argparse.Namespace, settings: Settings) -> int:
    with Database(settings.database_url) as database:
        rows = reports.list_events(database, event_id=args.id, limit=1)
    if not rows:
        raise EventNotFound(f"no event has id {args.id}")
    event = rows[0]
    if args.format == "json":
        _print_json(event)
        return 0
    fields = [
        ("Event", event.id),
        ("Received", event.received_at),
        ("Type", f"{event.event_type} {event.event_name or ''}".strip()),
        ("Repeats", event.repeats),
        ("Deliveries", " ".join(f"{k}={v}" for k, v in sorted(event.deliveries.items())) or "none"),
        ("Rule errors", _errors_text(event.rule_errors) or "none"),
        ("Arguments", event.arguments),
    ]
    width = max(len(name) for name, _ in fields)
    for name, value in fields:
        print(f"{name.ljust(width)}  {_cell(value)}")
    return 0


def cmd_events_replay(args: argparse.Namespace, settings: Settings) -> int:
    from provider.comms.templates import global_variables
    from provider.events.replay import replay_event
    from provider.rules.engine import compile_rules
    from provider.rules.store import RuleStore

    with Database(settings.database_url) as database:
        snapshot = RuleStore(database).snapshot()
        rules = compile_rules(
            snapshot.valid_rules(),
            version=snapshot.version,
            variables=global_variables(settings.read_only_vars, snapshot.variables),
        )
        result = replay_event(database, rules, args.id)
    print(
        f"event {result.event_id} replayed with rule set version {snapshot.version}: "
        f"{result.created} deliveries created, {result.already} already there"
    )
    for rule, error in result.rule_errors:
        print(f"  rule {rule!r} still raises: {error}", file=sys.stderr)
    return 0
