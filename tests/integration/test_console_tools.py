"""The console's Test a call and Directory pages without a browser (werkzeug's test client).

Test a call runs against a real rule store (SQLite and PostgreSQL) and must agree with
``rules test``; Directory runs against the slapd fixture, through the sign-in throttle, and
the tested password must appear in no page and no log record.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select
from werkzeug.test import Client

from provider.app import build_application
from provider.auth.local import ADMIN, VIEWER
from provider.auth.throttle import Throttle, user_key
from provider.db.events import DeliveryRecord, EventRecord
from provider.db.session import Database
from provider.domain import Operation
from provider.rules.loader import parse_rules
from provider.rules.store import RuleStore
from provider.rules.trial import trial_call
from provider.settings import Settings
from tests.fixtures.slapd import USERS, SlapdServer
from tests.integration.test_console import HOSTILE, add_user, csrf, settings, sign_in

RULES = f"""\
channels:
  hook:
    type: webhook
    url: http://127.0.0.1:9/hook
rules:
  - name: urgent tickets
    method: StartTicket
    when: "'URGENT' in variables.get('subject', '')"
    then: {{allow: false, message: "Call the hotline for urgent problems"}}
  - name: echo
    method: StartTicket
    when: "variables.get('x') not in (none, 'never {HOSTILE}')"
    then: {{allow: false, message: "{{{{ variables.get('x') }}}}"}}
  - name: switched off
    method: StartTicket
    enabled: false
    then: {{allow: false}}
  - name: greet
    method: GetUserDetails
    then: {{html: "<p>hello</p>"}}
  - name: ticket-hook
    method: NotifyEventFired
    then:
      notify:
        - channel: hook
          text: "ticket {{{{ args.get('ticketNumber', '') }}}}"
"""


@pytest.fixture
def client(database_url: str, database: Database) -> Iterator[Client]:
    RuleStore(database).import_rules(parse_rules(RULES), replace=True, actor="test", command="test")
    add_user(database, "root", ADMIN)
    add_user(database, "watcher", VIEWER)
    yield Client(build_application(settings(database_url), database=database))


def run_test(client: Client, operation: str, variables: str, user: str = "", **extra: str) -> tuple[int, str]:
    token = csrf(client.get("/admin/test-call"))
    data = {"operation": operation, "variables": variables, "user": user, "csrf_token": token, **extra}
    response = client.post("/admin/test-call", data=data)
    return response.status_code, response.get_data(as_text=True)


# --- Test a call ---------------------------------------------------------------------------


def test_test_call_shows_each_rule_and_the_answer_as_rules_test_does(
    client: Client, database: Database, database_url: str
) -> None:
    sign_in(client, "root")
    status, html = run_test(client, "StartTicket", "subject=URGENT: printer on fire\nloginUsername=")
    assert status == 200
    assert "<h1>Test a call</h1>" in html
    report = trial_call(
        settings(database_url),
        database,
        Operation.START_TICKET,
        [("subject", "URGENT: printer on fire"), ("loginUsername", "")],
        authenticator=None,
    )
    assert report.matched == ("urgent tickets",)
    for entry in report.trace:  # every rule of the operation, with its outcome and reason
        assert f"<td>{entry.rule}</td>" in html
        assert f">{entry.outcome}</span>" in html
    assert "Call the hotline for urgent problems" in html
    assert "<code>TicketCreation=FALSE</code>" in html  # the answer's output variables
    assert ">not reached</span>" in html and "evaluation stopped by &#39;urgent tickets&#39;" in html
    assert "greet" not in html  # a rule of another operation does not apply


def test_a_variable_that_does_not_match_says_why(client: Client) -> None:
    sign_in(client, "root")
    status, html = run_test(client, "StartTicket", "subject=printer")
    assert status == 200
    assert ">no match</span>" in html and ">disabled</span>" in html
    assert '<td class="ok">true</td>' in html and "TicketCreation=FALSE" not in html


def test_viewers_may_test_but_only_with_the_csrf_token(client: Client) -> None:
    sign_in(client, "watcher")
    status, html = run_test(client, "GetUserDetails", "username=bob")
    assert status == 200 and "&lt;p&gt;hello&lt;/p&gt;" in html
    for token in (None, "forged"):
        data = {"operation": "GetUserDetails", "variables": "username=bob"}
        if token is not None:
            data["csrf_token"] = token
        assert client.post("/admin/test-call", data=data).status_code == 403


def test_hostile_values_are_escaped(client: Client) -> None:
    sign_in(client, "root")
    status, html = run_test(client, "StartTicket", f"x={HOSTILE}", user="")
    assert status == 200
    assert HOSTILE not in html
    assert ">matched</span>" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;</td>" in html  # the answer's message
    status, html = run_test(client, "StartTicket", "subject=printer")  # the condition, in "why"
    assert HOSTILE not in html and "never &lt;script&gt;alert(1)&lt;/script&gt;" in html
    status, html = run_test(client, HOSTILE, "a=b")
    assert status == 400 and HOSTILE not in html


def test_each_operation_starts_from_its_documented_variables_without_passwords(client: Client) -> None:
    sign_in(client, "watcher")
    for operation in Operation:
        html = client.get(f"/admin/test-call?operation={operation.value}").get_data(as_text=True)
        assert f"<option selected>{operation.value}</option>" in html
        assert "authPW=" not in html and "loginPassword=" not in html
    start_ticket = client.get("/admin/test-call?operation=StartTicket").get_data(as_text=True)
    assert "departmentName=Support" in start_ticket and "subject=" in start_ticket
    event = client.get("/admin/test-call?operation=NotifyEventFired").get_data(as_text=True)
    assert "eventType=502000" in event and "args_ticketNumber=" in event


def test_a_password_is_dropped_or_blanked_with_a_note_and_never_shown(client: Client) -> None:
    sign_in(client, "root")
    variables = "loginUsername=root\nloginPassword=hunter2-secret\nauthPW=ws-secret\nnewPassword=s3cret-value"
    status, html = run_test(client, "Authenticate", variables)
    assert status == 200
    for secret in ("hunter2-secret", "ws-secret", "s3cret-value"):
        assert secret not in html
    assert "rules never see passwords" in html and "newPassword=" in html and "was blanked" in html
    assert 'type="password"' not in html  # the page never asks for one


def test_notify_rules_are_rendered_and_nothing_is_queued_or_sent(client: Client, database: Database) -> None:
    sign_in(client, "root")
    status, html = run_test(client, "NotifyEventFired", "eventType=502000\nargs_ticketNumber=T-42")
    assert status == 200
    assert "Notifications (rendered, not sent)" in html and "ticket T-42" in html
    with database.session() as session:
        assert session.scalar(select(func.count()).select_from(EventRecord)) == 0
        assert session.scalar(select(func.count()).select_from(DeliveryRecord)) == 0


def test_bad_lines_and_unknown_users_are_reported_at_their_field(client: Client) -> None:
    sign_in(client, "root")
    status, html = run_test(client, "StartTicket", "subject=ok\nno equals sign")
    assert status == 400
    assert 'id="variables-error"' in html and "Line 2 is not name=value." in html
    status, html = run_test(client, "StartTicket", "subject=ok", user="nobody-here")
    assert status == 400
    assert 'id="user-error"' in html and "nobody-here" in html


# --- Directory ---------------------------------------------------------------------------


def directory_client(slapd: SlapdServer, sqlite_url: str, **overrides: str) -> tuple[Client, Database]:
    database = Database(sqlite_url)
    add_user(database, "root", ADMIN)
    add_user(database, "watcher", VIEWER)
    values = slapd.settings(database_url=sqlite_url, **overrides)
    return Client(build_application(Settings.from_mapping(values), database=database)), database


@pytest.fixture
def directory(slapd: SlapdServer, sqlite_url: str) -> Iterator[tuple[Client, Database]]:
    client, database = directory_client(slapd, sqlite_url, throttle_max_failures="3")
    sign_in(client, "root")
    yield client, database
    database.dispose()


def try_password(client: Client, username: str, password: str) -> tuple[int, str]:
    token = csrf(client.get("/admin/directory"))
    response = client.post(
        "/admin/directory/authentication",
        data={"username": username, "password": password, "csrf_token": token},
    )
    return response.status_code, response.get_data(as_text=True)


def failures(database: Database, username: str) -> int:
    key = user_key(username)
    assert key is not None
    status = Throttle(database, settings("sqlite://").throttle).status([key])
    return status[key].failures if key in status else 0


@pytest.mark.slapd
def test_connection_ok_shows_each_server_tls_and_the_service_bind(
    directory: tuple[Client, Database], slapd: SlapdServer
) -> None:
    client, _ = directory
    page = client.get("/admin/directory")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "<h1>Directory</h1>" in html and slapd.url in html
    assert slapd.service_password not in html
    response = client.post("/admin/directory/connection", data={"csrf_token": csrf(page)})
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "Every server answered." in html
    assert f"ok as {slapd.service_dn}" in html and "none (plain LDAP" in html
    assert slapd.service_password not in html


@pytest.mark.slapd
def test_a_down_server_is_reported_with_the_reason(
    slapd: SlapdServer, sqlite_url: str, dead_ldap_url: str
) -> None:
    client, database = directory_client(slapd, sqlite_url, ldap_url=f"{slapd.url} {dead_ldap_url}")
    try:
        sign_in(client, "root")
        token = csrf(client.get("/admin/directory"))
        html = client.post("/admin/directory/connection", data={"csrf_token": token}).get_data(as_text=True)
        assert "Problems found" in html and "check the URL, the firewall" in html
        assert f'<td class="nowrap"><code>{slapd.url}</code></td><td class="ok">ok</td>' in html
        assert f'<td class="nowrap"><code>{dead_ldap_url}</code></td><td class="bad">failed</td>' in html
        assert "not attempted" in html
    finally:
        database.dispose()


@pytest.mark.slapd
def test_authentication_ok_shows_where_the_user_is_found_and_groups(
    directory: tuple[Client, Database], caplog: pytest.LogCaptureFixture
) -> None:
    client, database = directory
    bob = USERS["bob"]
    with caplog.at_level(logging.DEBUG):
        status, html = try_password(client, "bob", bob.password)
    assert status == 200
    assert "Authentication succeeded: bob can sign in." in html
    assert bob.dn in html and "Support Tier 1, Support, Staff" in html and "bob@example.org" in html
    assert "password accepted" in html
    assert_password_nowhere(bob.password, html, caplog)
    audit = [r for r in caplog.records if getattr(r, "event", None) == "console.directory_test"]
    assert [(r.actor, r.check, r.ok, r.username) for r in audit] == [  # type: ignore[attr-defined]
        ("console:root", "authentication", True, "bob")
    ]
    assert failures(database, "bob") == 0


@pytest.mark.slapd
def test_a_wrong_password_is_refused_counted_and_never_echoed(
    directory: tuple[Client, Database], caplog: pytest.LogCaptureFixture
) -> None:
    client, database = directory
    wrong = "Wrong-Guess-77"
    with caplog.at_level(logging.DEBUG):
        status, html = try_password(client, "alice", wrong)
    assert status == 200
    assert "Authentication refused: the password was wrong" in html and "bad_password" in html
    assert USERS["alice"].dn in html  # found, the bind refused
    assert_password_nowhere(wrong, html, caplog)
    assert failures(database, "alice") == 1  # counted like a sign-in


@pytest.mark.slapd
def test_the_throttle_stops_guessing_even_the_right_password(directory: tuple[Client, Database]) -> None:
    client, _ = directory
    for guess in ("guess-1-aaaa", "guess-2-bbbb", "guess-3-cccc"):
        try_password(client, "jürgen", guess)
    status, html = try_password(client, "jürgen", USERS["jürgen"].password)
    assert status == 200
    assert "Authentication refused: too many failed logins" in html and "throttled" in html


@pytest.mark.slapd
def test_an_unknown_user_says_so(directory: tuple[Client, Database]) -> None:
    client, _ = directory
    status, html = try_password(client, "nobody-at-all", "whatever-pass")
    assert status == 200
    assert "not found" in html and "no such user" in html and "unknown_user" in html
    assert "(|(uid=nobody-at-all)" in html


@pytest.mark.slapd
def test_a_user_outside_the_required_group_is_explained(slapd: SlapdServer, sqlite_url: str) -> None:
    client, database = directory_client(slapd, sqlite_url, ldap_require_group="Support")
    try:
        sign_in(client, "root")
        status, html = try_password(client, "carol", USERS["carol"].password)
        assert status == 200
        assert "not in ST_PROVIDER_LDAP_REQUIRE_GROUP" in html and "not_in_group" in html
        assert '<code>Support</code>: <span class="bad">not a member</span>' in html
        status, html = try_password(client, "alice", USERS["alice"].password)
        assert "Authentication succeeded" in html and '<span class="ok">member</span>' in html
    finally:
        database.dispose()


@pytest.mark.slapd
def test_viewers_get_403_and_a_missing_token_changes_nothing(slapd: SlapdServer, sqlite_url: str) -> None:
    client, database = directory_client(slapd, sqlite_url)
    try:
        sign_in(client, "watcher")
        page = client.get("/admin/directory")
        assert page.status_code == 403 and "Only admins" in page.get_data(as_text=True)
        token = csrf(client.get("/admin/"))
        data = {"username": "alice", "password": "wrong-one-1", "csrf_token": token}
        assert client.post("/admin/directory/authentication", data=data).status_code == 403
        assert client.post("/admin/directory/connection", data={"csrf_token": token}).status_code == 403
        admin = Client(client.application)
        sign_in(admin, "root")
        assert (
            admin.post("/admin/directory/authentication", data={**data, "csrf_token": ""}).status_code == 403
        )
        assert failures(database, "alice") == 0
    finally:
        database.dispose()


@pytest.mark.slapd
def test_a_missing_password_is_asked_for_at_its_field_and_not_counted(
    directory: tuple[Client, Database],
) -> None:
    client, database = directory
    status, html = try_password(client, "alice", "")
    assert status == 400
    assert 'id="password-error"' in html and 'aria-describedby="password-error"' in html
    assert 'value="alice"' in html  # the username is kept, escaped like every value
    assert failures(database, "alice") == 0


def test_without_a_directory_the_page_says_so(client: Client) -> None:
    sign_in(client, "root")
    page = client.get("/admin/directory")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "No directory is configured" in html and "ST_PROVIDER_LDAP_URL" in html
    assert "Test connection" not in html


def assert_password_nowhere(password: str, html: str, caplog: pytest.LogCaptureFixture) -> None:
    """``password`` is in neither the page nor any field of any captured log record."""
    assert password not in html
    assert 'type="password"' in html and f'value="{password}"' not in html
    assert caplog.records, "nothing was logged: the check would prove nothing"
    for record in caplog.records:
        assert password not in record.getMessage()
        assert all(password not in repr(value) for value in vars(record).values())
