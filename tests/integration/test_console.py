"""The admin console without a browser: sign-in, sessions, CSRF, roles, headers, escaping.

The real WSGI application (``build_application``) on SQLite and PostgreSQL, driven by
werkzeug's test client; the idle-expiry test builds the console with an injected clock.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from sqlalchemy import select
from werkzeug.exceptions import NotFound
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.test import Client, TestResponse

from provider.app import build_application
from provider.auth.local import ADMIN, VIEWER, LocalUsers, ScryptHasher
from provider.auth.throttle import Throttle, user_key
from provider.db.events import DeliveryRecord
from provider.db.session import Database
from provider.domain import IncomingEvent, Notification
from provider.events.outbox import Outbox
from provider.rules.loader import parse_rules
from provider.rules.store import RuleStore
from provider.settings import Settings
from provider.web.console.app import build_console
from provider.web.console.services import ConsoleServices
from provider.web.console.signin import ConsoleSignIn
from tests.fixtures.slapd import USERS, SlapdServer
from tests.support import WEB_SERVICE_PASSWORD

PASSWORD = "correct horse battery"
HOSTILE = "<script>alert(1)</script>"
RULES = f"""\
rules:
  - name: hostile
    method: StartTicket
    when: "variables.get('x') == '{HOSTILE}'"
    then: {{allow: false, message: "no"}}
  - name: greet
    method: GetUserDetails
    then: {{html: "<p>hello</p>"}}
"""


def settings(database_url: str, **extra: str) -> Settings:
    return Settings.from_mapping(
        {"web_service_password": WEB_SERVICE_PASSWORD + "-long-enough", "database_url": database_url, **extra}
    )


def add_user(database: Database, name: str, role: str | None) -> None:
    LocalUsers(database, ScryptHasher(log_n=10)).add(name, PASSWORD, console_role=role)


def csrf(response: TestResponse) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', response.get_data(as_text=True))
    assert match is not None, "no CSRF field on the page"
    return match.group(1)


def sign_in(client: Client, username: str, password: str = PASSWORD) -> TestResponse:
    token = csrf(client.get("/admin/signin"))
    return client.post(
        "/admin/signin", data={"username": username, "password": password, "csrf_token": token}
    )


@pytest.fixture
def store(database: Database) -> RuleStore:
    store = RuleStore(database)
    store.import_rules(parse_rules(RULES), replace=True, actor="test", command="test")
    return store


@pytest.fixture
def client(database_url: str, database: Database, store: RuleStore) -> Iterator[Client]:
    add_user(database, "root", ADMIN)
    add_user(database, "watcher", VIEWER)
    add_user(database, "plain", None)
    app = build_application(settings(database_url), database=database)
    yield Client(app)


def rule_enabled(store: RuleStore, name: str) -> bool:
    return next(r.enabled for r in store.snapshot().rules if r.name == name)


def test_pages_redirect_to_sign_in_until_signed_in(client: Client) -> None:
    for path in ("/admin/", "/admin/rules", "/admin/calls", "/admin/events", "/admin/deliveries"):
        response = client.get(path)
        assert response.status_code == 302
        assert response.headers["Location"].endswith("/admin/signin")
    assert client.get("/admin").status_code == 308


def test_admin_signs_in_sees_every_page_and_signs_out(client: Client) -> None:
    response = sign_in(client, "root")
    assert response.status_code == 302
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/admin/" in cookie
    assert "Secure" not in cookie  # plain HTTP, not from a trusted proxy
    pages = ("Overview", "Rules", "Calls", "Events", "Deliveries")
    for path, heading in zip(
        ("/admin/", "/admin/rules", "/admin/calls", "/admin/events", "/admin/deliveries"), pages, strict=True
    ):
        page = client.get(path)
        assert page.status_code == 200, path
        html = page.get_data(as_text=True)
        assert html.count("<h1") == 1 and f"<h1>{heading}</h1>" in html
        assert f"<title>{heading} " in html
    token = csrf(client.get("/admin/"))
    assert client.post("/admin/signout", data={"csrf_token": token}).status_code == 302
    assert client.get("/admin/rules").status_code == 302


def test_secure_cookie_only_over_https_from_a_trusted_proxy(client: Client) -> None:
    def cookie_over(remote: str) -> str:
        fresh = Client(client.application)
        environ = {"REMOTE_ADDR": remote}
        response = fresh.get("/admin/signin", headers={"X-Forwarded-Proto": "https"}, environ_base=environ)
        return response.headers["Set-Cookie"]

    assert "Secure" in cookie_over("127.0.0.1")  # loopback is the default trusted proxy
    assert "Secure" not in cookie_over("203.0.113.9")


def test_wrong_password_is_refused_and_counted_by_the_throttle(
    client: Client, database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        response = sign_in(client, "root", "wrong password!")
    assert response.status_code == 401
    assert "Wrong username or password" in response.get_data(as_text=True)
    key = user_key("root")
    assert key is not None
    status = Throttle(database, settings("sqlite://").throttle).status([key])
    assert status[key].failures == 1
    assert any(getattr(r, "event", None) == "console.sign_in_refused" for r in caplog.records)
    assert client.get("/admin/").status_code == 302


def test_a_user_without_a_console_role_cannot_sign_in(client: Client) -> None:
    assert sign_in(client, "plain").status_code == 401
    assert client.get("/admin/").status_code == 302


def test_admin_disables_a_rule_audited_with_the_admin_as_actor(client: Client, store: RuleStore) -> None:
    sign_in(client, "root")
    token = csrf(client.get("/admin/rules"))
    response = client.post("/admin/rules/state", data={"name": "greet", "enabled": "no", "csrf_token": token})
    assert response.status_code == 302
    assert not rule_enabled(store, "greet")
    [latest] = store.history(limit=1)
    assert latest.actor == "console:root"
    assert "greet" in client.get("/admin/rules").get_data(as_text=True)


@pytest.mark.parametrize("token", [None, "", "forged-token"])
def test_a_change_without_the_csrf_token_is_403_and_changes_nothing(
    client: Client, store: RuleStore, token: str | None
) -> None:
    sign_in(client, "root")
    data = {"name": "greet", "enabled": "no"}
    if token is not None:
        data["csrf_token"] = token
    version = store.version()
    assert client.post("/admin/rules/state", data=data).status_code == 403
    assert rule_enabled(store, "greet") and store.version() == version


def test_a_viewer_reads_but_cannot_change(client: Client, store: RuleStore) -> None:
    assert sign_in(client, "watcher").status_code == 302
    page = client.get("/admin/rules")
    assert page.status_code == 200
    assert "Disable" not in page.get_data(as_text=True)
    token = csrf(page)
    version = store.version()
    response = client.post("/admin/rules/state", data={"name": "greet", "enabled": "no", "csrf_token": token})
    assert response.status_code == 403
    assert rule_enabled(store, "greet") and store.version() == version


def test_security_headers_on_every_console_answer(client: Client) -> None:
    answers = [client.get("/admin/signin"), client.get("/admin/")]
    sign_in(client, "root")
    answers += [client.get(p) for p in ("/admin/", "/admin/rules", "/admin/calls")]
    answers.append(client.post("/admin/rules/state", data={}))  # the 403
    for response in answers:
        csp = response.headers["Content-Security-Policy"]
        assert "unsafe-inline" not in csp and "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"]


def test_a_hostile_rule_condition_is_escaped(client: Client) -> None:
    sign_in(client, "root")
    html = client.get("/admin/rules").get_data(as_text=True)
    assert HOSTILE not in html
    assert "&lt;script&gt;" in html


def test_calls_filter_with_a_bad_date_says_so_at_the_field(client: Client) -> None:
    sign_in(client, "root")
    response = client.get("/admin/calls?since=yesterday-ish&operation=Authenticate")
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert 'id="since-error"' in html and 'aria-describedby="since-error"' in html


def test_without_an_admin_nobody_gets_in_and_the_page_says_how(database_url: str, database: Database) -> None:
    add_user(database, "watcher", VIEWER)
    client = Client(build_application(settings(database_url), database=database))
    page = client.get("/admin/signin")
    assert page.status_code == 403
    html = page.get_data(as_text=True)
    assert "st-provider users add NAME --admin" in html and 'name="password"' not in html
    response = client.post("/admin/signin", data={"username": "watcher", "password": PASSWORD})
    assert response.status_code == 403
    assert client.get("/admin/").status_code == 302


def test_console_off_removes_admin(database_url: str, database: Database) -> None:
    add_user(database, "root", ADMIN)
    client = Client(build_application(settings(database_url, console="off"), database=database))
    for path in ("/admin/", "/admin/signin", "/admin"):
        assert client.get(path).status_code == 404


@dataclass
class FakeClock:
    now: float = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_an_idle_session_expires(database: Database, store: RuleStore) -> None:
    add_user(database, "root", ADMIN)
    clock = FakeClock()
    services = ConsoleServices(
        database=database,
        sign_in=ConsoleSignIn.from_settings(settings("sqlite://"), database, None),
        clock=clock,
    )
    console = build_console(services, secret="s" * 32, idle_seconds=1800)
    client = Client(DispatcherMiddleware(NotFound(), {"/admin": console}))
    assert sign_in(client, "root").status_code == 302
    clock.now += 1700
    assert client.get("/admin/rules").status_code == 200  # used: the idle time starts again
    clock.now += 1700
    assert client.get("/admin/rules").status_code == 200
    clock.now += 1801
    assert client.get("/admin/rules").status_code == 302


def test_a_hostile_username_is_shown_back_escaped(client: Client) -> None:
    response = sign_in(client, HOSTILE)
    assert response.status_code == 401
    html = response.get_data(as_text=True)
    assert HOSTILE not in html and 'value="&lt;script&gt;alert(1)&lt;/script&gt;"' in html


def test_events_and_deliveries_pages_escape_event_arguments_and_partner_answers(
    client: Client, database: Database
) -> None:
    event = IncomingEvent(
        event_type=502000,
        event_name="Ticket Created",
        arguments={"subject": HOSTILE},
        variables=(("eventType", "502000"), ("args_subject", HOSTILE)),
        received_at=datetime.now(UTC),
        fingerprint="console-test",
    )
    Outbox(database).accept(event, [Notification(rule="r", channel="sms", params={"to": "+15550100"})])
    with database.session() as session:
        for delivery in session.scalars(select(DeliveryRecord)):
            delivery.status = "failed"
            delivery.last_error = f"partner said {HOSTILE}"
    sign_in(client, "watcher")
    events_page = client.get("/admin/events?event_type=502000")
    deliveries_page = client.get("/admin/deliveries?status=failed&channel=sms")
    for page, heading in ((events_page, "Events"), (deliveries_page, "Deliveries")):
        assert page.status_code == 200
        html = page.get_data(as_text=True)
        assert f"<h1>{heading}</h1>" in html and "<th" in html
        assert HOSTILE not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "Ticket Created" in events_page.get_data(as_text=True)
    assert "+15550100" in deliveries_page.get_data(as_text=True)
    assert client.get("/admin/deliveries?event_type=seven").status_code == 400


def test_directory_groups_make_admins_and_viewers(slapd: SlapdServer, sqlite_url: str) -> None:
    values = slapd.settings(
        database_url=sqlite_url,
        admin_group="Support Tier 1",
        viewer_group=f"cn=Staff,{slapd.groups_dn}",  # a DN: matched by its first RDN
    )
    database = Database(sqlite_url)
    try:
        app = build_application(Settings.from_mapping(values), database=database)

        def role_of(name: str, password: str) -> str | None:
            browser = Client(app)
            if sign_in(browser, name, password).status_code != 302:
                return None
            page = browser.get("/admin/").get_data(as_text=True)
            assert "Directory</div>" in page  # the directory's readiness is on the overview
            match = re.search(r"\((admin|viewer)\)</span>", page)
            return match.group(1) if match else None

        assert role_of("bob", USERS["bob"].password) == ADMIN
        assert role_of("alice", USERS["alice"].password) == VIEWER
        assert role_of("carol", USERS["carol"].password) is None  # in neither group
        assert role_of("bob", "wrong-password") is None
    finally:
        database.dispose()


def test_a_local_admin_disabled_or_removed_loses_the_session_at_once(
    client: Client, database: Database
) -> None:
    assert sign_in(client, "root").status_code == 302
    assert client.get("/admin/rules").status_code == 200
    LocalUsers(database).set_enabled("root", False)
    assert client.get("/admin/rules").status_code == 302
    LocalUsers(database).set_enabled("root", True)
    assert client.get("/admin/rules").status_code == 302  # the session was dropped: sign in again
