"""The console's Events and Deliveries pages (routes added to the ``console`` blueprint).

- ``/events`` and ``/deliveries``: the tables of ``events list`` / ``deliveries list`` with
  their filters (deliveries also by message kind, template and ``suppressed`` status),
  paged by :data:`PAGE_SIZE` (``?page=N``; the pager's links keep the filters).
- ``/deliveries.csv``: the current filter as the CSV ``deliveries list --format csv``
  prints (:func:`provider.events.export.csv_text`), at most :data:`CSV_LIMIT` rows.
- ``/events/<id>``: what ``events show`` shows, and the event's deliveries (linked).
- ``/deliveries/<id>``: what ``deliveries show`` shows: every attempt with the partner's
  answer (redacted again with :func:`provider.redact.redact` before it is shown) and the
  manual actions taken on it.
- ``POST /deliveries/<id>/retry`` (**Retry now**, failed or pending) and
  ``POST /deliveries/<id>/resend`` (**Send again**, delivered: a new delivery): admins only,
  CSRF-checked by the app, the functions ``deliveries retry`` / ``deliveries resend`` call
  (:mod:`provider.events.manual`), audited as ``console:NAME``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, cast

from flask import Response, abort, flash, redirect, request, url_for
from werkzeug.datastructures import MultiDict

from provider.channels.specs import MESSAGE_KINDS
from provider.db.events import STATUSES
from provider.errors import DeliveryNotFound, ProviderError, StorageError
from provider.events import manual
from provider.events.export import csv_text
from provider.events.reports import DeliveryFilter, get_delivery, list_deliveries, list_events
from provider.redact import REDACTED, is_secret_name, redact
from provider.web.console.app import admin_only, current_user
from provider.web.console.views import _choice, _number, _page, _services, _when, blueprint

PAGE_SIZE = 50
CSV_LIMIT = 10_000


def page_number(args: Mapping[str, str]) -> int:
    """The 1-based ``page`` argument (1 when absent or not a positive whole number)."""
    raw = (args.get("page") or "").strip()
    return int(raw) if raw.isdigit() and 0 < int(raw) < 1_000_000 else 1


def _kept(args: MultiDict[str, str]) -> dict[str, Any]:
    """The query's non-empty filters (not the page), for links that keep them."""
    return {k: v for k, v in args.items() if k != "page" and v}


def page_links(endpoint: str, args: MultiDict[str, str], page: int, more: bool) -> dict[str, str | None]:
    """URLs of the newer and older pages with the same filters (``None`` where there is none)."""
    kept = _kept(args)

    def link(number: int) -> str:
        values = {**kept, "page": str(number)} if number > 1 else kept
        return url_for(endpoint, **values)

    return {"newer": link(page - 1) if page > 1 else None, "older": link(page + 1) if more else None}


def _filters(args: Mapping[str, str], errors: dict[str, str]) -> DeliveryFilter:
    """The deliveries filter of the query string (unknown choices are ignored)."""
    return DeliveryFilter(
        status=_choice(args.get("status"), STATUSES),
        kind=_choice(args.get("kind"), MESSAGE_KINDS),
        template=(args.get("template") or "").strip() or None,
        channel=(args.get("channel") or "").strip() or None,
        event_type=_number(args.get("event_type"), "event_type", errors),
        recipient=(args.get("recipient") or "").strip() or None,
        since=_when(args.get("since"), "since", errors),
        until=_when(args.get("until"), "until", errors),
    )


@blueprint.route("/events")
def events() -> Any:
    """Stored events with the filters of ``events list`` (type, dates, rule errors), paged."""
    args = request.args
    errors: dict[str, str] = {}
    event_type = _number(args.get("event_type"), "event_type", errors)
    since = _when(args.get("since"), "since", errors)
    until = _when(args.get("until"), "until", errors)
    page = page_number(args)
    rows = (
        []
        if errors
        else list_events(
            _services().database,
            event_type=event_type,
            since=since,
            until=until,
            has_errors=args.get("has_errors") == "yes",
            limit=PAGE_SIZE + 1,
            offset=(page - 1) * PAGE_SIZE,
        )
    )
    more = len(rows) > PAGE_SIZE
    html = _page(
        "events.html",
        "Events",
        rows=rows[:PAGE_SIZE],
        form=args,
        errors=errors,
        page=page,
        first=(page - 1) * PAGE_SIZE + 1,
        pager=page_links("console.events", args, page, more),
    )
    return (html, 400) if errors else html


@blueprint.route("/deliveries")
def deliveries() -> Any:
    """Deliveries with the filters of ``deliveries list`` (status, kind, template, channel,
    type, recipient, dates), paged, with a CSV download of the same filter."""
    args = request.args
    errors: dict[str, str] = {}
    filters = _filters(args, errors)
    page = page_number(args)
    rows = (
        []
        if errors
        else list_deliveries(
            _services().database, filters, limit=PAGE_SIZE + 1, offset=(page - 1) * PAGE_SIZE
        )
    )
    more = len(rows) > PAGE_SIZE
    html = _page(
        "deliveries.html",
        "Deliveries",
        rows=rows[:PAGE_SIZE],
        filters=filters,
        form=args,
        errors=errors,
        statuses=STATUSES,
        kinds=MESSAGE_KINDS,
        page=page,
        first=(page - 1) * PAGE_SIZE + 1,
        pager=page_links("console.deliveries", args, page, more),
        csv_url=url_for("console.deliveries_csv", **_kept(args)),
        csv_limit=CSV_LIMIT,
    )
    return (html, 400) if errors else html


@blueprint.route("/deliveries.csv")
def deliveries_csv() -> Response:
    """The current filter's deliveries (newest first, at most :data:`CSV_LIMIT`) as CSV."""
    errors: dict[str, str] = {}
    filters = _filters(request.args, errors)
    if errors:
        abort(400)
    rows = list_deliveries(_services().database, filters, limit=CSV_LIMIT)
    return Response(
        csv_text(rows),
        mimetype="text/csv",
        headers={"Content-Disposition": 'attachment; filename="deliveries.csv"'},
    )


@blueprint.route("/events/<int:event_id>")
def event_detail(event_id: int) -> Any:
    """One event as ``events show`` shows it, with its deliveries."""
    database = _services().database
    found = list_events(database, event_id=event_id, limit=1)
    if not found:
        abort(404)
    deliveries = list_deliveries(database, DeliveryFilter(event_id=event_id), limit=1000)
    return _page("event.html", f"Event {event_id}", event=found[0], deliveries=deliveries)


def shown_params(params: Mapping[str, Any]) -> dict[str, str]:
    """A delivery's parameters as text for the page (JSON but for plain text), secret-named
    values replaced."""
    return {
        str(k): REDACTED
        if is_secret_name(str(k))
        else v
        if isinstance(v, str)
        else json.dumps(v, ensure_ascii=False, sort_keys=True, default=str)
        for k, v in params.items()
    }


@blueprint.route("/deliveries/<int:delivery_id>")
def delivery_detail(delivery_id: int) -> Any:
    """One delivery as ``deliveries show`` shows it: every attempt, and the manual actions."""
    database = _services().database
    try:
        detail = get_delivery(database, delivery_id)
    except DeliveryNotFound:
        abort(404)
    return _page(
        "delivery.html",
        f"Delivery {delivery_id}",
        d=detail.delivery,
        detail=detail,
        params=shown_params(detail.params),
        answers=[redact(a.error) for a in detail.attempts],
        audit=manual.audit_of(database, delivery_id),
        can_retry=detail.delivery.status in manual.RETRYABLE,
        can_resend=detail.delivery.status in manual.RESENDABLE,
    )


def _actor() -> str:
    user = current_user()
    assert user is not None  # admin_only ran first
    return f"console:{user.name}"


@blueprint.route("/deliveries/<int:delivery_id>/retry", methods=["POST"])
@admin_only
def delivery_retry(delivery_id: int) -> Response:
    """**Retry now**: the delivery is due at once (``deliveries retry ID``), audited."""
    try:
        manual.retry_delivery(
            _services().database,
            delivery_id,
            actor=_actor(),
            command=f"console: deliveries retry {delivery_id}",
        )
    except DeliveryNotFound:
        abort(404)
    except StorageError:
        raise  # the blueprint's error page (503)
    except ProviderError as exc:
        flash(f"Not retried: {exc}")
    else:
        flash(f"Delivery {delivery_id} queued again: due now.")
    return cast(Response, redirect(url_for("console.delivery_detail", delivery_id=delivery_id)))


@blueprint.route("/deliveries/<int:delivery_id>/resend", methods=["POST"])
@admin_only
def delivery_resend(delivery_id: int) -> Response:
    """**Send again**: a new delivery of the same notification (``deliveries resend ID``), audited."""
    try:
        new_id = manual.resend_delivery(
            _services().database,
            delivery_id,
            actor=_actor(),
            command=f"console: deliveries resend {delivery_id}",
        )
    except DeliveryNotFound:
        abort(404)
    except StorageError:
        raise  # the blueprint's error page (503)
    except ProviderError as exc:
        flash(f"Not sent again: {exc}")
        return cast(Response, redirect(url_for("console.delivery_detail", delivery_id=delivery_id)))
    flash(f"Delivery {delivery_id} sent again as delivery {new_id}.")
    return cast(Response, redirect(url_for("console.delivery_detail", delivery_id=new_id)))
