"""The console's Events and Deliveries pages without a browser, and the reports behind them.

Real WSGI application on SQLite and PostgreSQL (werkzeug's test client), deliveries made
by the real rules (a template recorded) and outbox: detail pages, Retry now / Send again
(effects, audit, CSRF, viewers), paging, CSV (the CLI's, defused), the p95 latency of the
overview, and the CLI's ``--template`` / ``summary --by template`` / ``resend``.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update
from werkzeug.exceptions import NotFound
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.test import Client

from provider.app import build_application
from provider.auth.local import ADMIN, VIEWER
from provider.db.events import DELIVERED, FAILED, PENDING, DeliveryAttempt, DeliveryAudit, DeliveryRecord
from provider.db.journal import CallJournalRecord
from provider.db.session import Database
from provider.domain import IncomingEvent, Notification, Operation
from provider.errors import ProviderError
from provider.events import manual
from provider.events.export import csv_text
from provider.events.outbox import Outbox
from provider.events.reports import DeliveryFilter, get_delivery, list_deliveries
from provider.events.summary import summarise
from provider.journal.latency import p95_per_operation
from provider.rules.evaluator import StoredRules
from provider.rules.loader import parse_rules
from provider.rules.store import RuleStore
from provider.variables import InputVariables
from provider.web.console.app import build_console
from provider.web.console.services import ConsoleServices
from provider.web.console.signin import ConsoleSignIn
from tests.integration.test_console import HOSTILE, FakeClock, add_user, csrf, settings, sign_in
from tests.integration.test_worker_reports import Cli
from tests.support import base_env

RULES = """\
channels:
  hook: {type: webhook, url: "http://127.0.0.1:9/events"}
  mail: {type: email, host: 127.0.0.1, port: 2525, from: helpdesk@example.org, starttls: false}
templates:
  ticket-hook:
    kind: webhook
    body: {ticket: "{{ ticketNumber }}", subject: "{{ subject }}"}
rules:
  - name: tell
    method: NotifyEventFired
    then:
      notify:
        - {channel: hook, template: ticket-hook}
        - {channel: mail, to: "{{ email }}", subject: "Ticket {{ ticketNumber }}", text: "{{ subject }}"}
"""


@pytest.fixture
def store(database: Database) -> RuleStore:
    """The rules of this module (the console's ``client`` fixture imports them)."""
    store = RuleStore(database)
    store.import_rules(parse_rules(RULES), replace=True, actor="test", command="test")
    return store


@pytest.fixture
def client(database_url: str, database: Database, store: RuleStore) -> Iterator[Client]:
    """The real application with an admin ``root`` and a viewer ``watcher`` (as test_console's)."""
    add_user(database, "root", ADMIN)
    add_user(database, "watcher", VIEWER)
    yield Client(build_application(settings(database_url), database=database))


def notify(database: Database, store: RuleStore, ticket: str, *, email: str = "ann@example.org") -> int:
    """One NotifyEventFired call through the stored rules into the outbox; the event id."""
    call = InputVariables(
        [("eventType", "502000"), ("ticketNumber", ticket), ("subject", "Printer"), ("email", email)]
    )
    decision = StoredRules(store, refresh_seconds=60).evaluate(Operation.NOTIFY_EVENT_FIRED, call, None)
    event = IncomingEvent(
        event_type=502000,
        event_name="Ticket Created",
        arguments={"ticket": ticket},
        variables=call.pairs,
        received_at=datetime.now(UTC),
        fingerprint=f"fp-{ticket}",
    )
    return Outbox(database).accept(event, decision.notifications).event_id


def set_outcome(database: Database, channel: str, status: str, error: str | None = None) -> int:
    """Mark the newest delivery of ``channel`` as ``status`` with one attempt; its id."""
    now = datetime.now(UTC)
    with database.session() as session:
        record = session.scalars(
            select(DeliveryRecord).where(DeliveryRecord.channel == channel).order_by(DeliveryRecord.id.desc())
        ).first()
        assert record is not None
        record.status, record.attempts, record.last_error = status, 1, error
        record.last_status = 200 if status == DELIVERED else 502
        record.finished_at = now if status in (DELIVERED, FAILED) else None
        session.add(
            DeliveryAttempt(
                delivery_id=record.id,
                number=1,
                started_at=now,
                duration=0.25,
                outcome="delivered" if status == DELIVERED else "failed",
                http_status=record.last_status,
                partner_id="P-1" if status == DELIVERED else None,
                error=error,
                worker="w1",
            )
        )
        return record.id


def audit_rows(database: Database) -> list[tuple[str, str, int, int | None]]:
    with database.session() as session:
        return [
            (a.actor, a.action, a.delivery_id, a.new_delivery_id)
            for a in session.scalars(select(DeliveryAudit).order_by(DeliveryAudit.id))
        ]


def statuses(database: Database) -> dict[int, str]:
    with database.session() as session:
        return {i: s for i, s in session.execute(select(DeliveryRecord.id, DeliveryRecord.status))}


def test_the_template_is_recorded_and_filters_by_template_and_kind(
    database: Database, store: RuleStore, client: Client
) -> None:
    notify(database, store, "T-1")
    [mail, hook] = list_deliveries(database, DeliveryFilter())
    assert (hook.channel, hook.template) == ("hook", "ticket-hook")
    assert (mail.channel, mail.template) == ("mail", None)
    assert [d.channel for d in list_deliveries(database, DeliveryFilter(template="ticket-hook"))] == ["hook"]
    assert [d.channel for d in list_deliveries(database, DeliveryFilter(kind="email"))] == ["mail"]
    by_template = {r.group: r.total for r in summarise(database, by="template")}
    assert by_template == {"(none)": 1, "ticket-hook": 1}

    sign_in(client, "watcher")
    page = client.get("/admin/deliveries?template=ticket-hook").get_data(as_text=True)
    assert f'aria-label="Delivery {hook.id}"' in page and f'aria-label="Delivery {mail.id}"' not in page
    page = client.get("/admin/deliveries?kind=email").get_data(as_text=True)
    assert f'aria-label="Delivery {mail.id}"' in page and f'aria-label="Delivery {hook.id}"' not in page
    set_outcome(database, "mail", "suppressed")
    page = client.get("/admin/deliveries?status=suppressed").get_data(as_text=True)
    assert f'aria-label="Delivery {mail.id}"' in page and f'aria-label="Delivery {hook.id}"' not in page


def test_the_cli_lists_and_summarises_by_template_and_resends(
    database_url: str, database: Database, store: RuleStore, capsys: pytest.CaptureFixture[str]
) -> None:
    notify(database, store, "T-2")
    delivered = set_outcome(database, "hook", DELIVERED)
    cli = Cli(base_env(database_url), capsys)
    code, out, err = cli("deliveries", "list", "--template", "ticket-hook", "--format", "json")
    assert code == 0, err
    assert [(r["id"], r["template"]) for r in json.loads(out)] == [(delivered, "ticket-hook")]
    code, out, err = cli("deliveries", "summary", "--by", "template", "--format", "csv")
    assert code == 0, err
    assert [(r["group"], r["total"], r["delivered"]) for r in csv.DictReader(io.StringIO(out))] == [
        ("(none)", "1", "0"),
        ("ticket-hook", "1", "1"),
    ]
    code, out, err = cli("deliveries", "resend", str(delivered), "--actor", "alice")
    assert code == 0, err
    new_id = int(out.split()[-1])
    copy = get_delivery(database, new_id)
    assert (copy.delivery.status, copy.delivery.template, copy.delivery.event_id) == (
        PENDING,
        "ticket-hook",
        get_delivery(database, delivered).delivery.event_id,
    )
    assert audit_rows(database) == [("alice", "resend", delivered, new_id)]
    code, _, err = cli("deliveries", "resend", str(new_id))
    assert code == 1 and "only delivered deliveries" in err


def test_retry_now_and_send_again_change_what_they_say_and_are_audited(
    database: Database, store: RuleStore, client: Client
) -> None:
    notify(database, store, "T-3")
    failed = set_outcome(database, "hook", FAILED, "partner said no")
    delivered = set_outcome(database, "mail", DELIVERED)
    sign_in(client, "root")

    page = client.get(f"/admin/deliveries/{failed}")
    html = page.get_data(as_text=True)
    assert "Retry now" in html and "Send again" not in html
    response = client.post(f"/admin/deliveries/{failed}/retry", data={"csrf_token": csrf(page)})
    assert response.status_code == 302 and response.headers["Location"].endswith(
        f"/admin/deliveries/{failed}"
    )
    retried = get_delivery(database, failed).delivery
    assert (retried.status, retried.attempts, retried.finished_at) == (PENDING, 0, None)
    shown = client.get(f"/admin/deliveries/{failed}").get_data(as_text=True)
    assert "queued again" in shown and "console:root" in shown

    page = client.get(f"/admin/deliveries/{delivered}")
    assert "Send again" in page.get_data(as_text=True) and "Retry now" not in page.get_data(as_text=True)
    response = client.post(f"/admin/deliveries/{delivered}/resend", data={"csrf_token": csrf(page)})
    assert response.status_code == 302
    new_id = int(response.headers["Location"].rsplit("/", 1)[1])
    original, copy = get_delivery(database, delivered), get_delivery(database, new_id)
    assert original.delivery.status == DELIVERED and len(original.attempts) == 1
    assert (copy.delivery.status, copy.delivery.channel, copy.delivery.recipient) == (
        PENDING,
        "mail",
        "ann@example.org",
    )
    assert copy.params == original.params and copy.key != original.key and copy.attempts == ()
    copy_page = client.get(f"/admin/deliveries/{new_id}").get_data(as_text=True)
    assert f'href="/admin/deliveries/{delivered}"' in copy_page and f"{new_id} (this one)" in copy_page
    assert audit_rows(database) == [
        ("console:root", "retry", failed, None),
        ("console:root", "resend", delivered, new_id),
    ]

    # Send again on a pending one is refused (said on the page), nothing changes.
    before = statuses(database)
    token = csrf(client.get(f"/admin/deliveries/{new_id}"))
    response = client.post(f"/admin/deliveries/{new_id}/resend", data={"csrf_token": token})
    assert response.status_code == 302
    assert "Not sent again" in client.get(f"/admin/deliveries/{new_id}").get_data(as_text=True)
    assert statuses(database) == before and len(audit_rows(database)) == 2
    assert client.post("/admin/deliveries/999999/retry", data={"csrf_token": token}).status_code == 404


def test_without_the_token_or_as_a_viewer_nothing_changes(
    database: Database, store: RuleStore, client: Client
) -> None:
    notify(database, store, "T-4")
    failed = set_outcome(database, "hook", FAILED, "down")
    delivered = set_outcome(database, "mail", DELIVERED)
    before = statuses(database)
    sign_in(client, "root")
    for path in (f"/admin/deliveries/{failed}/retry", f"/admin/deliveries/{delivered}/resend"):
        assert client.post(path).status_code == 403
        assert client.post(path, data={"csrf_token": "forged"}).status_code == 403
    client.post("/admin/signout", data={"csrf_token": csrf(client.get("/admin/"))})

    sign_in(client, "watcher")
    page = client.get(f"/admin/deliveries/{failed}")
    assert page.status_code == 200 and "Retry now" not in page.get_data(as_text=True)
    token = csrf(page)  # the viewer's own valid token
    for path in (f"/admin/deliveries/{failed}/retry", f"/admin/deliveries/{delivered}/resend"):
        assert client.post(path, data={"csrf_token": token}).status_code == 403
    assert statuses(database) == before
    assert audit_rows(database) == []


def test_detail_pages_escape_and_redact_the_partner_answer_and_link_each_other(
    database: Database, store: RuleStore, client: Client
) -> None:
    event_id = notify(database, store, "T-5", email=f"x{HOSTILE}@example.org")
    failed = set_outcome(database, "hook", FAILED, f"502 {HOSTILE} token=s3cr3t-value")
    with database.session() as session:
        session.execute(
            update(DeliveryRecord).where(DeliveryRecord.id == failed).values(params={"api_key": "k-123"})
        )
    sign_in(client, "watcher")
    html = client.get(f"/admin/deliveries/{failed}").get_data(as_text=True)
    assert f"<h1>Delivery {failed}</h1>" in html
    assert HOSTILE not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "s3cr3t-value" not in html and "token=[redacted]" in html
    assert "k-123" not in html
    assert f'href="/admin/events/{event_id}"' in html

    event_page = client.get(f"/admin/events/{event_id}").get_data(as_text=True)
    assert f"<h1>Event {event_id}</h1>" in event_page and "Ticket Created" in event_page
    assert HOSTILE not in event_page
    linked = {int(n) for n in re.findall(r'href="/admin/deliveries/(\d+)"', event_page)}
    assert linked == {d.id for d in list_deliveries(database, DeliveryFilter(event_id=event_id))}
    events_list = client.get("/admin/events").get_data(as_text=True)
    assert f'href="/admin/events/{event_id}"' in events_list
    assert client.get("/admin/events/999999").status_code == 404
    assert client.get("/admin/deliveries/999999").status_code == 404


def test_paging_keeps_the_filters(database: Database, store: RuleStore, client: Client) -> None:
    notes = [Notification(rule="r", channel="hook", params={"to": f"+1555{i:07d}"}) for i in range(60)]
    notes.append(Notification(rule="r", channel="mail", params={"to": "ann@example.org"}))
    event = IncomingEvent(502000, "Ticket Created", {}, (), datetime.now(UTC), "fp-paging")
    Outbox(database).accept(event, notes)
    sign_in(client, "watcher")
    first = client.get("/admin/deliveries?channel=hook&status=pending").get_data(as_text=True)
    ids_first = re.findall(r'aria-label="Delivery (\d+)"', first)
    assert len(ids_first) == 50
    older = re.search(r'<a href="([^"]+)" rel="next">Older</a>', first)
    assert older is not None and 'rel="prev"' not in first
    url = older.group(1).replace("&amp;", "&")
    assert "channel=hook" in url and "status=pending" in url and "page=2" in url
    second = client.get(url).get_data(as_text=True)
    ids_second = re.findall(r'aria-label="Delivery (\d+)"', second)
    assert len(ids_second) == 10 and not set(ids_first) & set(ids_second)
    assert 'rel="next"' not in second and 'rel="prev">Newer</a>' in second
    events_page = client.get("/admin/events?page=2").get_data(as_text=True)
    assert "No events match on page 2" in events_page


def test_csv_download_is_the_clis_csv_of_the_filter_and_defused(
    database_url: str,
    database: Database,
    store: RuleStore,
    client: Client,
    capsys: pytest.CaptureFixture[str],
) -> None:
    notify(database, store, "T-6")
    notify(database, store, "T-7", email='=HYPERLINK("http://evil")@example.org')
    notes = [Notification(rule="r", channel="sms", params={"to": "+15550100"})]
    Outbox(database).accept(IncomingEvent(1, "x", {}, (), datetime.now(UTC), "fp-sms"), notes)
    sign_in(client, "watcher")
    response = client.get("/admin/deliveries.csv?channel=mail")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"] == 'attachment; filename="deliveries.csv"'
    body = response.get_data(as_text=True)
    cli = Cli(base_env(database_url), capsys)
    code, out, err = cli("deliveries", "list", "--channel", "mail", "--format", "csv")
    assert code == 0, err
    assert body == out == csv_text(list_deliveries(database, DeliveryFilter(channel="mail")))
    rows = list(csv.DictReader(io.StringIO(body)))
    assert [r["recipient"] for r in rows] == ['\'=HYPERLINK("http://evil")@example.org', "ann@example.org"]
    sms_rows = list(
        csv.DictReader(io.StringIO(client.get("/admin/deliveries.csv?channel=sms").get_data(as_text=True)))
    )
    assert [r["recipient"] for r in sms_rows] == ["+15550100"]  # a phone number stays a number
    page = client.get("/admin/deliveries?channel=mail").get_data(as_text=True)
    assert 'href="/admin/deliveries.csv?channel=mail"' in page


def test_p95_latency_per_operation_on_known_data(database: Database, client: Client) -> None:
    now = datetime.now(UTC)

    def call(operation: str, duration: float, at: datetime) -> CallJournalRecord:
        return CallJournalRecord(
            at=at,
            operation=operation,
            request_id="r",
            duration_ms=duration,
            outcome="ok",
            variables=[],
            matched=[],
        )

    with database.session() as session:
        session.add_all(call("Authenticate", float(d), now - timedelta(minutes=5)) for d in range(100, 0, -1))
        session.add_all(call("GetUserDetails", float(d), now - timedelta(minutes=5)) for d in range(1, 21))
        session.add(call("StartTicket", 7.5, now - timedelta(minutes=1)))
        session.add(call("StartTicket", 9999.0, now - timedelta(hours=2)))  # outside the hour
    # nearest rank: the value at rank ceil(0.95 n): 95 of 1..100, 19 of 1..20, the only one of one
    assert p95_per_operation(database, since=now - timedelta(hours=1)) == {
        "Authenticate": 95.0,
        "GetUserDetails": 19.0,
        "StartTicket": 7.5,
    }
    with database.session() as session:
        assert session.scalar(select(func.count()).select_from(CallJournalRecord)) == 122
    sign_in(client, "watcher")
    overview = client.get("/admin/").get_data(as_text=True)
    assert "p95 latency (ms)" in overview
    row = re.search(
        r"<td>Authenticate</td><td class=\"num\">100</td><td class=\"num\">0</td><td class=\"num\">([\d.]+)</td>",
        overview,
    )
    assert row is not None and row.group(1) == "95.0"


def test_retry_now_accepts_pending_and_failed_only(database: Database, store: RuleStore) -> None:
    notify(database, store, "T-8")
    pending = list_deliveries(database, DeliveryFilter(channel="hook"))[0].id
    delivered = set_outcome(database, "mail", DELIVERED)
    later = datetime.now(UTC) + timedelta(minutes=3)
    manual.retry_delivery(database, pending, actor="a", command="c", now=later)
    assert get_delivery(database, pending).delivery.next_attempt_at == later
    with pytest.raises(ProviderError, match="only failed or pending"):
        manual.retry_delivery(database, delivered, actor="a", command="c")
    assert audit_rows(database) == [("a", "retry", pending, None)]


def test_an_expired_session_says_so_on_the_sign_in_page(database: Database, store: RuleStore) -> None:
    add_user(database, "root", ADMIN)
    clock = FakeClock()
    services = ConsoleServices(
        database=database,
        sign_in=ConsoleSignIn.from_settings(settings("sqlite://"), database, None),
        clock=clock,
    )
    console = Client(
        DispatcherMiddleware(
            NotFound(), {"/admin": build_console(services, secret="s" * 32, idle_seconds=60)}
        )
    )
    assert sign_in(console, "root").status_code == 302
    clock.now += 61
    response = console.get("/admin/deliveries")
    assert response.status_code == 302 and response.headers["Location"].endswith("/admin/signin")
    assert "Your session ended" in console.get("/admin/signin").get_data(as_text=True)
