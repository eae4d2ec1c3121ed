"""End to end: one-time sign-in codes through a running provider (gunicorn, its embedded worker).

A customer asks ``/signin-code`` (with its session cookie and CSRF token, as a browser
would), the delivery worker sends the code to a real SMTP receiver (aiosmtpd) or the
webhook emulator, and SmarterTrack's Authenticate (real SOAP) accepts it exactly once.
Also: an expired code, wrong codes throttled, an unknown address answered byte for byte
like a known one, the page's CSRF and headers, and the page absent when codes are off.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from provider.db.session import Database
from provider.db.signin import SignInCode
from provider.domain import Operation
from provider.web.console.app import SECURITY_HEADERS
from provider.web.signin_code import NEUTRAL
from tests.emulators.smtp import SmtpServer
from tests.emulators.webhook import WebhookReceiver
from tests.fixtures.server import soap_call
from tests.support import ServerProcess, base_env, run_cli, serve, wait_until

pytestmark = pytest.mark.e2e

RULES = """\
channels:
  otp-mail: {{type: email, host: "{smtp_host}", port: {smtp_port}, from: portal@example.org,
             starttls: false, category: otp}}
  otp-sms: {{type: webhook, url: "{hook}/sms", secret: "${{HOOK_SECRET}}", category: otp}}
templates:
  otp-email:
    kind: email
    subject: "Your sign-in code"
    text: "Your code is {{{{ code }}}}. It is valid for {{{{ minutes }}}} minutes."
  otp-sms:
    kind: webhook
    body: {{to: "{{{{ user.address }}}}", text: "Your code is {{{{ code }}}}"}}
rules: []
"""
OTP_ENV = {
    "ST_PROVIDER_OTP": "on",
    "ST_PROVIDER_OTP_CHANNEL_EMAIL": "otp-mail",
    "ST_PROVIDER_OTP_CHANNEL_SMS": "otp-sms",
    "ST_PROVIDER_OTP_MAX_PER_ADDRESS": "10",
    "ST_PROVIDER_THROTTLE_MAX_FAILURES": "3",
    "ST_PROVIDER_WORKER_POLL_INTERVAL": "0.1",
    "ST_PROVIDER_SESSION_SECRET": "s" * 40,
    "ST_PROVIDER_LOG_FORMAT": "json",
    "HOOK_SECRET": "webhook-secret",
}
#: Headers that differ between any two answers whatever they say.
PER_RESPONSE = {"date"}


@dataclass
class Running:
    server: ServerProcess
    database: Database
    smtp: SmtpServer
    hook: WebhookReceiver


@pytest.fixture
def running(
    database_url: str, smtp_server: SmtpServer, webhook_receiver: WebhookReceiver, tmp_path: Path
) -> Iterator[Running]:
    env = base_env(database_url, **OTP_ENV)
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        RULES.format(smtp_host=smtp_server.host, smtp_port=smtp_server.port, hook=webhook_receiver.url),
        encoding="utf-8",
    )
    for args in (
        ["rules", "import", str(rules), "--create"],
        ["users", "add", "alice", "--email", "alice@example.org", "--display-name", "Alice Liddell"],
        ["users", "add", "bob", "--phone", "+1 (415) 555-0123", "--display-name", "Bob"],
    ):
        result = run_cli(args, env, input_text="a-long-password\n")
        assert result.returncode == 0, result.stderr
    database = Database(database_url)
    try:
        with serve(env, tmp_path / "server.log", workers=2) as server:
            yield Running(server, database, smtp_server, webhook_receiver)
    finally:
        database.dispose()


class Browser:
    """A customer's browser: keeps the page's cookie, fills in the form."""

    def __init__(self, base: str) -> None:
        self.client = httpx.Client(base_url=base, timeout=30)

    def form(self) -> httpx.Response:
        return self.client.get("/signin-code")

    def token(self) -> str:
        match = re.search(r'name="csrf_token" value="([^"]+)"', self.form().text)
        assert match is not None
        return match.group(1)

    def ask(self, address: str, token: str | None = None) -> httpx.Response:
        data = {"address": address, "csrf_token": self.token() if token is None else token}
        return self.client.post("/signin-code", data=data)

    def close(self) -> None:
        self.client.close()


@pytest.fixture
def browser(running: Running) -> Iterator[Browser]:
    made = Browser(running.server.url)
    yield made
    made.close()


def mailed_code(smtp: SmtpServer, count: int) -> str:
    assert smtp.wait_for(count, timeout=60), "no mail arrived"
    body = smtp.messages[count - 1].message.get_body(("plain",))
    assert body is not None
    match = re.search(r"Your code is ([0-9]{6})\.", body.get_content())
    assert match is not None
    return match.group(1)


def authenticate(server: ServerProcess, username: str, password: str) -> dict[str, str]:
    answer = soap_call(
        server, Operation.AUTHENTICATE, f"loginUsername={username}", f"loginPassword={password}"
    )
    assert answer.success, answer.message
    return dict(line.split("=", 1) for line in answer.output_variables)


def comparable(response: httpx.Response) -> tuple[int, list[tuple[str, str]], bytes]:
    headers = sorted((k.lower(), v) for k, v in response.headers.items() if k.lower() not in PER_RESPONSE)
    return response.status_code, headers, response.content


def test_a_mailed_code_signs_in_once(running: Running, browser: Browser) -> None:
    answer = browser.ask("Alice@Example.org")
    assert answer.status_code == 200 and NEUTRAL in answer.text
    code = mailed_code(running.smtp, 1)
    assert running.smtp.messages[0].rcpt_tos == ["alice@example.org"]
    assert authenticate(running.server, "alice@example.org", code) == {
        "Authentication": "OK",
        "EmailAddress": "alice@example.org",
        "DisplayName": "Alice Liddell",
    }
    assert authenticate(running.server, "alice@example.org", code) == {"Authentication": "FAIL"}
    assert authenticate(running.server, "alice", "a-long-password")["Authentication"] == "OK"


def test_a_code_by_sms_through_the_webhook(running: Running, browser: Browser) -> None:
    browser.ask("+1 415 555 0123")
    wait_until(lambda: len(running.hook.deliveries) == 1, 60, "the webhook delivery")
    [message] = running.hook.deliveries
    assert message["to"] == "+14155550123"
    code = re.sub(r"\D", "", message["text"])
    assert authenticate(running.server, "+14155550123", code) == {
        "Authentication": "OK",
        "DisplayName": "Bob",
    }


def test_an_expired_code_fails(running: Running, browser: Browser) -> None:
    browser.ask("alice@example.org")
    code = mailed_code(running.smtp, 1)
    # The server's clock cannot be moved: its code's expiry is, to just before now.
    with running.database.session() as session:
        session.execute(sa.update(SignInCode).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    assert authenticate(running.server, "alice@example.org", code) == {"Authentication": "FAIL"}


def test_wrong_codes_are_throttled(running: Running, browser: Browser) -> None:
    browser.ask("alice@example.org")
    code = mailed_code(running.smtp, 1)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for _ in range(3):
        assert authenticate(running.server, "alice@example.org", wrong) == {"Authentication": "FAIL"}
    # Locked by the throttle: even the right code is refused now.
    assert authenticate(running.server, "alice@example.org", code) == {"Authentication": "FAIL"}
    log = running.server.log()
    assert '"event": "auth.lockout"' in log or '"event":"auth.lockout"' in log


def test_an_unknown_address_is_answered_like_a_known_one(running: Running, browser: Browser) -> None:
    token = browser.token()
    known = browser.ask("alice@example.org", token)
    unknown = browser.ask("nobody@example.org", token)
    malformed = browser.ask("not an address", token)
    assert comparable(known) == comparable(unknown) == comparable(malformed)
    mailed_code(running.smtp, 1)
    assert len(running.smtp.messages) == 1


def test_the_page_needs_its_token_and_has_the_console_headers(running: Running, browser: Browser) -> None:
    page = browser.form()
    assert page.status_code == 200
    assert "E-mail address or phone number" in page.text and "<script" not in page.text
    for name, value in SECURITY_HEADERS:
        assert page.headers[name] == value
    token = browser.token()
    missing = browser.client.post("/signin-code", data={"address": "alice@example.org"})
    wrong = browser.ask("alice@example.org", token[::-1])
    assert missing.status_code == wrong.status_code == 403
    for name, value in SECURITY_HEADERS:
        assert wrong.headers[name] == value
    other = Browser(running.server.url)  # the token without the session it belongs to
    try:
        assert (
            other.client.post(
                "/signin-code", data={"address": "a@example.org", "csrf_token": token}
            ).status_code
            == 403
        )
    finally:
        other.close()
    assert running.smtp.messages == []


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_off_by_default(provider_server: ServerProcess, method: str) -> None:
    answer = httpx.request(
        method, f"{provider_server.url}/signin-code", data={"address": "a@example.org"}, timeout=30
    )
    assert answer.status_code == 404
