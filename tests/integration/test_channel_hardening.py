"""Issue 9 items 5, 7 and 10: rules-rendered values cannot redirect or widen a delivery.

Each test goes the whole way: a rules file (parsed by the loader), rendered by the rules
engine with the attacker-controlled call variables, queued, and sent by the worker
through the real channel to a loopback partner (aiosmtpd, the Uniphore emulator, the
webhook receiver).
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qs

import pytest
from sqlalchemy import select

from provider.channels.startup import warn_about_channel_variables
from provider.db.events import DELIVERED, FAILED, DeliveryAttempt
from provider.db.session import Database
from provider.domain import Operation
from provider.events.worker import Worker
from provider.rules.engine import compile_rules
from provider.rules.loader import parse_rules
from provider.settings import Settings
from provider.variables import InputVariables
from tests.emulators.smtp import SmtpServer
from tests.emulators.uniphore import UniphoreEmulator
from tests.emulators.webhook import WebhookReceiver
from tests.integration.test_worker_channel import Clock, deliveries, enqueue
from tests.integration.test_worker_partners import add, uniphore_sms, worker

PASSWORD = "the-web-service-password-1234"


def render(rules_text: str, *entries: str) -> dict[str, object]:
    """The parameters of the one notification ``rules_text`` gives for a NotifyEventFired call."""
    rule_set = compile_rules(parse_rules(rules_text).rules)
    decision = rule_set.evaluate(
        Operation.NOTIFY_EVENT_FIRED, InputVariables.parse(["eventType=502000", *entries]), None
    )
    [notification] = decision.notifications
    return dict(notification.params)


def attempt_errors(database: Database) -> list[str]:
    with database.session() as session:
        return [a.error or "" for a in session.scalars(select(DeliveryAttempt).order_by(DeliveryAttempt.id))]


# --- item 7: one rendered value is one e-mail address ----------------------------------

MAIL_RULES = """\
channels:
  mail: {type: email, host: 127.0.0.1, port: PORT, starttls: false, from: helpdesk@example.org}
rules:
  - name: tell the requester
    method: NotifyEventFired
    then:
      notify:
        - channel: mail
          to: "{{ args.email }}"
          subject: "Ticket {{ args.ticket }}"
          text: created
"""


def add_mail(database: Database, smtp_server: SmtpServer) -> None:
    """Store the channel ``mail`` to ``smtp_server`` (plain SMTP)."""
    add(
        database,
        "mail",
        "email",
        host="127.0.0.1",
        port=smtp_server.port,
        starttls=False,
        **{"from": "h@x.org"},
    )


@pytest.mark.parametrize(
    "email",
    [
        "victim@example.org, attacker@evil.test",
        "victim@example.org\r\nBcc: attacker@evil.test",
        "victim@example.org%0d%0aBcc:attacker@evil.test",
        "Bcc: attacker@evil.test",
    ],
)
def test_a_rendered_recipient_cannot_add_another(
    database: Database, smtp_server: SmtpServer, workers: list[Worker], email: str
) -> None:
    clock = Clock()
    add_mail(database, smtp_server)
    params = render(MAIL_RULES.replace("PORT", str(smtp_server.port)), f"args_email={email}", "args_ticket=1")
    enqueue(database, clock.now, "mail", params=params)

    worker(workers, database, clock).run_once()

    assert smtp_server.messages == []  # neither the victim nor the attacker got anything
    [delivery] = deliveries(database)
    assert delivery.status == FAILED  # final: retrying cannot help
    [error] = attempt_errors(database)
    assert "is not one e-mail address" in error


def test_a_list_of_recipients_reaches_each_one(
    database: Database, smtp_server: SmtpServer, workers: list[Worker]
) -> None:
    clock = Clock()
    add_mail(database, smtp_server)
    text = MAIL_RULES.replace("PORT", str(smtp_server.port)).replace(
        'to: "{{ args.email }}"', 'to: ["{{ args.email }}", "Audit <audit@example.org>"]'
    )
    enqueue(database, clock.now, "mail", params=render(text, "args_email=ann@example.org", "args_ticket=1"))

    worker(workers, database, clock).run_once()

    [mail] = smtp_server.messages
    assert mail.rcpt_tos == ["ann@example.org", "audit@example.org"]
    assert deliveries(database)[0].status == DELIVERED


# --- item 10: SMS params in the string form encode each rendered value -----------------

SMS_RULES = """\
channels:
  sms: {type: uniphore-sms, base_url: "https://sms.example.org", account_id: "1", application_key: "${SMS_APP_KEY}"}
rules:
  - name: text the requester
    method: NotifyEventFired
    then:
      notify:
        - channel: sms
          campaign: campaign1
          to: "+12125550100"
          jp_token: Aejhib7
          params: "ticketNumber={{ args.ticket }}&lang=en"
"""


def test_sms_params_string_form_cannot_add_parameters(
    database: Database, uniphore_emulator: UniphoreEmulator, workers: list[Worker]
) -> None:
    clock = Clock()
    uniphore_sms(database, uniphore_emulator)
    params = render(SMS_RULES, "args_ticket=1&evil=x")
    enqueue(database, clock.now, "sms", params=params)

    worker(workers, database, clock, SMS_APP_KEY=uniphore_emulator.application_key).run_once()

    assert deliveries(database)[0].status == DELIVERED
    [message] = uniphore_emulator.messages
    assert message.additional_params is not None
    assert parse_qs(message.additional_params) == {"ticketNumber": ["1&evil=x"], "lang": ["en"]}


# --- item 5: ${VAR} references cannot send the provider's settings out ----------------


def test_a_stored_reference_to_a_provider_setting_is_never_sent(
    database: Database, webhook_receiver: WebhookReceiver, workers: list[Worker]
) -> None:
    # stored before the upgrade (or written to the database directly): the loader never saw it
    clock = Clock()
    add(
        database,
        "hook",
        "webhook",
        url=f"{webhook_receiver.url}/${{ST_PROVIDER_WEB_SERVICE_PASSWORD}}",
        headers={"X-Db": "${ST_PROVIDER_DATABASE_URL}"},
    )
    enqueue(database, clock.now, "hook", params={"text": "hello"})

    worker(
        workers,
        database,
        clock,
        ST_PROVIDER_WEB_SERVICE_PASSWORD=PASSWORD,
        ST_PROVIDER_DATABASE_URL="postgresql://u:db-password-5678@h/db",
    ).run_once()

    assert webhook_receiver.received == []
    [delivery] = deliveries(database)
    assert delivery.status != DELIVERED  # the channel cannot be built until its settings are fixed
    assert delivery.last_error is not None and "ST_PROVIDER_WEB_SERVICE_PASSWORD" in delivery.last_error
    assert PASSWORD not in delivery.last_error


def test_serve_start_check_warns_per_channel(database: Database, caplog: pytest.LogCaptureFixture) -> None:
    add(
        database,
        "sms",
        "uniphore-sms",
        base_url="https://x.org",
        account_id="1",
        application_key="${SMS_APP_KEY}",
    )
    add(database, "hook", "webhook", url="https://x.org/${ST_PROVIDER_WEB_SERVICE_PASSWORD}")
    add(database, "mail", "email", host="h", password="${SMTP_PW}", username="u", **{"from": "a@x.org"})
    settings = Settings(database_url=database.url, environment={"SMTP_PW": "set"})

    with caplog.at_level(logging.WARNING, logger="provider.channels.startup"):
        warn_about_channel_variables(settings)

    found = {(r.event, r.channel, r.variable) for r in caplog.records}  # type: ignore[attr-defined]
    assert found == {
        ("channels.variable_missing", "sms", "SMS_APP_KEY"),
        ("channels.reference_refused", "hook", None),
    }
