"""The Rules page's detail and editor (routes added to the ``console`` blueprint of :mod:`.views`).

* ``GET /rules/<name>``: one rule: its operations, priority, condition, actions and ``notify``
  entries, state, ``on_error``, its place in the evaluation order of each operation, the rule as
  the rules file writes it, and its change history (``rules history --rule NAME``).
* ``GET /rules-file``: the whole rule set in a textarea labelled "Rules file", pre-filled with
  what ``rules export`` writes (``${VAR}`` references stay references).
* ``POST /rules-file`` with ``action``:

  - ``validate`` (viewers too): the validator of ``rules import``
    (:func:`provider.rules.drafts.parse_for_store`), every problem at its line and rule name;
    when the file is valid, what **Import** and **Replace all** would each change (the dry run of
    ``rules import --dry-run``: the rules, channels, templates and variables created, updated and
    deleted, the unified diff) and the journal-based what-if of the newest calls.
  - ``import`` / ``replace`` (admins only): :meth:`provider.rules.store.RuleStore.import_rules`,
    audited with the actor ``console:NAME`` like ``rules import [--replace]``. Refused (409,
    nothing stored) when the rule set changed since the form was loaded (``base_version``).

Every ``POST`` passed the console's CSRF check before it gets here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from flask import Response, abort, flash, redirect, request, url_for

from provider.channels.validation import DEFAULT_SECRET_VARS
from provider.comms.signin_checks import otp_problems
from provider.domain import Operation
from provider.errors import RuleProblem, RulesFileError
from provider.rules.drafts import (
    ImportPreview,
    draft_warnings,
    parse_for_store,
    preview_import,
    summary_lines,
)
from provider.rules.model import DENY, SKIP, RulesFile
from provider.rules.store import Snapshot, StoredRule
from provider.rules.yaml_lines import dump_yaml
from provider.web.console.app import current_user
from provider.web.console.views import _page, _services, blueprint

#: the newest journaled calls (of the last 24 hours) the editor's what-if replays
WHATIF_LIMIT = 1_000
ACTIONS = ("validate", "import", "replace")
FIELD = "rules_file"
EXPORT_HEADER = (
    "st-provider rules export (rule set version {version})\n"
    "${{VAR}} references are resolved from the environment when a channel is used."
)


@dataclass(frozen=True)
class Place:
    """Where a rule runs for one operation: ``index`` (1-based) of ``count`` rules evaluated,
    the rules just before and after it; ``index`` is ``None`` when it is not evaluated (disabled)."""

    operation: str
    index: int | None
    count: int
    before: str | None
    after: str | None


@dataclass(frozen=True)
class Problem:
    """A validation problem with the text of its line in the draft (when it has one)."""

    problem: RuleProblem
    text: str | None


# --- one rule -----------------------------------------------------------------------------


@blueprint.route("/rules/<path:name>")
def rule(name: str) -> Any:
    """One stored rule, its place in the evaluation order and its history (404 when unknown)."""
    services = _services()
    snapshot = services.rules.snapshot()
    stored = next((r for r in snapshot.rules if r.name == name), None)
    if stored is None:
        abort(404)
    return _page(
        "rule.html",
        f"Rule {name}",
        version=snapshot.version,
        r=stored,
        places=evaluation_places(snapshot, stored),
        on_error=_on_error_text(stored),
        definition=dump_yaml([stored.mapping]),
        notify=list(stored.mapping["then"].get("notify") or []),
        history=[e for e in services.rules.history(limit=50, subject=name) if e.kind == "rule"],
    )


def evaluation_places(snapshot: Snapshot, stored: StoredRule) -> list[Place]:
    """For each operation ``stored`` applies to: where it runs among the enabled valid rules of
    that operation (ascending priority, file order breaking ties), as the engine orders them."""
    if stored.rule is None:
        return []
    places = []
    for operation in Operation:
        if operation not in stored.rule.methods:
            continue
        evaluated = sorted(
            (r for r in snapshot.rules if r.rule is not None and operation in r.rule.methods and r.enabled),
            key=lambda r: (r.priority, r.position),
        )
        names = [r.name for r in evaluated]
        if stored.name not in names:
            places.append(Place(operation.value, None, len(names), None, None))
            continue
        i = names.index(stored.name)
        before = names[i - 1] if i > 0 else None
        after = names[i + 1] if i + 1 < len(names) else None
        places.append(Place(operation.value, i + 1, len(names), before, after))
    return places


def _on_error_text(stored: StoredRule) -> str:
    """What the rule does when it raises, as the rules file README says."""
    if stored.rule is None:
        return "(the stored rule is invalid)"
    can_deny = False in (
        stored.rule.then.allow,
        stored.rule.then.allow_tickets,
        stored.rule.then.allow_chats,
    )
    if stored.rule.on_error == SKIP or (stored.rule.on_error is None and not can_deny):
        default = "" if stored.rule.on_error else " (the default for a rule that cannot deny)"
        return f"skip: the rule is skipped{default}"
    default = "" if stored.rule.on_error == DENY else " (the default for a rule that can deny)"
    return f"deny: fails closed, its denials apply{default}"


# --- the rules file editor ----------------------------------------------------------------


@blueprint.app_template_filter("whatif_changes")
def whatif_changes(diff: Mapping[str, Any]) -> list[tuple[str, str | None, str | None]]:
    """A what-if difference (:func:`provider.rules.whatif.diff`) as ``(what, before, after)`` rows
    for a reader: ``None`` where a value was added or dropped."""
    rows: list[tuple[str, str | None, str | None]] = []
    for key, label in (("success", "Success"), ("message", "Message"), ("html", "UserInfoHtml")):
        if key in diff:
            before, after = diff[key]
            rows.append((label, _text(before), _text(after)))
    output = diff.get("output") or {}
    rows += [(f"output {n}", None, str(v)) for n, v in (output.get("added") or {}).items()]
    rows += [(f"output {n}", str(v), None) for n, v in (output.get("removed") or {}).items()]
    rows += [(f"output {n}", str(b), str(a)) for n, (b, a) in (output.get("changed") or {}).items()]
    if "fields" in diff:
        before, after = diff["fields"]
        rows.append(("custom fields", _text(before), _text(after)))
    notes = diff.get("notifications") or {}
    rows += [("notification", None, _note(n)) for n in notes.get("added") or []]
    rows += [("notification", _note(n), None) for n in notes.get("dropped") or []]
    return rows


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _note(notification: Mapping[str, Any]) -> str:
    params = json.dumps(notification.get("params", {}), ensure_ascii=False)
    return f"{notification.get('channel')} (rule {notification.get('rule')}): {params}"


@blueprint.route("/rules-file", methods=["GET"])
def rules_file() -> Any:
    """The editor, pre-filled with the export of the stored rule set."""
    snapshot = _services().rules.snapshot()
    text = snapshot.export_text(header=EXPORT_HEADER.format(version=snapshot.version))
    broken = [r for r in snapshot.rules if r.rule is None]
    return _editor(text, snapshot.version, broken=broken)


@blueprint.route("/rules-file", methods=["POST"])
def rules_file_action() -> Any:
    """Validate the draft, or (admins) import it / replace the stored rule set with it."""
    action = request.form.get("action", "validate")
    if action not in ACTIONS:
        abort(400)
    user = current_user()
    if action != "validate" and (user is None or not user.is_admin):
        abort(403)
    text = request.form.get(FIELD, "")
    services = _services()
    store = services.rules
    replace = action == "replace"
    try:
        draft = _parse(text, replace=replace)
    except RulesFileError as exc:
        return _editor(text, store.version(), problems=exc.problems, checked_as=action), 400
    if action == "validate":
        return _validated(text, draft, replace=False)
    base = request.form.get("base_version", "")
    current = store.version()
    if base != str(current):
        notice = (
            f"The stored rule set changed since this page was loaded (now version {current}): "
            "nothing was stored. Review what would change below, then press the button again."
        )
        return _validated(text, draft, replace=replace, notice=notice, status=409)
    assert user is not None
    try:
        summary = store.import_rules(
            draft,
            replace=replace,
            actor=f"console:{user.name}",
            command="console: rules import" + (" --replace" if replace else ""),
        )
    except RulesFileError as exc:
        return _editor(text, current, problems=exc.problems, checked_as=action), 400
    verb = "Replaced the rule set" if replace else "Imported the rules file"
    flash(f"{verb}: " + "; ".join(summary_lines(summary)) + ".")
    return cast(Response, redirect(url_for("console.rules")))


def _options() -> tuple[Sequence[str], Mapping[str, str], Mapping[str, str]]:
    """The serving process's secret variables, read-only variables and environment."""
    settings = _services().settings
    if settings is None:
        return DEFAULT_SECRET_VARS, {}, {}
    return settings.secret_vars, settings.read_only_vars, settings.environment


def _parse(text: str, *, replace: bool) -> RulesFile:
    secret_vars, read_only_vars, _ = _options()
    return parse_for_store(
        text, _services().rules, replace=replace, secret_vars=secret_vars, read_only_vars=read_only_vars
    )


def _validated(
    text: str, draft: RulesFile, *, replace: bool, notice: str | None = None, status: int = 200
) -> Any:
    """The editor for ``draft`` (``text`` validated with ``replace`` or not): its warnings and what
    Import and Replace all would each change (the other mode's validation is run here)."""
    services = _services()
    secret_vars, read_only_vars, environment = _options()
    previews: list[tuple[str, ImportPreview | None, Sequence[Problem]]] = []
    for mode, label in ((False, "Import"), (True, "Replace all")):
        try:
            checked = draft if mode == replace else _parse(text, replace=mode)
            preview = preview_import(
                services.database,
                checked,
                replace=mode,
                source="the draft",
                whatif_limit=WHATIF_LIMIT,
                read_only_vars=read_only_vars,
            )
        except RulesFileError as exc:
            previews.append((label, None, located(text, exc.problems)))
            continue
        previews.append((label, preview, ()))
    page = _editor(
        text,
        services.rules.version(),
        valid=draft,
        warnings=[
            *draft_warnings(draft, environment, secret_vars),
            *(otp_problems(services.settings, draft.channels, draft.templates) if services.settings else ()),
        ],
        previews=previews,
        notice=notice,
    )
    return page, status


def located(text: str, problems: Sequence[RuleProblem]) -> list[Problem]:
    """``problems`` with the text of the draft's line each names."""
    lines = text.splitlines()
    return [
        Problem(p, lines[p.line - 1] if p.line is not None and 0 < p.line <= len(lines) else None)
        for p in problems
    ]


def _editor(
    text: str,
    version: int,
    *,
    problems: Sequence[RuleProblem] = (),
    checked_as: str = "validate",
    broken: Sequence[StoredRule] = (),
    valid: RulesFile | None = None,
    warnings: Sequence[RuleProblem] = (),
    previews: Sequence[tuple[str, ImportPreview | None, Sequence[Problem]]] = (),
    notice: str | None = None,
) -> str:
    return _page(
        "rules_file.html",
        "Edit the rules file",
        text=text,
        field=FIELD,
        version=version,
        problems=located(text, problems),
        checked_as=checked_as,
        broken=broken,
        valid=valid,
        warnings=warnings,
        previews=previews,
        notice=notice,
        whatif_limit=WHATIF_LIMIT,
    )
