"""The admin console in a real browser (Debian's chromium driven by Playwright) against gunicorn.

An admin created with ``st-provider users add --admin`` signs in, sees each page with real data
(a rule set imported by the CLI, SOAP calls in the journal), disables a rule and sees a real SOAP
call's answer change, finds a NotifyEventFired call in Events and Deliveries, then signs out, on
SQLite and on PostgreSQL. Screenshots are saved under the pytest temp dir (and copied
to /work/notes/screens/console-*.png when that directory's parent exists, for review).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from provider.domain import Operation
from provider.soap.client import call_operation
from tests.fixtures.server import AUTH, NAMESPACE
from tests.support import ServerProcess, base_env, run_cli, serve, wait_until

CHROMIUM = Path("/usr/bin/chromium")
REVIEW_DIR = Path("/work/notes/screens")
ADMIN_PASSWORD = "console-admin-pass-1"
RULES = """\
channels:
  hook:
    type: webhook
    url: http://127.0.0.1:9/hook
rules:
  - name: tickets closed
    method: StartTicket
    then: {allow: false, message: "Tickets are closed for maintenance"}
  - name: greet
    method: GetUserDetails
    then: {html: "<p>Hello</p>"}
  - name: ticket-hook
    method: NotifyEventFired
    then:
      notify:
        - channel: hook
          text: "ticket {{ args.get('ticketNumber', '') }}"
"""

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (/usr/bin/chromium)"),
]


@pytest.fixture
def console_server(database_url: str, tmp_path: Path) -> Iterator[ServerProcess]:
    """The console on SQLite and on PostgreSQL (``database_url`` is parametrised)."""
    env = base_env(database_url)
    added = run_cli(
        ["users", "add", "alice", "--admin"], env, input_text=f"{ADMIN_PASSWORD}\n{ADMIN_PASSWORD}\n"
    )
    assert added.returncode == 0, added.stderr
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    imported = run_cli(["rules", "import", str(rules), "--replace"], env)
    assert imported.returncode == 0, imported.stderr
    with serve(env, tmp_path / "server.log", workers=2) as server:
        yield server


def start_ticket(server: ServerProcess) -> str | None:
    answer = call_operation(
        server.endpoint, Operation.START_TICKET, [AUTH, "subject=printer"], namespace=NAMESPACE
    )
    return answer.message


def test_sign_in_pages_disable_a_rule_and_sign_out_in_chromium(
    console_server: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from playwright.sync_api import expect, sync_playwright

    assert start_ticket(console_server) == "Tickets are closed for maintenance"
    notified = call_operation(
        console_server.endpoint,
        Operation.NOTIFY_EVENT_FIRED,
        [AUTH, "eventType=502000", "args_ticketNumber=T-42"],
        namespace=NAMESPACE,
    )
    assert notified.success
    shots = tmp_path_factory.mktemp("console-screens")
    problems: list[str] = []
    admin = f"{console_server.url}/admin/"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            # A request the browser itself abandoned when the page moved on (the favicon of a page
            # left at once) is not a failure of ours; any other failed request is.
            page.on(
                "requestfailed",
                lambda request: (
                    problems.append(request.url) if "ERR_ABORTED" not in (request.failure or "") else None
                ),
            )
            page.on("response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else None)

            page.goto(admin)
            expect(page).to_have_url(re.compile(r"/admin/signin$"))
            page.get_by_label("Username").fill("alice")
            page.get_by_label("Password").fill("not the password")
            page.get_by_role("button", name="Sign in").click()
            expect(page.get_by_role("alert")).to_contain_text("Wrong username or password")
            page.screenshot(path=shots / "console-signin-refused.png", full_page=True)

            page.get_by_label("Username").fill("alice")
            page.get_by_label("Password").fill(ADMIN_PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            expect(page.get_by_role("heading", level=1, name="Overview")).to_be_visible()
            expect(page).to_have_title(re.compile("^Overview"))
            # The stylesheet (our own file, allowed by the CSP) applied: the banner is dark.
            expect(page.locator("header")).to_have_css("background-color", "rgb(16, 42, 67)")
            expect(page.get_by_role("img", name="SOAP calls per operation in the last hour")).to_be_visible()
            expect(page.get_by_role("cell", name="StartTicket", exact=True)).to_be_visible()
            page.screenshot(path=shots / "console-overview.png", full_page=True)

            page.get_by_role("link", name="Rules", exact=True).click()
            expect(page.get_by_role("heading", level=1, name="Rules")).to_be_visible()
            expect(page.get_by_role("cell", name="tickets closed", exact=True)).to_be_visible()
            page.screenshot(path=shots / "console-rules.png", full_page=True)
            page.get_by_role("button", name="Disable tickets closed").click()
            expect(page.get_by_role("status")).to_contain_text("disabled")
            expect(page.get_by_role("button", name="Enable tickets closed")).to_be_visible()
            expect(page.get_by_role("cell", name="console:alice").first).to_be_visible()
            page.screenshot(path=shots / "console-rules-disabled.png", full_page=True)
            # The serving processes reload the rule set within ST_PROVIDER_RULES_REFRESH_SECONDS.
            wait_until(
                lambda: start_ticket(console_server) != "Tickets are closed for maintenance", 20, "reload"
            )

            page.get_by_role("link", name="Calls", exact=True).click()
            expect(page.get_by_role("heading", level=1, name="Calls")).to_be_visible()
            page.get_by_label("Operation").select_option("StartTicket")
            page.get_by_role("button", name="Filter").click()
            expect(page.get_by_role("cell", name="denied", exact=True).first).to_be_visible()
            page.screenshot(path=shots / "console-calls.png", full_page=True)

            page.get_by_role("link", name="Events", exact=True).click()
            expect(page.get_by_role("heading", level=1, name="Events")).to_be_visible()
            expect(page.get_by_text("ticketNumber=T-42")).to_be_visible()
            page.screenshot(path=shots / "console-events.png", full_page=True)

            page.get_by_role("link", name="Deliveries", exact=True).click()
            expect(page.get_by_role("heading", level=1, name="Deliveries")).to_be_visible()
            page.get_by_label("Channel").fill("hook")
            page.get_by_role("button", name="Filter").click()
            expect(page.get_by_role("cell", name="ticket-hook", exact=True)).to_be_visible()
            page.screenshot(path=shots / "console-deliveries.png", full_page=True)

            page.get_by_role("button", name="Sign out").click()
            expect(page.get_by_role("button", name="Sign in")).to_be_visible()
            page.goto(admin)
            expect(page).to_have_url(re.compile(r"/admin/signin$"))
        finally:
            browser.close()
    # The wrong password's 401 is a deliberate error in chromium's console; nothing else may fail.
    assert [p for p in problems if "401" not in p] == []
    if REVIEW_DIR.parent.is_dir():
        REVIEW_DIR.mkdir(exist_ok=True)
        for shot in shots.iterdir():
            shutil.copy(shot, REVIEW_DIR / shot.name)
