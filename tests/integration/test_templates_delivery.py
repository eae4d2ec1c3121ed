"""Message templates and global variables, from a rules file to each partner's request.

A rules file with a template per channel type is imported (SQLite and PostgreSQL), the
stored rules are evaluated for one NotifyEventFired call, the deliveries are stored and
the worker sends them to the partner emulators and a real SMTP receiver (aiosmtpd).
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qsl

import pytest

from provider.db.session import Database
from provider.domain import IncomingEvent, Operation
from provider.events.outbox import Outbox
from provider.events.worker import Worker
from provider.rules.evaluator import StoredRules
from provider.rules.loader import dump_rules, parse_rules
from provider.rules.store import RuleStore
from provider.settings import Settings, WorkerSettings
from provider.variables import InputVariables
from tests.emulators.smartcomm import SmartCommEmulator
from tests.emulators.smtp import SmtpServer
from tests.emulators.uniphore import UniphoreEmulator
from tests.emulators.webhook import WebhookReceiver
from tests.integration.test_worker_channel import Clock, deliveries

READ_ONLY = {"hotline": "+1 800 555 0100"}
SUBJECT = "<b>Ünïcode</b> & 日本語"

RULES = """\
variables:
  Support_Phone: "+44 20 7946 0000"
channels:
  mail: {type: email, host: "@SMTP_HOST@", port: @SMTP_PORT@, from: helpdesk@example.org, starttls: false}
  sms: {type: uniphore-sms, base_url: "@SMS_URL@", account_id: "@SMS_ACCOUNT@",
        application_key: "${SMS_APP_KEY}", environment: "@SMS_ENV@"}
  hook: {type: webhook, url: "@HOOK_URL@/events", secret: "${HOOK_SECRET}"}
  docgen: {type: smartcomm, base_url: "@DOC_URL@", token_url: "@DOC_TOKEN_URL@",
           client_id: "@DOC_CLIENT@", client_secret: "${DOC_SECRET}", batch_config_res_id: 5001}
templates:
  ticket-mail:
    kind: email
    description: the customer's copy
    tags: [tickets, customer]
    subject: "Ticket {{ ticketNumber }}: {{ subject }}"
    html: "<p>{{ subject }}</p><p>Call {{ vars.support_phone }}</p>"
    text: "{{ subject }} (call {{ vars.SUPPORT_PHONE }})"
  ticket-sms:
    kind: uniphore-sms
    campaign: not-a-campaign
    params: {ticket: "{{ ticketNumber }}", note: "{{ subject }}"}
  ticket-hook:
    kind: webhook
    body: {ticket: "{{ ticketNumber }}", subject: "{{ subject }}", hotline: "{{ vars.Hotline }}"}
  ticket-doc:
    kind: smartcomm
    data: {Customer: {ticket: "{{ ticketNumber }}", subject: "{{ subject }}"}}
rules:
  - name: tell-everyone
    method: NotifyEventFired
    when: vars.hotline != ''
    then:
      notify:
        - {channel: mail, template: ticket-mail, to: "{{ email }}"}
        - {channel: sms, template: ticket-sms, campaign: campaign1, to: "{{ args.phone }}",
           from: "+12121234567", jp_token: Aejhib7}
        - {channel: hook, template: ticket-hook}
        - {channel: docgen, template: ticket-doc}
"""


def fill(values: dict[str, str]) -> str:
    text = RULES
    for name, value in values.items():
        text = text.replace(f"@{name}@", value)
    return text


def rules_text(smtp: SmtpServer, sms: UniphoreEmulator, hook: WebhookReceiver, doc: SmartCommEmulator) -> str:
    return fill(
        {
            "SMTP_HOST": smtp.host,
            "SMTP_PORT": str(smtp.port),
            "SMS_URL": sms.url,
            "SMS_ACCOUNT": sms.account_id,
            "SMS_ENV": sms.environment,
            "HOOK_URL": hook.url,
            "DOC_URL": doc.url,
            "DOC_TOKEN_URL": doc.token_url,
            "DOC_CLIENT": doc.client_id,
        }
    )


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    made: list[Worker] = []
    yield made
    for w in made:
        w.close()


def test_templates_render_into_every_partner_request(
    database: Database,
    smtp_server: SmtpServer,
    uniphore_emulator: UniphoreEmulator,
    webhook_receiver: WebhookReceiver,
    smartcomm_emulator: SmartCommEmulator,
    workers: list[Worker],
) -> None:
    text = rules_text(smtp_server, uniphore_emulator, webhook_receiver, smartcomm_emulator)
    store = RuleStore(database)
    store.import_rules(
        parse_rules(text, read_only_vars=READ_ONLY), replace=True, actor="test", command="test"
    )
    evaluator = StoredRules(store, refresh_seconds=60, read_only_vars=READ_ONLY)
    call = InputVariables(
        [
            ("eventType", "502000"),
            ("ticketNumber", "T-42"),
            ("subject", SUBJECT),
            ("email", "ann@example.org"),
            ("args_phone", "+12125550100"),
        ]
    )
    decision = evaluator.evaluate(Operation.NOTIFY_EVENT_FIRED, call, None)
    assert [n.channel for n in decision.notifications] == ["mail", "sms", "hook", "docgen"]
    clock = Clock()
    event = IncomingEvent(
        event_type=502000,
        event_name="Ticket Created",
        arguments={"phone": "+12125550100"},
        variables=call.pairs,
        received_at=clock.now,
        fingerprint="fp-templates",
    )
    Outbox(database).accept(event, decision.notifications)
    environment = {
        "SMS_APP_KEY": uniphore_emulator.application_key,
        "DOC_SECRET": "smartcomm-client-secret",
        "HOOK_SECRET": "webhook-secret",
    }
    worker = Worker(
        Settings(worker=WorkerSettings(http_timeout=5), environment=environment), database, clock=clock
    )
    workers.append(worker)
    assert worker.run_once() == 4
    assert [d.status for d in deliveries(database)] == ["delivered"] * 4

    [mail] = smtp_server.messages
    message = mail.message
    assert message["Subject"] == f"Ticket T-42: {SUBJECT}"  # no escaping outside html
    assert mail.rcpt_tos == ["ann@example.org"]
    html = message.get_body(("html",))
    plain = message.get_body(("plain",))
    assert html is not None and plain is not None
    assert html.get_content().strip() == (
        "<p>&lt;b&gt;Ünïcode&lt;/b&gt; &amp; 日本語</p><p>Call +44 20 7946 0000</p>"
    )
    assert plain.get_content().strip() == f"{SUBJECT} (call +44 20 7946 0000)"

    [sms] = uniphore_emulator.messages
    assert sms.campaign == "campaign1"  # the entry's own key over the template's
    assert sms.additional_params is not None
    assert dict(parse_qsl(sms.additional_params)) == {"ticket": "T-42", "note": SUBJECT}  # not escaped

    assert webhook_receiver.deliveries == [
        {"ticket": "T-42", "subject": SUBJECT, "hotline": "+1 800 555 0100"}
    ]

    [job] = smartcomm_emulator.jobs
    assert job.json() == {"Customer": {"ticket": "T-42", "subject": SUBJECT}}


def test_templates_and_variables_round_trip_through_export(database: Database) -> None:
    text = fill(
        {
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": "2525",
            "SMS_URL": "https://sms.example.org",
            "SMS_ACCOUNT": "1001",
            "SMS_ENV": "prod",
            "HOOK_URL": "https://hooks.example.org",
            "DOC_URL": "https://docs.example.org",
            "DOC_TOKEN_URL": "https://docs.example.org/token",
            "DOC_CLIENT": "st-provider",
        }
    )
    store = RuleStore(database)
    imported = parse_rules(text, read_only_vars=READ_ONLY)
    summary = store.import_rules(imported, replace=True, actor="test", command="test")
    assert summary.count("template", "created") == 4 and summary.count("variable", "created") == 1

    exported = store.export()
    assert exported == imported
    assert exported.templates[0].tags == ("tickets", "customer")
    again = parse_rules(dump_rules(exported), read_only_vars=READ_ONLY)
    assert again == imported
    assert again.rules[0].then.notify[1].merged == imported.rules[0].then.notify[1].merged
    # Importing the export changes nothing; the version's snapshot holds the templates.
    assert store.import_rules(again, replace=True, actor="test", command="test").changes == ()
    assert "ticket-mail:" in summary.after and "Support_Phone:" in summary.after

    # A changed template is a change of the rule set (audited), and the rules using it see it,
    # also in a serving process that compiled them before (its cache is keyed on the template too).
    now = [0.0]
    evaluator = StoredRules(store, refresh_seconds=1, clock=lambda: now[0], read_only_vars=READ_ONLY)
    call = InputVariables([("subject", "s"), ("email", "a@example.org"), ("args_phone", "+1")])
    [before, *_] = evaluator.evaluate(Operation.NOTIFY_EVENT_FIRED, call, None).notifications
    assert before.params["html"] == "<p>s</p><p>Call +44 20 7946 0000</p>"
    changed = parse_rules(text.replace("Call {{", "Ring {{"), read_only_vars=READ_ONLY)
    summary = store.import_rules(changed, replace=True, actor="test", command="test")
    assert [(c.kind, c.subject, c.action) for c in summary.changes] == [
        ("template", "ticket-mail", "updated")
    ]
    [rule] = store.snapshot().valid_rules()
    assert "Ring" in rule.then.notify[0].effective_params["html"]
    now[0] = 5.0
    [after, *_] = evaluator.evaluate(Operation.NOTIFY_EVENT_FIRED, call, None).notifications
    assert after.params["html"] == "<p>s</p><p>Ring +44 20 7946 0000</p>"
    [entry, *_] = store.history(subject="ticket-mail")
    assert (entry.kind, entry.action) == ("template", "updated")
