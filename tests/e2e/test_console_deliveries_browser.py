"""Events and Deliveries of the console in a real browser, against gunicorn and a partner emulator.

``st-provider serve`` (gunicorn, with its embedded delivery worker) on SQLite and on
PostgreSQL; a webhook receiver (tests/emulators) answers the first post with a 502 whose
body carries ``<script>``. A NotifyEventFired call appears in Events; its delivery fails
(one attempt allowed), the admin opens it, sees the partner's answer as text, presses
**Retry now** (delivered), **Send again** (a new delivery, delivered: the partner got two
posts with different idempotency keys), downloads the CSV of the template filter, and
finally the idle session expires. Screenshots go under the pytest temp dir (and to
/work/notes/screens/ for review when that directory's parent exists).
"""

from __future__ import annotations

import csv
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from provider.domain import Operation
from provider.soap.client import call_operation
from tests.emulators.base import Reply
from tests.emulators.webhook import WebhookReceiver
from tests.fixtures.server import AUTH, NAMESPACE
from tests.support import ServerProcess, base_env, run_cli, serve, wait_until

CHROMIUM = Path("/usr/bin/chromium")
REVIEW_DIR = Path("/work/notes/screens")
ADMIN_PASSWORD = "console-admin-pass-2"
HOSTILE = "<script>alert(1)</script>"
IDLE_MINUTES = 1
RULES = """\
channels:
  hook: {type: webhook, url: "@URL@/events", max_attempts: 1}
templates:
  ticket-hook:
    kind: webhook
    body: {ticket: "{{ args.get('ticketNumber', '') }}"}
rules:
  - name: ticket-hook
    method: NotifyEventFired
    then:
      notify:
        - {channel: hook, template: ticket-hook}
"""

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (/usr/bin/chromium)"),
]


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as emulator:
        yield emulator


@pytest.fixture
def server(database_url: str, receiver: WebhookReceiver, tmp_path: Path) -> Iterator[ServerProcess]:
    """``st-provider serve`` with a delivery worker, an admin ``alice`` and the rules above."""
    env = base_env(database_url, ST_PROVIDER_SESSION_IDLE_MINUTES=str(IDLE_MINUTES))
    added = run_cli(
        ["users", "add", "alice", "--admin"], env, input_text=f"{ADMIN_PASSWORD}\n{ADMIN_PASSWORD}\n"
    )
    assert added.returncode == 0, added.stderr
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.replace("@URL@", receiver.url), encoding="utf-8")
    imported = run_cli(["rules", "import", str(rules), "--replace"], env)
    assert imported.returncode == 0, imported.stderr
    with serve(env, tmp_path / "server.log", workers=2) as process:
        yield process


def reload_until(page: Any, ready: Callable[[], bool], what: str, timeout: float = 60) -> None:
    """Reload ``page`` until ``ready()`` (the worker runs beside the server, not in the page)."""

    def check() -> bool:
        page.reload()
        return ready()

    wait_until(check, timeout, what)


def field(page: Any, name: str) -> str:
    """The value cell of the row headed ``name`` in a detail page's field table."""
    return str(
        page.locator("table.fields tr", has=page.get_by_role("rowheader", name=name, exact=True))
        .locator("td")
        .inner_text()
    )


def test_notify_event_retry_send_again_csv_and_expiry_in_chromium(
    server: ServerProcess,
    receiver: WebhookReceiver,
    database_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    from playwright.sync_api import expect, sync_playwright

    receiver.script(Reply(502, {"error": f"{HOSTILE} upstream down"}))
    answer = call_operation(
        server.endpoint,
        Operation.NOTIFY_EVENT_FIRED,
        [AUTH, "eventType=502000", "args_ticketNumber=T-77"],
        namespace=NAMESPACE,
    )
    assert answer.success
    wait_until(lambda: len(receiver.received) == 1, 60, "the first post reached the partner")
    backend = "postgresql" if database_url.startswith("postgresql") else "sqlite"
    shots = tmp_path_factory.mktemp(f"console-deliveries-{backend}")
    problems: list[str] = []
    admin = f"{server.url}/admin/"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
            page = context.new_page()
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("dialog", lambda d: problems.append(f"dialog {d.message}"))
            page.on(
                "requestfailed",
                lambda request: (
                    problems.append(request.url) if "ERR_ABORTED" not in (request.failure or "") else None
                ),
            )
            page.on("response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else None)

            page.goto(admin)
            page.get_by_label("Username").fill("alice")
            page.get_by_label("Password").fill(ADMIN_PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            expect(page.get_by_role("heading", level=1, name="Overview")).to_be_visible()
            expect(page.get_by_role("columnheader", name="p95 latency (ms)")).to_be_visible()
            expect(page.get_by_role("cell", name="NotifyEventFired", exact=True)).to_be_visible()
            page.screenshot(path=shots / f"deliveries-{backend}-overview.png", full_page=True)

            # The event, then its delivery, which failed at the partner (one attempt allowed).
            page.get_by_role("link", name="Events", exact=True).click()
            expect(page.get_by_text("ticketNumber=T-77")).to_be_visible()
            page.get_by_role("link", name=re.compile(r"^Event \d+$")).first.click()
            expect(page.get_by_role("heading", level=1, name=re.compile(r"^Event \d+$"))).to_be_visible()
            expect(page.get_by_role("cell", name="T-77", exact=True)).to_be_visible()
            page.screenshot(path=shots / f"deliveries-{backend}-event.png", full_page=True)
            page.get_by_role("link", name=re.compile(r"^Delivery \d+$")).first.click()
            heading = page.get_by_role("heading", level=1, name=re.compile(r"^Delivery \d+$"))
            expect(heading).to_be_visible()
            first_id = int(heading.inner_text().split()[1])
            reload_until(page, lambda: field(page, "Status").startswith("failed"), "the delivery failed")
            assert field(page, "Template") == "ticket-hook"
            answer_cell = page.get_by_role("cell", name=re.compile("upstream down"))
            expect(answer_cell).to_contain_text(HOSTILE)  # shown as text, never run (no dialog)
            expect(page.get_by_role("button", name="Send again")).to_have_count(0)
            page.screenshot(path=shots / f"deliveries-{backend}-failed.png", full_page=True)

            # Retry now: the partner answers 200 this time.
            page.get_by_role("button", name="Retry now").click()
            expect(page.get_by_role("status")).to_contain_text("queued again")
            reload_until(page, lambda: field(page, "Status").startswith("delivered"), "the retry delivered")
            expect(page.locator("tbody tr", has_text="upstream down")).to_have_count(1)
            expect(page.get_by_role("cell", name="delivered", exact=True)).to_have_count(1)  # the new attempt
            expect(page.get_by_role("cell", name="console:alice", exact=True)).to_be_visible()
            page.screenshot(path=shots / f"deliveries-{backend}-retried.png", full_page=True)

            # Send again: a new delivery of the same notification.
            page.get_by_role("button", name="Send again").click()
            heading = page.get_by_role("heading", level=1, name=re.compile(r"^Delivery \d+$"))
            expect(page.get_by_role("status")).to_contain_text(f"Delivery {first_id} sent again as delivery")
            second_id = int(heading.inner_text().split()[1])
            assert second_id != first_id
            reload_until(page, lambda: field(page, "Status").startswith("delivered"), "the re-send delivered")
            expect(page.get_by_role("link", name=str(first_id), exact=True)).to_be_visible()  # its origin
            expect(page.get_by_role("cell", name='{"ticket": "T-77"}', exact=True)).to_be_visible()
            page.screenshot(path=shots / f"deliveries-{backend}-sent-again.png", full_page=True)
            keys = {r.headers.get("idempotency-key") for r in receiver.accepted}
            assert len(receiver.accepted) == 2 and len(keys) == 2
            assert [body["ticket"] for body in receiver.deliveries] == ["T-77", "T-77"]

            # The table filtered by template, and its CSV.
            page.get_by_role("link", name="Deliveries", exact=True).click()
            page.get_by_label("Template").fill("ticket-hook")
            page.get_by_role("button", name="Filter").click()
            expect(page.get_by_role("link", name=re.compile(r"^Delivery \d+$"))).to_have_count(2)
            page.screenshot(path=shots / f"deliveries-{backend}-list.png", full_page=True)
            with page.expect_download() as caught:
                page.get_by_role("link", name="Download CSV").click()
            download = caught.value
            assert download.suggested_filename == "deliveries.csv"
            saved = shots / "deliveries.csv"
            download.save_as(saved)
            with saved.open(encoding="utf-8", newline="") as handle:
                rows = list(csv.DictReader(handle))
            assert [(int(r["id"]), r["status"], r["template"]) for r in rows] == [
                (second_id, "delivered", "ticket-hook"),
                (first_id, "delivered", "ticket-hook"),
            ]

            # Left alone longer than the idle timeout, the session is gone.
            time.sleep(IDLE_MINUTES * 60 + 5)
            page.get_by_role("link", name="Events", exact=True).click()
            expect(page).to_have_url(re.compile(r"/admin/signin$"))
            expect(page.get_by_role("button", name="Sign in")).to_be_visible()
            expect(page.get_by_role("status")).to_contain_text("session ended")
            page.screenshot(path=shots / f"deliveries-{backend}-expired.png", full_page=True)
        finally:
            browser.close()
    assert problems == []
    if REVIEW_DIR.parent.is_dir():
        REVIEW_DIR.mkdir(exist_ok=True)
        for shot in shots.glob("*.png"):
            shutil.copy(shot, REVIEW_DIR / shot.name)
