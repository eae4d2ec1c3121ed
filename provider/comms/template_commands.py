"""The ``st-provider templates`` commands (message templates of the stored rule set).

* ``templates list [--tag T] [--json]``: name, kind, tags and description of each template.
* ``templates show NAME [--json]``: one template as the rules file writes it.
* ``templates render NAME [--event ID | NAME=VALUE ...] [--json]``: the template's
  parameters rendered with a stored event's variables (as SmarterTrack sent them) or
  the given ones, and the global variables (``vars``). Sends nothing, stores nothing.

Templates are changed with ``rules import`` (the ``templates:`` section).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import yaml
from jinja2 import TemplateError

from provider.comms.render import render_template
from provider.comms.templates import MessageTemplate, global_variables
from provider.db.events import EventRecord
from provider.db.session import Database
from provider.errors import ConfigError, EventNotFound, RuleError, TemplateNotFound
from provider.rules.cli_support import open_database
from provider.rules.limits import RuleLimits
from provider.rules.store import RuleStore
from provider.settings import Settings
from provider.variables import name_value_pairs

EXIT_OK = 0
EXIT_PROBLEMS = 1

#: what a template may raise while it renders (a missing variable, a limit, a wrong type)
RENDER_ERRORS = (RuleError, TemplateError, TypeError, ValueError)


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``templates`` sub-commands to the CLI."""
    templates = subparsers.add_parser("templates", help="see and preview the message templates of the rules")
    sub = templates.add_subparsers(dest="templates_command", required=True, metavar="ACTION")
    listing = sub.add_parser("list", help="list the templates")
    listing.add_argument("--tag", help="only templates with this tag (case-insensitive)")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=cmd_list)
    show = sub.add_parser("show", help="show one template as the rules file writes it")
    show.add_argument("name", metavar="NAME")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(handler=cmd_show)
    render = sub.add_parser(
        "render", help="render a template for a stored event or given values (sends nothing)"
    )
    render.add_argument("name", metavar="NAME")
    render.add_argument("--event", type=int, metavar="ID", help="a stored event's variables")
    render.add_argument(
        "variables", nargs="*", metavar="NAME=VALUE", help="input variables, as SmarterTrack sends"
    )
    render.add_argument("--json", action="store_true", help="print JSON")
    render.set_defaults(handler=cmd_render)


def _template(templates: list[MessageTemplate], name: str) -> MessageTemplate:
    for template in templates:
        if template.name == name:
            return template
    raise TemplateNotFound(f"no template named {name!r}")


def _summary(template: MessageTemplate) -> dict[str, Any]:
    return {
        "name": template.name,
        "kind": template.kind,
        "tags": list(template.tags),
        "description": template.description,
    }


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    with open_database(settings) as database:
        templates = RuleStore(database).templates()
    if args.tag:
        tag = args.tag.lower()
        templates = [t for t in templates if tag in (x.lower() for x in t.tags)]
    if args.json:
        print(json.dumps([_summary(t) for t in templates], indent=2, ensure_ascii=False))
        return EXIT_OK
    if not templates:
        print("no templates")
        return EXIT_OK
    width = max(len(t.name) for t in templates)
    kind_width = max(len(t.kind) for t in templates)
    for t in templates:
        tags = ",".join(t.tags) or "-"
        print(f"{t.name.ljust(width)}  {t.kind.ljust(kind_width)}  {tags}  {t.description or ''}".rstrip())
    return EXIT_OK


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    with open_database(settings) as database:
        template = _template(RuleStore(database).templates(), args.name)
    mapping = {template.name: template.to_mapping()}
    if args.json:
        print(json.dumps(mapping, indent=2, ensure_ascii=False))
    else:
        sys.stdout.write(yaml.safe_dump(mapping, sort_keys=False, allow_unicode=True))
    return EXIT_OK


def variable_pairs(entries: list[str]) -> list[tuple[str, str]]:
    """``NAME=VALUE`` entries as pairs; ConfigError for one without ``=`` or naming a password."""
    return name_value_pairs(entries, reader="templates")


def event_variables(database: Database, event_id: int) -> list[tuple[str, str]]:
    """The input variables of stored event ``event_id`` as SmarterTrack sent them (EventNotFound)."""
    with database.session() as session:
        record = session.get(EventRecord, event_id)
        if record is None:
            raise EventNotFound(f"no event with id {event_id}")
        return [(str(name), str(value)) for name, value in record.variables]


def cmd_render(args: argparse.Namespace, settings: Settings) -> int:
    if args.event is not None and args.variables:
        raise ConfigError("give either --event or NAME=VALUE variables, not both")
    given = variable_pairs(args.variables)
    with open_database(settings) as database:
        snapshot = RuleStore(database).snapshot()
        template = _template(list(snapshot.templates), args.name)
        variables = event_variables(database, args.event) if args.event is not None else given
    limits = RuleLimits(max_output=settings.rules_max_output, deadline_ms=settings.rules_deadline_ms)
    try:
        rendered = render_template(
            template, variables, global_variables(settings.read_only_vars, snapshot.variables), limits=limits
        )
    except RENDER_ERRORS as exc:
        print(
            f"st-provider: template {template.name!r} does not render: {type(exc).__name__}: {exc}",
            file=sys.stderr,
        )
        return EXIT_PROBLEMS
    if args.json:
        print(json.dumps(rendered, indent=2, ensure_ascii=False))
        return EXIT_OK
    print(f"# template {template.name} ({template.kind}); nothing was sent")
    for key, value in rendered.items():
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        if "\n" in text:
            print(f"{key}:")
            for line in text.splitlines():
                print(f"  {line}")
        else:
            print(f"{key}: {text}")
    return EXIT_OK
