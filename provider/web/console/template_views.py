"""The Templates page (issue 13: "the console shows them with a rendered preview").

Routes added to the ``console`` blueprint of :mod:`.views`, read-only, for admins and viewers:

* ``GET /templates``: the stored message templates (``templates list``): name, kind, tags,
  description.
* ``GET /templates/<name>``: one template as the rules file writes it (``templates show``) and its
  parameters rendered by :func:`provider.comms.render.render_template` (``templates render``) with
  sample values the admin may edit (``values``: ``NAME=VALUE`` lines) or a stored event's
  variables (``event``). Nothing is sent or stored. An e-mail's HTML is shown as escaped source
  and in an ``<iframe sandbox>`` (no scripts, no forms, no navigation) under the console's
  Content-Security-Policy, which loads no outside resource and applies no inline style.
"""

from __future__ import annotations

import json
from typing import Any

from flask import abort, request

from provider.comms.render import render_template
from provider.comms.template_commands import RENDER_ERRORS, event_variables, variable_pairs
from provider.comms.templates import MessageTemplate, global_variables
from provider.errors import ConfigError, EventNotFound
from provider.rules.limits import DEFAULT_LIMITS, RuleLimits
from provider.rules.yaml_lines import dump_yaml
from provider.web.console.views import _page, _services, blueprint

#: What a NotifyEventFired call might carry, for a preview before any event was stored.
SAMPLE_VALUES = (
    ("eventType", "502000"),
    ("ticketNumber", "ABC-12345"),
    ("subject", "The printer is out of paper"),
    ("email", "customer@example.com"),
    ("username", "sam.sample"),
    ("args_ticketNumber", "ABC-12345"),
    ("args_subject", "The printer is out of paper"),
    ("args_email", "customer@example.com"),
    ("args_phone", "+15550100"),
    ("args_name", "Sam Sample"),
)
MAX_VALUES_LENGTH = 20_000


@blueprint.route("/templates")
def templates() -> str:
    """The message templates of the stored rule set, in file order."""
    snapshot = _services().rules.snapshot()
    return _page("templates.html", "Templates", templates=snapshot.templates, version=snapshot.version)


@blueprint.route("/templates/<path:name>")
def template(name: str) -> Any:
    """One template and its rendered preview (400 when the sample values or event are unusable)."""
    services = _services()
    snapshot = services.rules.snapshot()
    found = next((t for t in snapshot.templates if t.name == name), None)
    if found is None:
        abort(404)
    values = request.args.get("values")
    if values is None:
        values = "\n".join(f"{n}={v}" for n, v in SAMPLE_VALUES)
    event = (request.args.get("event") or "").strip()
    errors: dict[str, str] = {}
    variables = _variables(values, event, errors)
    rendered, failure = None, None
    if not errors:
        rendered, failure = _render(found, variables, snapshot.variables)
    page = _page(
        "template.html",
        f"Template {name}",
        t=found,
        source=dump_yaml({found.name: found.to_mapping()}),
        values=values,
        event=event,
        errors=errors,
        rendered=rendered,
        failure=failure,
    )
    return (page, 400) if errors else page


def _variables(values: str, event: str, errors: dict[str, str]) -> list[tuple[str, str]]:
    """The preview's input variables: a stored event's, else the ``NAME=VALUE`` lines."""
    if event:
        if not event.isdigit():
            errors["event"] = "Not an event id (a whole number)."
            return []
        try:
            return event_variables(_services().database, int(event))
        except EventNotFound:
            errors["event"] = f"No event has the id {event}."
            return []
    if len(values) > MAX_VALUES_LENGTH:
        errors["values"] = f"At most {MAX_VALUES_LENGTH} characters."
        return []
    try:
        return variable_pairs([line for line in values.splitlines() if line.strip()])
    except ConfigError as exc:
        errors["values"] = str(exc)
        return []


def _render(
    template: MessageTemplate, variables: list[tuple[str, str]], editable: tuple[tuple[str, str], ...]
) -> tuple[list[tuple[str, str, bool]] | None, str | None]:
    """``templates render``: each parameter's name, its rendered text (JSON for a list or mapping)
    and whether it is HTML; or why the template does not render."""
    settings = _services().settings
    limits = DEFAULT_LIMITS
    read_only: dict[str, str] = {}
    if settings is not None:
        limits = RuleLimits(max_output=settings.rules_max_output, deadline_ms=settings.rules_deadline_ms)
        read_only = dict(settings.read_only_vars)
    try:
        rendered = render_template(template, variables, global_variables(read_only, editable), limits=limits)
    except RENDER_ERRORS as exc:
        return None, f"{type(exc).__name__}: {exc}"
    return [
        (
            key,
            value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, indent=2),
            key in template.html_params,
        )
        for key, value in rendered.items()
    ], None
