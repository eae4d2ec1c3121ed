"""The console's pages (routes of the ``console`` blueprint); the nav is :data:`.pages.PAGES`.

Each view gathers its data through :class:`~.services.ConsoleServices` (the stores and reports
the CLI commands use) and renders one template under ``templates/admin/``.
"""

from __future__ import annotations

import argparse
import logging
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

from provider.client_address import client_address
from provider.domain import Operation
from provider.errors import DirectoryUnavailable, ProviderError, RuleNotFound, StorageError
from provider.events.commands import _since, _until
from provider.events.reports import deliveries_by_channel, queue_stats
from provider.journal import latency, queries
from provider.journal.entry import OUTCOMES
from provider.rules import versions
from provider.web.console.app import admin_only, current_user, start_session
from provider.web.console.charts import bar_chart
from provider.web.console.pages import PAGES
from provider.web.console.services import ConsoleServices

log = logging.getLogger("provider.web.console")

blueprint = Blueprint("console", __name__)

OPERATIONS = tuple(op.value for op in Operation)
CALLS_LIMIT = 200


def _services() -> ConsoleServices:
    return cast(ConsoleServices, current_app.extensions["console_services"])


def _page(template: str, title: str, **context: Any) -> str:
    return render_template(f"admin/{template}", title=title, pages=PAGES, **context)


@blueprint.route("/signin", methods=["GET", "POST"])
def sign_in() -> Any:
    """The sign-in form; with no admin configured, how to create one (and no form)."""
    services = _services()
    if not services.sign_in.admin_configured():
        return _page("setup.html", "Set up the console"), 403
    error = None
    username = ""
    if request.method == "POST":
        username = request.form.get("username", "")
        password = request.form.get("password", "")
        client = client_address(request.environ, current_app.config["TRUSTED_PROXIES"])
        try:
            user = services.sign_in.sign_in(username, password, client=client)
        except (StorageError, DirectoryUnavailable):
            user, error = None, "Sign-in is unavailable right now (database or directory). Try again shortly."
        if user is not None:
            start_session(user, services.clock())
            log.info(
                "console sign-in", extra={"event": "console.sign_in", "user": user.name, "role": user.role}
            )
            return redirect(url_for("console.overview"))
        log.warning("console sign-in refused", extra={"event": "console.sign_in_refused", "client": client})
        error = error or "Wrong username or password, or no console access."
    status = 401 if error else 200
    return _page("signin.html", "Sign in", error=error, username=username[:255]), status


@blueprint.route("/signout", methods=["POST"])
def sign_out() -> Response:
    """End the session (a POST with the CSRF token, like every change)."""
    session.clear()
    return cast(Response, redirect(url_for("console.sign_in")))


@blueprint.route("/")
def overview() -> str:
    services = _services()
    now = datetime.now(UTC)
    checks = {"database": services.database.ping, **services.readiness}
    health = {name: bool(check()) for name, check in checks.items()}
    counts = queries.calls_per_operation(services.database, since=now - timedelta(hours=1))
    p95 = latency.p95_per_operation(services.database, since=now - timedelta(hours=1))
    calls_chart = bar_chart([(c.operation, c.calls, c.failures) for c in counts])
    queue = queue_stats(services.database, now)
    channels = deliveries_by_channel(services.database)
    channel_chart = bar_chart(
        [(name, sum(by.values()), by.get("failed", 0)) for name, by in channels.items()]
    )
    latest = versions.list_versions(services.database, limit=1)
    return _page(
        "overview.html",
        "Overview",
        health=health,
        rules_version=services.rules.version(),
        rules_changed=latest[0] if latest else None,
        calls=counts,
        p95=p95,
        calls_chart=calls_chart,
        queue=queue,
        channels=channels,
        channel_chart=channel_chart,
    )


@blueprint.route("/rules")
def rules() -> str:
    services = _services()
    snapshot = services.rules.snapshot()
    ordered = sorted(snapshot.rules, key=lambda r: (r.priority, r.position))
    return _page(
        "rules.html",
        "Rules",
        version=snapshot.version,
        rules=ordered,
        versions=versions.list_versions(services.database, limit=20),
    )


@blueprint.route("/rules/state", methods=["POST"])
@admin_only
def rule_state() -> Response:
    """Enable or disable one rule (``name``, ``enabled=yes|no``), audited with the admin as actor."""
    name = request.form.get("name", "")
    enabled = request.form.get("enabled") == "yes"
    user = current_user()
    assert user is not None  # admin_only
    try:
        version, changed = _services().rules.set_enabled(
            name,
            enabled,
            actor=f"console:{user.name}",
            command="console: rules " + ("enable" if enabled else "disable"),
        )
    except RuleNotFound:
        abort(404)
    state = "enabled" if enabled else "disabled"
    flash(
        f"Rule {name!r} {state}; rule set version {version}."
        if changed
        else f"Rule {name!r} was already {state}."
    )
    return cast(Response, redirect(url_for("console.rules")))


@blueprint.route("/calls")
def calls() -> Any:
    """The journal's newest calls with the filters of ``calls list``."""
    args = request.args
    errors: dict[str, str] = {}
    filters = queries.CallFilter(
        operation=_choice(args.get("operation"), OPERATIONS),
        outcome=_choice(args.get("outcome"), OUTCOMES),
        user=(args.get("user") or "").strip() or None,
        since=_when(args.get("since"), "since", errors),
        until=_when(args.get("until"), "until", errors),
    )
    rows = [] if errors else queries.list_calls(_services().database, filters, limit=CALLS_LIMIT)
    page = _page(
        "calls.html",
        "Calls",
        rows=rows,
        filters=filters,
        form=args,
        errors=errors,
        operations=OPERATIONS,
        outcomes=OUTCOMES,
        limit=CALLS_LIMIT,
    )
    return (page, 400) if errors else page


def _number(value: str | None, field: str, errors: dict[str, str]) -> int | None:
    if not value or not value.strip():
        return None
    try:
        return int(value.strip())
    except ValueError:
        errors[field] = "Not a whole number."
        return None


def _choice(value: str | None, options: tuple[str, ...]) -> str | None:
    return value if value in options else None


def _when(value: str | None, field: str, errors: dict[str, str]) -> datetime | None:
    if not value or not value.strip():
        return None
    try:
        return _since(value) if field == "since" else _until(value)
    except argparse.ArgumentTypeError:
        errors[field] = "Not an ISO 8601 date or time (for example 2026-11-30 or 2026-11-30T12:00)."
        return None


@blueprint.errorhandler(ProviderError)
def provider_error(exc: ProviderError) -> tuple[str, int]:
    log.warning("console page failed", extra={"event": "console.error", "error": type(exc).__name__})
    return _page(
        "error.html", "Unavailable", message="The database could not answer. Try again shortly."
    ), 503
