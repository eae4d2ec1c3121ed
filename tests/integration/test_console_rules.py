"""The console's rule view, rules file editor and templates, without a browser.

The real WSGI application (``build_application``) on SQLite and PostgreSQL, driven by werkzeug's
test client: CSRF, roles, escaping of hostile values, problems at their lines, what Import and
Replace all would change, and the audit trail they leave (the same as ``rules import``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from html import unescape

import pytest
from werkzeug.test import Client, TestResponse

from provider.app import build_application
from provider.auth.local import ADMIN, VIEWER
from provider.db.session import Database
from provider.rules.loader import parse_rules
from provider.rules.store import RuleStore
from tests.integration.test_console import HOSTILE, add_user, csrf, settings, sign_in

RULES = f"""\
variables:
  support_phone: "+44 20 7946 0000"
channels:
  hook:
    type: webhook
    url: http://127.0.0.1:9/hook
    headers: {{Authorization: "Bearer ${{HOOK_TOKEN}}"}}
templates:
  ticket-mail:
    kind: email
    description: "sent when a ticket is created {HOSTILE}"
    tags: [tickets, customer]
    subject: "Ticket {{{{ args.ticketNumber }}}}"
    html: "<p>Ticket {{{{ args.ticketNumber }}}} about {{{{ args.subject }}}}</p><script>alert(2)</script>"
    text: "Call {{{{ vars.support_phone }}}}"
rules:
  - name: hostile
    description: "{HOSTILE}"
    method: StartTicket
    priority: 10
    when: "variables.get('x') == '{HOSTILE}'"
    then: {{allow: false, message: "{HOSTILE}"}}
  - name: greet
    method: GetUserDetails
    then: {{html: "<p>hello</p>"}}
  - name: first-tickets
    method: [StartTicket, StartChat]
    priority: 5
    on_error: skip
    then: {{set: {{Tier: gold}}}}
  - name: ticket-hook
    method: NotifyEventFired
    then:
      notify:
        - {{channel: hook, text: "ticket {{{{ args.get('ticketNumber', '') }}}}"}}
"""

# A draft with one mistake on line 4 (an unknown action) and one on line 8 (an unknown variable).
BROKEN = """\
rules:
  - name: greet
    method: GetUserDetails
    then: {html: "<p>hi</p>", frobnicate: true}
  - name: tickets
    method: StartTicket
    then: {allow: false}
    when: "nosuchthing == 1"
"""


@pytest.fixture
def store(database: Database) -> RuleStore:
    store = RuleStore(database)
    store.import_rules(parse_rules(RULES), replace=True, actor="test", command="test")
    return store


@pytest.fixture
def client(database_url: str, database: Database, store: RuleStore) -> Iterator[Client]:
    add_user(database, "root", ADMIN)
    add_user(database, "watcher", VIEWER)
    yield Client(build_application(settings(database_url), database=database))


def text_of(response: TestResponse) -> str:
    return response.get_data(as_text=True)


def editor_text(response: TestResponse) -> str:
    match = re.search(
        r'<textarea id="rules_file" name="rules_file"[^>]*>\n(.*?)</textarea>', text_of(response), re.S
    )
    assert match is not None, "no rules file textarea"
    return unescape(match.group(1))


def post_file(client: Client, text: str, action: str) -> TestResponse:
    """Submit ``text`` from a freshly loaded editor (its CSRF token and base version)."""
    page = client.get("/admin/rules-file")
    base = re.search(r'name="base_version" value="(\d+)"', text_of(page))
    assert base is not None
    data = {"rules_file": text, "action": action, "csrf_token": csrf(page), "base_version": base.group(1)}
    return client.post("/admin/rules-file", data=data)


def names(store: RuleStore) -> list[str]:
    return [r.name for r in store.snapshot().rules]


def test_the_rules_list_links_each_rule_to_its_page(client: Client) -> None:
    sign_in(client, "watcher")
    html = text_of(client.get("/admin/rules"))
    assert 'href="/admin/rules/first-tickets"' in html and 'href="/admin/rules-file"' in html
    assert 'href="/admin/templates"' in html


def test_one_rule_shows_its_parts_place_in_the_order_and_history(client: Client, store: RuleStore) -> None:
    sign_in(client, "root")
    token = csrf(client.get("/admin/rules"))
    client.post("/admin/rules/state", data={"name": "hostile", "enabled": "no", "csrf_token": token})
    client.post("/admin/rules/state", data={"name": "hostile", "enabled": "yes", "csrf_token": token})
    page = client.get("/admin/rules/hostile")
    assert page.status_code == 200
    html = text_of(page)
    assert "<h1>Rule hostile</h1>" in html and "<title>Rule hostile " in html
    facts = unescape(re.sub(r"<[^>]+>", " ", html))
    facts = " ".join(facts.split())
    assert "Operations StartTicket" in facts and "Priority 10" in facts
    assert f"Condition variables.get('x') == '{HOSTILE}'" in facts
    assert f"Actions allow: false message: {HOSTILE}" in facts
    assert "deny: fails closed, its denials apply (the default for a rule that can deny)" in facts
    # StartTicket runs first-tickets (priority 5), then hostile (10).
    assert "StartTicket 2 of 2 first-tickets (last)" in facts
    history = re.findall(r"<td>(console:root|test)</td><td>(\w+)</td><td><code>([^<]*)</code>", html)
    assert history == [
        ("console:root", "enabled", "console: rules enable"),
        ("console:root", "disabled", "console: rules disable"),
        ("test", "created", "test"),
    ]
    assert 'aria-label="Disable hostile"' in html


def test_a_rule_page_shows_notify_entries_and_on_error_skip(client: Client) -> None:
    sign_in(client, "watcher")
    hook = text_of(client.get("/admin/rules/ticket-hook"))
    assert (
        "<td>hook</td>" in hook and "text: ticket {{ args.get(&#39;ticketNumber&#39;, &#39;&#39;) }}" in hook
    )
    assert "NotifyEventFired</td>" in hook
    tickets = " ".join(
        unescape(re.sub(r"<[^>]+>", " ", text_of(client.get("/admin/rules/first-tickets")))).split()
    )
    assert "skip: the rule is skipped" in tickets
    assert "StartTicket 1 of 2 (first) hostile" in tickets and "StartChat 1 of 1 (first) (last)" in tickets
    assert "Disable first-tickets" not in tickets  # a viewer has no buttons
    assert client.get("/admin/rules/no-such-rule").status_code == 404


def test_hostile_values_are_escaped_on_the_rule_page_and_in_the_editor(client: Client) -> None:
    sign_in(client, "root")
    for path in (
        "/admin/rules/hostile",
        "/admin/rules-file",
        "/admin/templates",
        "/admin/templates/ticket-mail",
    ):
        page = client.get(path)
        assert page.status_code == 200, path
        html = text_of(page)
        assert HOSTILE not in html and "<script>alert(2)" not in html, path
        assert "&lt;script&gt;" in html, path


def test_the_editor_is_prefilled_with_the_export_and_secrets_stay_references(
    client: Client, store: RuleStore
) -> None:
    sign_in(client, "watcher")
    page = client.get("/admin/rules-file")
    assert page.status_code == 200
    html = text_of(page)
    assert '<label for="rules_file">Rules file</label>' in html
    text = editor_text(page)
    assert "Bearer ${HOOK_TOKEN}" in text
    assert parse_rules(text) == store.export()
    assert text.startswith(f"# st-provider rules export (rule set version {store.version()})")
    assert ">Validate</button>" in html and ">Import</button>" not in html  # a viewer


def test_validate_shows_every_problem_at_its_line_tied_to_the_field(client: Client, store: RuleStore) -> None:
    sign_in(client, "root")
    version = store.version()
    response = post_file(client, BROKEN, "validate")
    assert response.status_code == 400
    html = text_of(response)
    assert 'aria-describedby="rules_file-problems"' in html and 'aria-invalid="true"' in html
    assert 'id="rules_file-problems"' in html
    problems = re.findall(r'<span class="where">([^<]*)</span>', html)
    assert problems == ["line 4, rule greet", "line 8, rule tickets"]
    assert "frobnicate" in html and "nosuchthing" in html
    assert (
        '<span class="lineno">4</span>     then: {html: &#34;&lt;p&gt;hi&lt;/p&gt;&#34;, frobnicate: true}'
        in html
    )
    assert editor_text(response) == BROKEN  # the draft is kept
    assert store.version() == version


def test_validate_of_a_valid_draft_says_what_import_and_replace_would_change(
    client: Client, store: RuleStore
) -> None:
    sign_in(client, "watcher")  # validating changes nothing: viewers may
    draft = """\
channels:
  hook2:
    type: webhook
    url: http://127.0.0.1:9/other
rules:
  - name: greet
    method: GetUserDetails
    then: {html: "<p>welcome</p>"}
  - name: new-one
    method: StartChat
    then: {allow: false, message: closed}
"""
    version = store.version()
    response = post_file(client, draft, "validate")
    assert response.status_code == 200
    html = text_of(response)
    assert "The file is valid: 2 rules, 1 channel," in html
    sections = html.split("<h2 ")
    imp = next(s for s in sections if "What Import would change" in s)
    rep = next(s for s in sections if "What Replace all would change" in s)
    assert "rules: 1 created, 1 updated, 0 deleted, 0 unchanged" in imp
    assert "channels: 1 created, 0 updated, 0 deleted, 0 unchanged" in imp
    assert f"would be rule set version {version + 1}" in imp
    assert "rules: 1 created, 1 updated, 3 deleted, 0 unchanged" in rep
    assert "templates: 1 deleted" in rep and "variables: 1 deleted" in rep
    assert '<td>rule</td><td>new-one</td><td class="change-created">created</td>' in imp
    assert '<td>rule</td><td>hostile</td><td class="change-deleted">deleted</td>' in rep
    assert '<span class="diff-add">+    html: &lt;p&gt;welcome&lt;/p&gt;</span>' in imp
    assert "of the last 0 journaled calls" in imp
    assert store.version() == version and "new-one" not in names(store)


def test_import_changes_the_store_audited_with_the_console_actor(client: Client, store: RuleStore) -> None:
    sign_in(client, "root")
    text = editor_text(client.get("/admin/rules-file")).replace("html: <p>hello</p>", "html: <p>hi there</p>")
    text += "- name: added\n  method: StartChat\n  then: {allow: false}\n"
    version = store.version()
    response = post_file(client, text, "import")
    assert response.status_code == 302 and response.headers["Location"].endswith("/admin/rules")
    notice = text_of(client.get("/admin/rules"))
    assert "Imported the rules file: rules: 1 created, 1 updated, 0 deleted, 3 unchanged" in notice
    assert store.version() == version + 1
    assert names(store)[-1] == "added"
    greet = next(r for r in store.snapshot().rules if r.name == "greet")
    assert greet.mapping["then"]["html"] == "<p>hi there</p>"
    entries = store.history(limit=2)
    assert {(e.subject, e.action, e.actor, e.command) for e in entries} == {
        ("added", "created", "console:root", "console: rules import"),
        ("greet", "updated", "console:root", "console: rules import"),
    }
    assert "console:root" in notice  # the versions table


def test_replace_all_makes_the_store_exactly_the_file(client: Client, store: RuleStore) -> None:
    sign_in(client, "root")
    draft = "rules:\n  - name: only\n    method: StartChat\n    then: {allow: false, message: closed}\n"
    response = post_file(client, draft, "replace")
    assert response.status_code == 302
    assert names(store) == ["only"]
    snapshot = store.snapshot()
    assert snapshot.channels == () and snapshot.templates == () and snapshot.variables == ()
    actions = {(e.subject, e.action) for e in store.history(limit=20) if e.actor == "console:root"}
    assert (
        ("only", "created") in actions
        and ("hostile", "deleted") in actions
        and ("hook", "deleted") in actions
    )
    assert {e.command for e in store.history(limit=20) if e.actor == "console:root"} == {
        "console: rules import --replace"
    }


def test_a_replacement_that_needs_a_stored_channel_is_refused_at_its_line(
    client: Client, store: RuleStore
) -> None:
    sign_in(client, "root")
    draft = (
        "rules:\n  - name: hook-only\n    method: NotifyEventFired\n"
        "    then:\n      notify: [{channel: hook, text: hi}]\n"
    )
    version = store.version()
    response = post_file(client, draft, "replace")
    assert response.status_code == 400
    html = text_of(response)
    assert "nothing was stored" in html and "unknown channel" in html
    assert re.findall(r'<span class="where">([^<]*)</span>', html) == ["line 5, rule hook-only"]
    assert store.version() == version
    validated = text_of(post_file(client, draft, "validate"))  # as an import it is fine
    assert "The file is valid" in validated and "Replace all would refuse this file" in validated


@pytest.mark.parametrize("token", [None, "", "forged-token"])
@pytest.mark.parametrize("action", ["import", "replace"])
def test_import_without_the_csrf_token_is_403_and_changes_nothing(
    client: Client, store: RuleStore, token: str | None, action: str
) -> None:
    sign_in(client, "root")
    data = {"rules_file": "rules: []\n", "action": action, "base_version": str(store.version())}
    if token is not None:
        data["csrf_token"] = token
    before = store.snapshot()
    assert client.post("/admin/rules-file", data=data).status_code == 403
    assert store.snapshot() == before


@pytest.mark.parametrize("action", ["import", "replace"])
def test_a_viewer_cannot_import_or_replace(client: Client, store: RuleStore, action: str) -> None:
    sign_in(client, "watcher")
    before = store.snapshot()
    assert post_file(client, "rules: []\n", action).status_code == 403
    assert store.snapshot() == before


def test_an_import_over_a_rule_set_changed_meanwhile_is_refused(client: Client, store: RuleStore) -> None:
    sign_in(client, "root")
    page = client.get("/admin/rules-file")
    token = csrf(page)
    base = store.version()
    store.set_enabled("greet", False, actor="someone", command="test")  # another admin, meanwhile
    data = {"rules_file": "rules: []\n", "action": "replace", "csrf_token": token, "base_version": str(base)}
    response = client.post("/admin/rules-file", data=data)
    assert response.status_code == 409
    html = text_of(response)
    assert "changed since this page was loaded" in html and "nothing was stored" in html
    assert len(names(store)) == 4 and store.version() == base + 1
    assert f'name="base_version" value="{base + 1}"' in html  # pressing again now applies it
    data["base_version"] = str(base + 1)
    assert client.post("/admin/rules-file", data=data).status_code == 302
    assert names(store) == []


def test_a_hostile_name_in_a_draft_is_escaped_in_the_problem(client: Client) -> None:
    sign_in(client, "root")
    draft = f'rules:\n  - name: "{HOSTILE}"\n    method: StartChat\n    then: {{allow: false}}\n'
    response = post_file(client, draft, "validate")
    assert response.status_code == 400
    html = text_of(response)
    assert HOSTILE not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "line 2" in html


def test_templates_list_and_a_rendered_preview_with_sample_values(client: Client) -> None:
    sign_in(client, "watcher")
    listing = text_of(client.get("/admin/templates"))
    assert "<h1>Templates</h1>" in listing
    assert (
        '<a href="/admin/templates/ticket-mail">ticket-mail</a></td><td>email</td><td>tickets, customer</td>'
        in listing
    )
    page = client.get("/admin/templates/ticket-mail")
    assert page.status_code == 200
    html = text_of(page)
    assert "<pre>Ticket ABC-12345</pre>" in html  # subject, with the sample values
    assert "<pre>Call +44 20 7946 0000</pre>" in html  # vars
    srcdoc = re.search(r'<iframe class="html-preview" sandbox="" [^>]*srcdoc="([^"]*)"', html)
    assert srcdoc is not None
    assert unescape(srcdoc.group(1)) == (
        "<p>Ticket ABC-12345 about The printer is out of paper</p><script>alert(2)</script>"
    )
    # Given values are autoescaped in the e-mail HTML, and the page escapes the whole of it again.
    query = {"values": f"args_ticketNumber=T-1\nargs_subject={HOSTILE}"}
    hostile = text_of(client.get("/admin/templates/ticket-mail", query_string=query))
    assert HOSTILE not in hostile and "<script>alert(2)" not in hostile
    srcdoc = re.search(r'srcdoc="([^"]*)"', hostile)
    assert srcdoc is not None and "about &lt;script&gt;alert(1)&lt;/script&gt;</p>" in unescape(
        srcdoc.group(1)
    )


def test_a_template_preview_with_unusable_values_says_why(client: Client) -> None:
    sign_in(client, "watcher")
    bad = client.get("/admin/templates/ticket-mail", query_string={"values": "no equals sign"})
    assert bad.status_code == 400
    html = text_of(bad)
    assert 'aria-describedby="values-error"' in html and "is not NAME=VALUE" in html
    secret = client.get("/admin/templates/ticket-mail", query_string={"values": "authPW=x"})
    assert secret.status_code == 400 and "templates never see passwords" in text_of(secret)
    missing = client.get("/admin/templates/ticket-mail", query_string={"values": "eventType=502000"})
    assert missing.status_code == 200 and "does not render with these values" in text_of(missing)
    unknown = client.get("/admin/templates/ticket-mail", query_string={"event": "999999"})
    assert unknown.status_code == 400 and "No event has the id 999999" in text_of(unknown)
    assert client.get("/admin/templates/nope").status_code == 404
