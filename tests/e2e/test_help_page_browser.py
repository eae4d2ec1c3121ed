"""The public help page in a real browser (Debian's chromium driven by Playwright), served by gunicorn.

Screenshots are saved under the pytest temp dir (and copied to /work/notes/screens/ when that
directory's parent exists, for people reviewing the page).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from provider.soap.contract import OPERATIONS
from tests.support import ServerProcess

CHROMIUM = Path("/usr/bin/chromium")
REVIEW_DIR = Path("/work/notes/screens")

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (/usr/bin/chromium)"),
]


def test_help_page_and_an_operation_page_in_chromium(
    provider_server: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from playwright.sync_api import expect, sync_playwright

    shots = tmp_path_factory.mktemp("help-screens")
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            # A CSP violation (say, the stylesheet's hash not matching) is reported on the console.
            page.on(
                "console", lambda message: problems.append(message.text) if message.type == "error" else None
            )
            # A request the browser abandoned because the page moved on is not a failure of ours.
            page.on(
                "requestfailed",
                lambda request: (
                    problems.append(request.url) if "ERR_ABORTED" not in (request.failure or "") else None
                ),
            )

            page.goto(provider_server.endpoint)
            expect(page).to_have_title(re.compile("ExternalProvider"))
            expect(page.get_by_role("heading", level=1, name="ExternalProvider")).to_be_visible()
            expect(page.get_by_role("heading", level=2, name="Connect SmarterTrack")).to_be_visible()
            for spec in OPERATIONS:
                expect(page.get_by_role("link", name=spec.name, exact=True)).to_be_visible()
            expect(page.get_by_role("link", name=f"{provider_server.endpoint}?wsdl").first).to_be_visible()
            # The stylesheet applied (allowed by the CSP hash): the banner is dark.
            expect(page.locator("header")).to_have_css("background-color", "rgb(16, 42, 67)")
            page.screenshot(path=shots / "help-index.png", full_page=True)

            page.get_by_role("link", name="StartTicket", exact=True).click()
            expect(page).to_have_url(re.compile(r"\?op=StartTicket$"))
            expect(page.get_by_role("heading", level=1, name="StartTicket")).to_be_visible()
            expect(page.get_by_role("heading", level=2, name="SOAP 1.1")).to_be_visible()
            expect(page.get_by_role("heading", level=2, name="SOAP 1.2")).to_be_visible()
            expect(page.get_by_role("columnheader", name="Name")).to_be_visible()
            expect(page.get_by_role("cell", name="authPW")).to_be_visible()
            expect(page.locator("#soap11-request")).to_contain_text(
                'SOAPAction: "http://tempuri.org/StartTicket"'
            )
            page.screenshot(path=shots / "help-operation.png", full_page=True)

            page.get_by_role("link", name="All operations").click()
            expect(page.get_by_role("heading", level=1, name="ExternalProvider")).to_be_visible()

            response = page.goto(f"{provider_server.endpoint}?op=NoSuchThing")
            assert response is not None and response.status == 404
            expect(page.get_by_role("heading", level=1, name="Unknown operation")).to_be_visible()
            page.screenshot(path=shots / "help-unknown.png", full_page=True)
        finally:
            browser.close()
    # The 404 above is a deliberate console error in chromium; nothing else may fail.
    assert [p for p in problems if "404" not in p] == []
    if REVIEW_DIR.parent.is_dir():
        REVIEW_DIR.mkdir(exist_ok=True)
        for shot in shots.iterdir():
            shutil.copy(shot, REVIEW_DIR / shot.name)
