"""Test a call and Directory in a real browser (Debian's chromium driven by Playwright) against gunicorn.

``st-provider serve`` runs against the slapd fixture with a rule set imported by the CLI and a local
admin. The admin tests a StartTicket call as a directory user and sees which rules matched, why the
others did not and the answer; then presses Test connection and Test authentication (right and wrong
password). The tested passwords never appear in a page or the server's log. Screenshots are saved under
the pytest temp dir (and copied to /work/notes/screens/ when that directory's parent exists, for review).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.slapd import USERS, SlapdServer
from tests.support import ServerProcess, base_env, run_cli, serve

CHROMIUM = Path("/usr/bin/chromium")
REVIEW_DIR = Path("/work/notes/screens")
ADMIN_PASSWORD = "console-admin-pass-1"
WRONG_PASSWORD = "Not-Bobs-Password-9"
TYPED_PASSWORD = "typed-by-mistake-7"
RULES = """\
rules:
  - name: support staff first
    method: StartTicket
    when: "'Support Tier 1' in groups"
    then: {set: {groupName: "Tier 1"}}
  - name: urgent tickets
    method: StartTicket
    when: "'URGENT' in variables.get('subject', '')"
    then: {allow: false, message: "Call the hotline for urgent problems"}
  - name: greet
    method: GetUserDetails
    then: {html: "<p>Hello</p>"}
"""

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slapd,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (/usr/bin/chromium)"),
]


@pytest.fixture
def tools_server(sqlite_url: str, slapd: SlapdServer, tmp_path: Path) -> Iterator[ServerProcess]:
    env = base_env(sqlite_url, **slapd.env())
    added = run_cli(
        ["users", "add", "console-admin", "--admin"],
        env,
        input_text=f"{ADMIN_PASSWORD}\n{ADMIN_PASSWORD}\n",
    )
    assert added.returncode == 0, added.stderr
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    imported = run_cli(["rules", "import", str(rules), "--replace"], env)
    assert imported.returncode == 0, imported.stderr
    with serve(env, tmp_path / "server.log", workers=2) as server:
        yield server


def test_test_a_call_and_both_directory_buttons_in_chromium(
    tools_server: ServerProcess,
    slapd: SlapdServer,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    from playwright.sync_api import expect, sync_playwright

    bob = USERS["bob"]
    shots = tmp_path_factory.mktemp("console-tools-screens")
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on(
                "requestfailed",
                lambda request: (
                    problems.append(request.url) if "ERR_ABORTED" not in (request.failure or "") else None
                ),
            )
            page.on("response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else None)

            page.goto(f"{tools_server.url}/admin/")
            page.get_by_label("Username").fill("console-admin")
            page.get_by_label("Password").fill(ADMIN_PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            expect(page.get_by_role("heading", level=1, name="Overview")).to_be_visible()

            # Test a call: a StartTicket as the directory user bob (in Support Tier 1).
            page.get_by_role("link", name="Test a call", exact=True).click()
            expect(page.get_by_role("heading", level=1, name="Test a call")).to_be_visible()
            expect(page).to_have_title(re.compile("^Test a call"))
            expect(page.get_by_label("Operation")).to_have_value("StartTicket")
            expect(page.get_by_label("Variables")).to_contain_text("departmentName=Support")
            # A line that is not name=value is shown at the field; a typed password is dropped, with a note.
            page.get_by_label("Variables").fill(
                f"loginUsername=bob\nloginPassword={TYPED_PASSWORD}\nno equals"
            )
            page.get_by_role("button", name="Test", exact=True).click()
            expect(page.get_by_label("Variables")).to_have_attribute("aria-invalid", "true")
            expect(page.get_by_text("Line 2 is not name=value.")).to_be_visible()
            expect(page.get_by_role("status")).to_contain_text("rules never see passwords")
            expect(page.get_by_label("Variables")).not_to_contain_text(TYPED_PASSWORD)
            page.screenshot(path=shots / "console-test-call-problem.png", full_page=True)
            assert TYPED_PASSWORD not in page.content()

            page.get_by_label("Variables").fill("loginUsername=bob\nsubject=Printer out of toner")
            page.get_by_label("Directory user").fill("bob")
            page.get_by_role("button", name="Test", exact=True).click()
            expect(page.get_by_role("heading", level=2, name="Answer SmarterTrack would get")).to_be_visible()
            rows = page.get_by_role("row")
            expect(rows.filter(has_text="support staff first")).to_contain_text("matched")
            expect(rows.filter(has_text="urgent tickets")).to_contain_text("no match")
            expect(rows.filter(has_text="urgent tickets")).to_contain_text("when is false")
            expect(page.get_by_text("user: bob")).to_be_visible()
            expect(page.get_by_text("groupName=Tier 1")).to_be_visible()
            page.screenshot(path=shots / "console-test-call.png", full_page=True)

            # Directory: Test connection.
            page.get_by_role("link", name="Directory", exact=True).click()
            expect(page.get_by_role("heading", level=1, name="Directory")).to_be_visible()
            page.get_by_role("button", name="Test connection").click()
            expect(page.get_by_role("status")).to_contain_text("Every server answered.")
            expect(page.get_by_role("cell", name=f"ok as {slapd.service_dn}")).to_be_visible()
            page.screenshot(path=shots / "console-directory-connection.png", full_page=True)

            # Directory: Test authentication, the right password, then a wrong one.
            page.get_by_label("Username").fill("bob")
            page.get_by_label("Password").fill(bob.password)
            page.get_by_role("button", name="Test authentication").click()
            expect(page.get_by_role("status")).to_contain_text("Authentication succeeded: bob can sign in.")
            expect(page.get_by_role("cell", name=bob.dn)).to_be_visible()
            expect(page.get_by_label("Password")).to_have_value("")  # never echoed back
            expect(page.get_by_label("Username")).to_have_value("bob")
            page.screenshot(path=shots / "console-directory-authentication.png", full_page=True)

            page.get_by_label("Password").fill(WRONG_PASSWORD)
            page.get_by_role("button", name="Test authentication").click()
            expect(page.get_by_role("alert")).to_contain_text(
                "Authentication refused: the password was wrong"
            )
            expect(page.get_by_label("Password")).to_have_value("")
            page.screenshot(path=shots / "console-directory-refused.png", full_page=True)
            html = page.content()
            assert bob.password not in html and WRONG_PASSWORD not in html
        finally:
            browser.close()
    # The bad line's 400 is deliberate; nothing else may fail.
    assert [p for p in problems if not p.startswith("400 ") and "400 (BAD REQUEST)" not in p] == []
    server_log = (tmp_path / "server.log").read_text(encoding="utf-8", errors="replace")
    assert "console.directory_test" in server_log  # the tests were logged ...
    for secret in (bob.password, WRONG_PASSWORD, TYPED_PASSWORD):  # ... without the passwords
        assert secret not in server_log
    if REVIEW_DIR.parent.is_dir():
        REVIEW_DIR.mkdir(exist_ok=True)
        for shot in shots.iterdir():
            shutil.copy(shot, REVIEW_DIR / shot.name)
