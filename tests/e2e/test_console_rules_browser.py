"""The console's rules editor in a real browser (Debian's chromium driven by Playwright) against gunicorn.

An admin (``st-provider users add --admin``) opens one rule, edits the whole rules file with a
mistake and sees the problem at its line, fixes it, sees what Import would change (and which
journaled call the what-if says would be answered differently), imports it and a real SOAP call
answers differently; then replaces the whole rule set, disables and enables a rule, and previews a
template. On SQLite and PostgreSQL. Screenshots are saved under the pytest temp dir (and copied to
/work/notes/screens/ when that directory's parent exists, for review).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from provider.domain import Operation
from provider.soap.client import call_operation
from tests.fixtures.server import AUTH, NAMESPACE
from tests.support import ServerProcess, base_env, run_cli, serve, wait_until

CHROMIUM = Path("/usr/bin/chromium")
REVIEW_DIR = Path("/work/notes/screens")
ADMIN_PASSWORD = "console-admin-pass-1"
CLOSED = "Tickets are closed for maintenance"
REOPEN = "Tickets reopen at nine"
CHATS_CLOSED = "Chats are closed today"
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
    description: sent to the customer when a ticket is created
    tags: [tickets, customer]
    subject: "Ticket {{{{ args.ticketNumber }}}}: {{{{ args.subject }}}}"
    html: "<h2>We got your ticket {{{{ args.ticketNumber }}}}</h2><p>{{{{ args.subject }}}}</p><p>Call us on {{{{ vars.support_phone }}}}.</p>"
    text: "Ticket {{{{ args.ticketNumber }}}}: call {{{{ vars.support_phone }}}}"
rules:
  - name: tickets closed
    description: no new tickets during the maintenance window
    method: StartTicket
    priority: 10
    then: {{allow: false, message: "{CLOSED}"}}
  - name: greet
    method: GetUserDetails
    then: {{html: "<p>Hello</p>"}}
  - name: ticket-hook
    method: NotifyEventFired
    then:
      notify:
        - channel: hook
          text: "ticket {{{{ args.get('ticketNumber', '') }}}}"
"""
REPLACEMENT = f"""\
rules:
  - name: chats closed
    method: StartChat
    then: {{allow: false, message: "{CHATS_CLOSED}"}}
  - name: greet
    method: GetUserDetails
    then: {{html: "<p>Hello again</p>"}}
"""

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (/usr/bin/chromium)"),
]


@pytest.fixture
def console_server(database_url: str, tmp_path: Path) -> Iterator[ServerProcess]:
    """``st-provider serve`` (gunicorn, two workers) on SQLite or PostgreSQL with an admin and RULES."""
    env = base_env(database_url, HOOK_TOKEN="hook-token-not-shown")
    added = run_cli(
        ["users", "add", "alice", "--admin"], env, input_text=f"{ADMIN_PASSWORD}\n{ADMIN_PASSWORD}\n"
    )
    assert added.returncode == 0, added.stderr
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    imported = run_cli(["rules", "import", str(rules), "--replace"], env)
    assert imported.returncode == 0, imported.stderr
    with serve(env, tmp_path / "server.log", workers=2) as server:
        server.extra.update(env)
        yield server


def answer(server: ServerProcess, operation: Operation) -> str | None:
    return call_operation(
        server.endpoint, operation, [AUTH, "loginUsername=ann"], namespace=NAMESPACE
    ).message


def settled(
    server: ServerProcess, operation: Operation, check: Callable[[str | None], bool], what: str
) -> None:
    """Wait until every serving process reloaded the rule set: several answers in a row pass ``check``."""
    wait_until(lambda: all(check(answer(server, operation)) for _ in range(6)), 30, what)


def journaled(server: ServerProcess, operation: Operation) -> int:
    result = run_cli(["calls", "list", "--operation", operation.value, "--format", "json"], server.extra)
    assert result.returncode == 0, result.stderr
    return len(json.loads(result.stdout))


def test_edit_validate_import_replace_and_toggle_rules_in_chromium(
    console_server: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from playwright.sync_api import expect, sync_playwright

    server = console_server
    assert answer(server, Operation.START_TICKET) == CLOSED
    # The what-if replays journaled calls: wait until the journal writer stored this one.
    wait_until(lambda: journaled(server, Operation.START_TICKET) >= 1, 30, "the StartTicket call journaled")
    shots = tmp_path_factory.mktemp("console-rules-screens")
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            watch(page, problems)
            sign_in(page, f"{server.url}/admin/")

            # One rule, from the list.
            page.get_by_role("link", name="Rules", exact=True).click()
            page.get_by_role("link", name="tickets closed", exact=True).click()
            expect(page.get_by_role("heading", level=1, name="Rule tickets closed")).to_be_visible()
            expect(page.get_by_role("row", name="StartTicket 1 of 1")).to_be_visible()
            expect(page.get_by_role("table").last.get_by_role("row").nth(1)).to_contain_text("created")
            page.screenshot(path=shots / "console-rules-one-rule.png", full_page=True)

            # The rules file with a mistake: the problem at its line, tied to the field.
            page.get_by_role("link", name="All rules").click()
            page.get_by_role("link", name="Edit the rules file").click()
            expect(page.get_by_role("heading", level=1, name="Edit the rules file")).to_be_visible()
            field = page.get_by_label("Rules file")
            text = field.input_value()
            assert f"message: {CLOSED}" in text and "Bearer ${HOOK_TOKEN}" in text
            assert "hook-token-not-shown" not in page.content()
            broken = text.replace(f"message: {CLOSED}", "message: 'Closed until {{ reopening }}'")
            line = 1 + broken.splitlines().index("    message: 'Closed until {{ reopening }}'")
            field.fill(broken)
            page.get_by_role("button", name="Validate").click()
            expect(page.get_by_role("alert")).to_contain_text("1 problem")
            expect(field).to_have_attribute("aria-invalid", "true")
            expect(field).to_have_accessible_description(
                re.compile(rf"line {line}, rule tickets closed: .*reopening")
            )
            expect(page.locator(".excerpt")).to_contain_text("Closed until {{ reopening }}")
            page.screenshot(path=shots / "console-rules-file-problem.png", full_page=True)

            # Fixed: valid, what Import would change, the what-if names the journaled call.
            field.fill(text.replace(f"message: {CLOSED}", f"message: {REOPEN}"))
            page.get_by_role("button", name="Validate").click()
            expect(page.get_by_role("status")).to_contain_text("The file is valid: 3 rules")
            imp = page.get_by_role("region", name="What Import would change")
            expect(imp).to_contain_text("rules: 0 created, 1 updated, 0 deleted")
            expect(imp.get_by_role("row", name="rule tickets closed updated")).to_be_visible()
            expect(imp).to_contain_text(f"+    message: {REOPEN}")
            expect(imp.locator("p", has_text="What-if")).to_contain_text(
                re.compile(r"journaled calls? .*, [1-9]\d* would be")
            )
            expect(imp.get_by_role("cell", name="StartTicket", exact=True).first).to_be_visible()
            expect(
                imp.get_by_role("listitem").filter(has_text=f"Message: {CLOSED} → {REOPEN}")
            ).to_be_visible()
            page.screenshot(path=shots / "console-rules-file-valid.png", full_page=True)

            page.get_by_role("button", name="Import", exact=True).click()
            expect(page.get_by_role("heading", level=1, name="Rules")).to_be_visible()
            expect(page.get_by_role("status")).to_contain_text(
                "Imported the rules file: rules: 0 created, 1 updated"
            )
            expect(page.get_by_role("cell", name="console:alice").first).to_be_visible()
            page.screenshot(path=shots / "console-rules-imported.png", full_page=True)
            settled(server, Operation.START_TICKET, lambda message: message == REOPEN, "the imported rule")

            # Replace all: the stored rule set becomes exactly the draft.
            page.get_by_role("link", name="Edit the rules file").click()
            page.get_by_label("Rules file").fill(REPLACEMENT)
            page.get_by_role("button", name="Validate").click()
            rep = page.get_by_role("region", name="What Replace all would change")
            expect(rep).to_contain_text("rules: 1 created, 1 updated, 2 deleted")
            expect(rep).to_contain_text("channels: 0 created, 0 updated, 1 deleted")
            page.screenshot(path=shots / "console-rules-file-replace-preview.png", full_page=True)
            page.get_by_role("button", name="Replace all").click()
            expect(page.get_by_role("status")).to_contain_text("Replaced the rule set")
            expect(page.get_by_role("cell", name="tickets closed", exact=True)).to_have_count(0)
            settled(server, Operation.START_CHAT, lambda message: message == CHATS_CLOSED, "the replacement")
            settled(server, Operation.START_TICKET, lambda message: message != REOPEN, "the replaced rule")

            # Disable, then enable from the rule's own page.
            page.get_by_role("button", name="Disable chats closed").click()
            expect(page.get_by_role("status")).to_contain_text("disabled")
            settled(
                server, Operation.START_CHAT, lambda message: message != CHATS_CLOSED, "the disabled rule"
            )
            page.get_by_role("link", name="chats closed", exact=True).click()
            expect(page.get_by_role("row", name=re.compile("StartChat not evaluated"))).to_be_visible()
            page.get_by_role("button", name="Enable chats closed").click()
            expect(page.get_by_role("status")).to_contain_text("enabled")
            settled(server, Operation.START_CHAT, lambda message: message == CHATS_CLOSED, "the enabled rule")
            page.goto(f"{server.url}/admin/rules/chats%20closed")
            expect(page.get_by_role("row", name="StartChat 1 of 1 (first) (last)")).to_be_visible()
            history = page.get_by_role("table").last
            expect(history.get_by_role("row").nth(1)).to_have_accessible_name(
                re.compile(r" console:alice enabled console: rules enable$")
            )
            expect(history.get_by_role("row").nth(2)).to_have_accessible_name(
                re.compile(r" console:alice disabled console: rules disable$")
            )
            page.screenshot(path=shots / "console-rules-one-rule-history.png", full_page=True)
        finally:
            browser.close()
    assert problems == []
    keep(shots)


def test_templates_are_listed_and_previewed_in_chromium(
    console_server: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from playwright.sync_api import expect, sync_playwright

    shots = tmp_path_factory.mktemp("console-templates-screens")
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            watch(page, problems)
            sign_in(page, f"{console_server.url}/admin/")
            page.get_by_role("navigation").get_by_role("link", name="Templates").click()
            expect(page.get_by_role("heading", level=1, name="Templates")).to_be_visible()
            expect(
                page.get_by_role("row", name=re.compile("ticket-mail email tickets, customer"))
            ).to_be_visible()
            page.screenshot(path=shots / "console-rules-templates.png", full_page=True)
            page.get_by_role("link", name="ticket-mail").click()
            expect(page.get_by_role("heading", level=1, name="Template ticket-mail")).to_be_visible()
            expect(page.get_by_text("Ticket ABC-12345: The printer is out of paper")).to_be_visible()
            frame = page.frame_locator("iframe.html-preview")
            expect(frame.get_by_role("heading", name="We got your ticket ABC-12345")).to_be_visible()
            expect(frame.get_by_text("Call us on +44 20 7946 0000.")).to_be_visible()
            page.get_by_label("Sample values").fill("args_ticketNumber=T-77\nargs_subject=<b>bold?</b>")
            page.get_by_role("button", name="Render").click()
            expect(frame.get_by_role("heading", name="We got your ticket T-77")).to_be_visible()
            expect(frame.get_by_text("<b>bold?</b>")).to_be_visible()  # a value is escaped, not markup
            page.screenshot(path=shots / "console-rules-template-preview.png", full_page=True)
        finally:
            browser.close()
    assert problems == []
    keep(shots)


def sign_in(page: Any, admin: str) -> None:
    from playwright.sync_api import expect

    page.goto(admin)
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", level=1, name="Overview")).to_be_visible()


def watch(page: Any, problems: list[str]) -> None:
    """Collect the browser's errors and failed requests; a Validate or Import refused for a problem
    in the file is the one 400 that is expected."""

    def response(r: Any) -> None:
        if r.status >= 400 and not (r.status == 400 and r.url.endswith("/admin/rules-file")):
            problems.append(f"{r.status} {r.url}")

    page.on(
        "console",
        lambda m: problems.append(m.text) if m.type == "error" and "status of 400" not in m.text else None,
    )
    page.on(
        "requestfailed",
        lambda request: (
            problems.append(request.url) if "ERR_ABORTED" not in (request.failure or "") else None
        ),
    )
    page.on("response", response)


def keep(shots: Path) -> None:
    if REVIEW_DIR.parent.is_dir():
        REVIEW_DIR.mkdir(exist_ok=True)
        for shot in shots.iterdir():
            shutil.copy(shot, REVIEW_DIR / shot.name)
