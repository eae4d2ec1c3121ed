"""The console's **Test a call** page: what ``st-provider rules test`` shows, in a form.

Pick an operation (or the rules-only ``RequestSignInCode``: who may get a sign-in code), give its input variables as ``name=value`` lines (pre-filled per operation
from the help page's :data:`provider.web.operations.DOCS`), optionally a directory user; the
page shows each stored rule's outcome in order, the answer SmarterTrack would get and the
notifications the rules rendered (never sent). It runs :func:`provider.rules.trial.trial_call`,
the function ``rules test`` runs, so the two cannot disagree.

Viewers may use it (it changes nothing), but it is a ``POST`` with the CSRF token, not a ``GET``
form: the variables (addresses, ticket subjects, or a password typed by mistake) then stay out of
URLs, access logs, browser history and ``Referer`` headers. No password is ever asked for or shown:
``authPW`` and ``loginPassword`` lines are dropped and other password-like names have their value
blanked, each with a note (a login is evaluated as if the password were right).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from flask import request

from provider.domain import Method, Operation, RulesMethod
from provider.errors import ConfigError, DirectoryUnavailable
from provider.redact import is_secret_name, is_secret_variable
from provider.rules.engine import ERROR, MATCHED, NO_MATCH
from provider.rules.trial import TrialReport, parse_operation, trial_call, variable_pairs
from provider.web.console.app import current_user
from provider.web.console.views import OPERATIONS, _page, _services, blueprint
from provider.web.operations import DOCS

log = logging.getLogger("provider.web.console")

TITLE = "Test a call"
MAX_LINES = 200
#: Example values for the documented input variables (an empty value is what SmarterTrack sends
#: for an anonymous visitor); names with a placeholder part (``cf_name``) are left out.
EXAMPLES = {
    "loginUsername": "",
    "emailFrom": "customer@example.com",
    "departmentName": "Support",
    "location": "PRE",
    "subject": "Printer out of toner",
    "ticketNumber": "ABC-12345",
    "username": "",
    "email": "customer@example.com",
    "brandName": "",
    "groupName": "",
    "interactionType": "Ticket",
    "eventType": "502000",
}
_EXTRA = {Operation.NOTIFY_EVENT_FIRED: ("args_ticketNumber=ABC-12345", "args_subject=Printer out of toner")}
OUTCOME_CLASSES = {MATCHED: "ok", ERROR: "bad", NO_MATCH: "muted"}


def default_variables(operation: Method) -> str:
    """The ``name=value`` lines a test of ``operation`` starts from (no password variable)."""
    if operation is RulesMethod.REQUEST_SIGN_IN_CODE:
        return "address=customer@example.com"
    lines = [
        f"{v.name}={EXAMPLES.get(v.name, '')}"
        for v in DOCS[operation].variables
        if not is_secret_variable(v.name) and v.name in EXAMPLES
    ]
    return "\n".join([*lines, *_EXTRA.get(operation, ())])


@dataclass
class TestForm:
    """What was submitted, cleaned of passwords, and the problems found at each field."""

    operation: Method
    variables: str
    user: str = ""
    notes: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    pairs: list[tuple[str, str]] = field(default_factory=list)


def read_form(form: Any) -> TestForm:
    """The submitted test: operation, variable lines (passwords removed, see the module), user."""
    try:
        operation = parse_operation(str(form.get("operation", "")))
    except ConfigError:
        return TestForm(Operation.START_TICKET, "", errors={"operation": "Choose one of the operations."})
    parsed = TestForm(operation, "", user=str(form.get("user", "")).strip()[:255])
    kept: list[str] = []
    lines = str(form.get("variables", "")).replace("\r\n", "\n").split("\n")
    if len(lines) > MAX_LINES:
        parsed.errors["variables"] = f"At most {MAX_LINES} lines."
        lines = lines[:MAX_LINES]
    for given in lines:
        if not given.strip():
            continue
        name = given.split("=", 1)[0].strip()
        line = given
        if is_secret_variable(name):
            parsed.notes.append(
                f"{name} was removed: rules never see passwords; a login is tested as if the password were right."
            )
            continue
        if is_secret_name(name) and "=" in line:
            line = f"{name}="
            parsed.notes.append(f"The value of {name} was blanked: this page never takes a password.")
        kept.append(line)
        try:
            parsed.pairs.extend(variable_pairs([line]))
        except ConfigError:
            parsed.errors.setdefault("variables", f"Line {len(kept)} is not name=value.")
    parsed.variables = "\n".join(kept)
    return parsed


@blueprint.route("/test-call", methods=["GET", "POST"])
def test_call() -> Any:
    """The form (``?operation=NAME`` pre-fills that operation's variables); a POST runs the test."""
    if request.method == "GET":
        try:
            operation = parse_operation(request.args.get("operation") or Operation.START_TICKET.value)
        except ConfigError:
            operation = Operation.START_TICKET
        return _render(TestForm(operation, default_variables(operation)))
    form = read_form(request.form)
    if form.errors:
        return _render(form), 400
    services = _services()
    assert services.settings is not None, "the console was built without settings"
    try:
        report = trial_call(
            services.settings,
            services.database,
            form.operation,
            form.pairs,
            authenticator=services.authenticator,
            user=form.user or None,
        )
    except ConfigError as exc:
        field_name = (
            "variables" if form.operation is RulesMethod.REQUEST_SIGN_IN_CODE and not form.user else "user"
        )
        form.errors[field_name] = str(exc).replace("--user needs", "A directory user needs")
        return _render(form), 400
    except DirectoryUnavailable:
        form.errors["user"] = "The directory did not answer: the user could not be looked up."
        return _render(form), 503
    user = current_user()
    log.info(
        "console test call",
        extra={
            "event": "console.test_call",
            "user": user.name if user else None,
            "operation": form.operation.value,
            "matched": list(report.matched),
        },
    )
    return _render(form, report)


def _render(form: TestForm, report: TrialReport | None = None) -> str:
    return _page(
        "test_call.html",
        TITLE,
        form=form,
        report=report,
        operations=[*OPERATIONS, *(m.value for m in RulesMethod)],
        outcome_classes=OUTCOME_CLASSES,
    )
