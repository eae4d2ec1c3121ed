"""Sign-in codes end to end inside one process, on SQLite and PostgreSQL.

The rules file (channels, templates, a ``RequestSignInCode`` rule) is imported, local users
are added, a code is requested, the delivery worker sends it to a real SMTP receiver
(aiosmtpd) or the webhook emulator, and the code signs in through the domain
``Provider`` (the wiring of :func:`provider.auth.build_authenticator`) exactly once.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import sqlalchemy as sa

from provider.assembly import build_signin_requests
from provider.auth import build_authenticator
from provider.auth.local import LocalUsers
from provider.auth.throttle import Throttle, user_key
from provider.calls import Provider
from provider.comms.signin_codes import SignInCodes
from provider.comms.signin_delivery import EVENT_NAME, Outcome, SignInCodeRequests, address_finders
from provider.db.events import DeliveryRecord, EventRecord
from provider.db.session import Database
from provider.db.signin import SignInCode
from provider.domain import CallRequest, Operation
from provider.events.worker import Worker
from provider.rules.loader import parse_rules
from provider.rules.store import RuleStore
from provider.secret import Secret
from provider.settings import OtpSettings, Settings, ThrottleSettings, WorkerSettings
from provider.variables import InputVariables
from tests.emulators.smtp import SmtpServer
from tests.emulators.webhook import WebhookReceiver

PASSWORD = "ws-password-for-tests"
RULES = """\
channels:
  otp-mail: {type: email, host: "@SMTP_HOST@", port: @SMTP_PORT@, from: portal@example.org,
             starttls: false, category: otp}
  otp-sms: {type: webhook, url: "@HOOK_URL@/sms", secret: "${HOOK_SECRET}", category: otp}
templates:
  otp-email:
    kind: email
    subject: "Your sign-in code"
    text: "Hello {{ user.display_name or 'there' }}, your code is {{ code }} ({{ minutes }} minutes)."
  otp-sms:
    kind: webhook
    body: {to: "{{ user.address }}", text: "Code {{ code }}, valid {{ minutes }} min"}
rules:
  - name: partner-customers
    method: RequestSignInCode
    when: "email.endswith('@partner.example.org')"
    then: {stop: true}
  - name: not-this-one
    method: [RequestSignInCode]
    when: "username == 'blocked@example.org'"
    then: {allow: false}
"""


def otp_settings(**extra: object) -> Settings:
    otp = OtpSettings(enabled=True, channel_email="otp-mail", channel_sms="otp-sms")
    return Settings(
        web_service_password=Secret(PASSWORD),
        auth="local",
        otp=replace(otp, **extra),  # type: ignore[arg-type]
        throttle=ThrottleSettings(max_failures=3),
        worker=WorkerSettings(http_timeout=5),
        environment={"HOOK_SECRET": "webhook-secret"},
    )


@pytest.fixture
def setup(
    database: Database, smtp_server: SmtpServer, webhook_receiver: WebhookReceiver
) -> Iterator[Database]:
    text = RULES.replace("@SMTP_HOST@", smtp_server.host).replace("@SMTP_PORT@", str(smtp_server.port))
    text = text.replace("@HOOK_URL@", webhook_receiver.url)
    RuleStore(database).import_rules(parse_rules(text), replace=True, actor="test", command="test")
    users = LocalUsers(database)
    users.add("alice", "alice-password-1", email="Alice@Example.org", display_name="Alice Liddell")
    users.add("bob", "bob-password-12", phone="+1 (415) 555-0123", display_name="Bob")
    users.add("carol", "carol-password", email="blocked@example.org")
    yield database


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    made: list[Worker] = []
    yield made
    for worker in made:
        worker.close()


def provider_for(settings: Settings, database: Database) -> Provider:
    codes = SignInCodes(database, settings.otp)
    return Provider(Secret(PASSWORD), authenticator=build_authenticator(settings, database, codes=codes))


def requests_for(settings: Settings, database: Database) -> SignInCodeRequests:
    provider = provider_for(settings, database)
    built = build_signin_requests(settings, database, provider.authenticator)
    assert built is not None
    return built


def login(provider: Provider, username: str, password: str) -> dict[str, str]:
    variables = InputVariables(
        [("authPW", PASSWORD), ("loginUsername", username), ("loginPassword", password)]
    )
    result = provider.call(CallRequest(Operation.AUTHENTICATE, variables, client_address="10.1.1.1"))
    assert result.success
    return dict(result.output.items())


def deliver(settings: Settings, database: Database, workers: list[Worker]) -> int:
    worker = Worker(settings, database)
    workers.append(worker)
    return worker.run_once()


def code_in(text: str) -> str:
    match = re.search(r"[Cc]ode(?: is)? ([0-9A-Z]{4,8})\b", text)
    assert match is not None, text
    return match.group(1)


def test_an_email_code_reaches_the_customer_and_signs_in_once(
    setup: Database, smtp_server: SmtpServer, workers: list[Worker]
) -> None:
    settings = otp_settings()
    assert requests_for(settings, setup).request("ALICE@example.org", "10.0.0.1") is Outcome.SENT
    with setup.session() as session:
        [event] = session.scalars(sa.select(EventRecord)).all()
        [delivery] = session.scalars(sa.select(DeliveryRecord)).all()
        assert (event.event_name, delivery.channel, delivery.recipient) == (
            EVENT_NAME,
            "otp-mail",
            "alice@example.org",
        )
    assert deliver(settings, setup, workers) == 1
    [mail] = smtp_server.messages
    assert mail.rcpt_tos == ["alice@example.org"]
    body = mail.message.get_body(("plain",))
    assert body is not None
    content = body.get_content()
    assert "Hello Alice Liddell" in content and "(5 minutes)" in content
    code = code_in(content)

    provider = provider_for(settings, setup)
    assert login(provider, "alice@example.org", code) == {
        "Authentication": "OK",
        "EmailAddress": "Alice@Example.org",
        "DisplayName": "Alice Liddell",
    }
    assert login(provider, "alice@example.org", code)["Authentication"] == "FAIL"
    assert login(provider, "alice", "alice-password-1")["Authentication"] == "OK"  # passwords still work


def test_a_phone_code_goes_through_a_webhook(
    setup: Database, webhook_receiver: WebhookReceiver, workers: list[Worker]
) -> None:
    settings = otp_settings(length=8, alphabet="alphanumeric")
    assert requests_for(settings, setup).request("+1 415 555 0123", None) is Outcome.SENT
    assert deliver(settings, setup, workers) == 1
    [message] = webhook_receiver.deliveries
    assert message["to"] == "+14155550123"
    code = code_in(message["text"])
    assert len(code) == 8
    provider = provider_for(settings, setup)
    assert login(provider, "+14155550123", code.lower()) == {"Authentication": "OK", "DisplayName": "Bob"}


def test_who_gets_a_code(setup: Database) -> None:
    requests = requests_for(otp_settings(), setup)
    assert requests.request("nobody@example.org", None) is Outcome.UNKNOWN
    assert requests.request("blocked@example.org", None) is Outcome.REFUSED  # a user, but a rule says no
    assert requests.request("new.customer@partner.example.org", None) is Outcome.SENT  # allowed by a rule
    assert requests.request("+1 212 555 0100", None) is Outcome.UNKNOWN
    assert requests.request("not an address", None) is Outcome.INVALID
    with setup.session() as session:
        rows = session.execute(sa.select(SignInCode.address, SignInCode.username)).all()
        assert [tuple(r) for r in rows] == [("new.customer@partner.example.org",) * 2]
        assert session.scalar(sa.select(sa.func.count()).select_from(DeliveryRecord)) == 1


def test_a_rule_allowed_address_signs_in_as_itself(
    setup: Database, smtp_server: SmtpServer, workers: list[Worker]
) -> None:
    settings = otp_settings()
    requests_for(settings, setup).request("new.customer@partner.example.org", None)
    deliver(settings, setup, workers)
    body = smtp_server.messages[0].message.get_body(("plain",))
    assert body is not None
    code = code_in(body.get_content())
    assert "Hello there" in body.get_content()
    answer = login(provider_for(settings, setup), "New.Customer@partner.example.org", code)
    assert answer == {"Authentication": "OK", "EmailAddress": "new.customer@partner.example.org"}


def test_limits_send_nothing_more(setup: Database) -> None:
    requests = requests_for(otp_settings(max_per_address=2, max_per_client=3), setup)
    outcomes = [requests.request("alice@example.org", "10.0.0.7") for _ in range(3)]
    assert outcomes == [Outcome.SENT, Outcome.SENT, Outcome.LIMITED]
    assert requests.request("+14155550123", "10.0.0.7") is Outcome.LIMITED  # the client's 4th
    assert requests.request("+14155550123", "10.0.0.8") is Outcome.SENT
    with setup.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(DeliveryRecord)) == 3


def test_a_later_code_replaces_the_earlier_and_wrong_codes_are_throttled(
    setup: Database, smtp_server: SmtpServer, workers: list[Worker]
) -> None:
    settings = otp_settings()
    requests = requests_for(settings, setup)
    requests.request("alice@example.org", None)
    with setup.session() as session:
        first = code_in(json.dumps(session.scalars(sa.select(DeliveryRecord.params)).one()))
    requests.request("alice@example.org", None)
    assert deliver(settings, setup, workers) == 2
    replaced, latest = (m.message.get_body(("plain",)).get_content() for m in smtp_server.messages)  # type: ignore[union-attr]
    assert f"your code is {first}" in replaced  # unsent when replaced: sent as written
    second = code_in(latest)
    provider = provider_for(settings, setup)
    if first != second:
        assert login(provider, "alice@example.org", first)["Authentication"] == "FAIL"
    wrong = "999999" if second != "999999" else "888888"
    assert login(provider, "alice@example.org", wrong)["Authentication"] == "FAIL"
    key = user_key("alice@example.org")
    assert key is not None
    status = Throttle(setup, settings.throttle).status([key])[key]
    assert status.failures == (2 if first != second else 1)
    login(provider, "alice@example.org", wrong)  # the limit (3) is reached: locked
    assert login(provider, "alice@example.org", second)["Authentication"] == "FAIL"  # even the right code


def test_without_a_template_nothing_is_sent(setup: Database) -> None:
    requests = requests_for(otp_settings(template_email="no-such-template"), setup)
    assert requests.request("alice@example.org", None) is Outcome.NOT_CONFIGURED
    with setup.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(SignInCode)) == 0


def test_codes_work_without_a_password_backend(
    setup: Database, smtp_server: SmtpServer, workers: list[Worker]
) -> None:
    settings = replace(otp_settings(), auth="none")
    requests = requests_for(settings, setup)
    assert address_finders(provider_for(settings, setup).authenticator) == []
    assert requests.request("someone@partner.example.org", None) is Outcome.SENT
    deliver(settings, setup, workers)
    body = smtp_server.messages[0].message.get_body(("plain",))
    assert body is not None
    provider = provider_for(settings, setup)
    code = code_in(body.get_content())
    wrong = "000000" if code != "000000" else "111111"
    assert login(provider, "someone@partner.example.org", wrong) == {"Authentication": "FAIL"}
    assert login(provider, "someone@partner.example.org", "a-password")["Authentication"] == "FAIL"
    assert login(provider, "someone@partner.example.org", code)["Authentication"] == "OK"


def test_no_code_is_kept_in_the_clear(
    setup: Database, smtp_server: SmtpServer, workers: list[Worker]
) -> None:
    settings = otp_settings()
    requests_for(settings, setup).request("alice@example.org", None)
    deliver(settings, setup, workers)
    body = smtp_server.messages[0].message.get_body(("plain",))
    assert body is not None
    code = code_in(body.get_content())
    with setup.session() as session:
        row = session.execute(sa.select(SignInCode)).scalar_one()
        assert code not in json.dumps([row.salt, row.code_hash, row.address, row.username])


def test_users_phone_from_the_command_line(sqlite_url: str) -> None:
    from tests.support import base_env, run_cli

    env = base_env(sqlite_url)
    added = run_cli(
        ["users", "add", "dora", "--phone", "0044 20 7946 0018"], env, input_text="dora-password\n"
    )
    assert added.returncode == 0, added.stderr
    refused = run_cli(["users", "add", "eve", "--phone", "020 7946 0018"], env, input_text="eve-password1\n")
    assert refused.returncode != 0 and "country code" in refused.stderr
    database = Database(sqlite_url)
    try:
        users = {u.username: u.phone for u in LocalUsers(database).list_users()}
        assert users == {"dora": "+442079460018"}
        listed = run_cli(["users", "list"], env)
        assert listed.stdout.splitlines()[0].split("\t")[3] == "phone"
        assert listed.stdout.splitlines()[1].split("\t")[:4] == ["dora", "enabled", "-", "+442079460018"]
        changed = run_cli(["users", "phone", "dora", "+1 415 555 0199"], env)
        assert changed.returncode == 0 and "+14155550199" in changed.stdout
        assert LocalUsers(database).list_users()[0].phone == "+14155550199"
        cleared = run_cli(["users", "phone", "dora", "--clear"], env)
        assert cleared.returncode == 0, cleared.stderr
        assert LocalUsers(database).list_users()[0].phone is None
    finally:
        database.dispose()


def test_missing_channels_and_templates_are_warned_about(
    sqlite_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from provider.cli import load_settings
    from provider.comms.signin_checks import warn_at_start
    from tests.support import base_env, run_cli

    env = base_env(sqlite_url, ST_PROVIDER_OTP="on", ST_PROVIDER_OTP_CHANNEL_SMS="texts")
    rules = tmp_path / "rules.yaml"
    rules.write_text("channels:\n  texts: {type: webhook, url: 'https://h.example.org/'}\nrules: []\n")
    validated = run_cli(["rules", "validate", str(rules)], env)
    assert validated.returncode == 0, validated.stderr
    assert "warning: ST_PROVIDER_OTP_TEMPLATE_SMS: no template named 'otp-sms'" in validated.stderr
    assert run_cli(["rules", "import", str(rules)], env).returncode == 0
    with caplog.at_level("WARNING", logger="provider.comms.signin"):
        problems = warn_at_start(load_settings(env))
    assert problems == [
        "ST_PROVIDER_OTP_TEMPLATE_SMS: no template named 'otp-sms'",
        "ST_PROVIDER_OTP_CHANNEL_SMS: channel 'texts' is not 'category: otp', so opt-outs may stop sign-in codes",
    ]
    assert [getattr(r, "event", None) for r in caplog.records] == ["signin.misconfigured"] * 2
