"""`st-provider templates ...` as an admin runs it: real processes against a real database."""

from __future__ import annotations

import json
from pathlib import Path

from provider.db.session import Database
from provider.domain import IncomingEvent
from provider.events.outbox import Outbox
from tests.integration.test_worker_channel import Clock
from tests.support import base_env, run_cli

RULES = """\
variables:
  support_phone: "+44 20 7946 0000"
channels:
  mail: {type: email, host: smtp.example.org, from: helpdesk@example.org}
  sms: {type: uniphore-sms, base_url: "https://sms.example.org", account_id: "1", application_key: "${K}"}
templates:
  ticket-mail:
    kind: email
    description: the customer's copy
    tags: [Tickets, customer]
    subject: "Ticket {{ ticketNumber }} ({{ vars.hotline }})"
    html: "<p>{{ subject }}</p>"
  ticket-sms:
    kind: uniphore-sms
    tags: [sms]
    campaign: TICKET
    params: {ticket: "{{ ticketNumber }}", note: "{{ subject }}", phone: "{{ vars.Support_Phone }}"}
rules:
  - name: r
    method: NotifyEventFired
    then:
      notify:
        - {channel: mail, template: ticket-mail, to: "{{ email }}"}
"""


def test_list_show_and_render(sqlite_url: str, tmp_path: Path) -> None:
    env = base_env(sqlite_url, ST_PROVIDER_VAR_HOTLINE="+1 800 555 0100")
    path = tmp_path / "rules.yaml"
    path.write_text(RULES, encoding="utf-8")
    imported = run_cli(["rules", "import", str(path)], env)
    assert imported.returncode == 0, imported.stderr
    assert "1 rules, 2 channels, 2 templates, 1 variables" in imported.stdout
    assert "  templates: 2 created" in imported.stdout.splitlines()
    assert "  variables: 1 created" in imported.stdout.splitlines()

    listed = run_cli(["templates", "list", "--tag", "tickets"], env)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split() == ["ticket-mail", "email", "Tickets,customer", "the", "customer's", "copy"]
    every = json.loads(run_cli(["templates", "list", "--json"], env).stdout)
    assert [t["name"] for t in every] == ["ticket-mail", "ticket-sms"]

    shown = run_cli(["templates", "show", "ticket-sms"], env)
    assert shown.stdout.splitlines()[:3] == ["ticket-sms:", "  kind: uniphore-sms", "  tags:"]

    rendered = run_cli(["templates", "render", "ticket-mail", "ticketNumber=42", "subject=<b>Ünï</b>"], env)
    assert rendered.returncode == 0, rendered.stderr
    assert rendered.stdout.splitlines() == [
        "# template ticket-mail (email); nothing was sent",
        "subject: Ticket 42 (+1 800 555 0100)",
        "html: <p>&lt;b&gt;Ünï&lt;/b&gt;</p>",
    ]
    sms = json.loads(run_cli(["templates", "render", "ticket-sms", "subject=<b>", "--json"], env).stdout)
    assert sms == {"campaign": "TICKET", "params": {"ticket": "", "note": "<b>", "phone": "+44 20 7946 0000"}}

    # A later file may use the stored templates (validate and import without --replace).
    later = tmp_path / "later.yaml"
    later.write_text(
        "rules:\n  - name: s\n    method: NotifyEventFired\n    then:\n      notify:\n"
        "        - {channel: mail, template: ticket-mail, to: a@example.org}\n"
        "        - {channel: mail, template: ticket-sms, to: a@example.org}\n",
        encoding="utf-8",
    )
    checked = run_cli(["rules", "validate", str(later)], env)
    assert checked.returncode == 1
    assert checked.stderr.splitlines()[-2:] == [
        f"{later}: 1 problem(s)",
        "  line 7, rule 's': notify: template 'ticket-sms' is written for uniphore-sms, but channel 'mail' is email",
    ]

    missing = run_cli(["templates", "render", "nope"], env)
    assert (missing.returncode, missing.stdout) == (1, "")
    assert "no template named 'nope'" in missing.stderr


def test_render_with_a_stored_event(sqlite_url: str, tmp_path: Path) -> None:
    env = base_env(sqlite_url, ST_PROVIDER_VAR_HOTLINE="+1 800")
    path = tmp_path / "rules.yaml"
    path.write_text(RULES, encoding="utf-8")
    assert run_cli(["rules", "import", str(path)], env).returncode == 0
    database = Database(sqlite_url)
    try:
        accepted = Outbox(database).accept(
            IncomingEvent(
                event_type=502000,
                event_name="Ticket Created",
                arguments={},
                variables=(("ticketNumber", "T-7"), ("subject", "Printer & fax")),
                received_at=Clock().now,
                fingerprint="fp-render",
            ),
            [],
        )
    finally:
        database.dispose()
    rendered = run_cli(
        ["templates", "render", "ticket-mail", "--event", str(accepted.event_id), "--json"], env
    )
    assert rendered.returncode == 0, rendered.stderr
    assert json.loads(rendered.stdout) == {
        "subject": "Ticket T-7 (+1 800)",
        "html": "<p>Printer &amp; fax</p>",
    }
    unknown = run_cli(["templates", "render", "ticket-mail", "--event", "999"], env)
    assert unknown.returncode == 1 and "no event with id 999" in unknown.stderr
