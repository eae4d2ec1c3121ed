"""Rollback and events replay through real SOAP calls to gunicorn (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from provider.domain import Operation
from provider.soap.client import CallAnswer
from tests.fixtures.server import soap_call
from tests.support import (
    ServerProcess,
    base_env,
    e2e_database_url,
    import_rules,
    run_cli,
    serve,
)

pytestmark = pytest.mark.e2e

REFRESH_SECONDS = 0.3


@dataclass
class Served:
    server: ServerProcess
    env: dict[str, str]
    directory: Path

    def call(self, op: Operation, *entries: str) -> CallAnswer:
        return soap_call(self.server, op, *entries)

    def cli(self, *args: str) -> str:
        result = run_cli(list(args), self.env)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def load(self, text: str) -> int:
        path = self.directory / "rules.yaml"
        path.write_text(text, encoding="utf-8")
        version = import_rules(self.env, path)
        time.sleep(REFRESH_SECONDS + 0.2)  # every worker has checked the version since
        return version

    def json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "--format", "json"))


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    directory = tmp_path_factory.mktemp(f"versions-{request.param}")
    with e2e_database_url(request, directory) as url:
        env = base_env(url, ST_PROVIDER_RULES_REFRESH_SECONDS=str(REFRESH_SECONDS), HOOK_SECRET="s3cret")
        with serve(env, directory / "server.log", workers=2, extra_args=("--no-worker",)) as server:
            yield Served(server, env, directory)


def _department(answer: CallAnswer) -> str | None:
    return answer.outputs.get("departmentName")


def test_rollback_restores_the_earlier_answers(served: Served) -> None:
    rules = "rules:\n  - {{name: route, method: StartTicket, then: {{set: {{departmentName: {0}}}}}}}\n"
    first = served.load(rules.format("Billing"))
    assert _department(served.call(Operation.START_TICKET, "subject=x")) == "Billing"
    served.load(rules.format("Sales"))
    assert _department(served.call(Operation.START_TICKET, "subject=x")) == "Sales"

    out = served.cli("rules", "rollback", str(first), "--actor", "Jane Admin")
    assert f"rolled back to version {first}" in out
    time.sleep(REFRESH_SECONDS + 0.2)
    for _ in range(4):  # both workers
        assert _department(served.call(Operation.START_TICKET, "subject=x")) == "Billing"
    newest = json.loads(served.cli("rules", "versions", "--json"))["versions"][0]
    assert (newest["action"], newest["actor"]) == ("rollback", "Jane Admin")


EVENT_RULES = """\
channels:
  hook:
    type: webhook
    url: https://hooks.example.org/events
    secret: ${{HOOK_SECRET}}
rules:
  - name: log-ticket
    method: NotifyEventFired
    then:
      notify:
        - channel: hook
          body: {{ticket: "{{{{ args.ticketNumber }}}}"}}
  - name: page-owner
    method: NotifyEventFired
    then:
      notify:
        - channel: hook
          body: {{owner: "{{{{ {owner} }}}}", ticket: "{{{{ args.ticketNumber }}}}"}}
"""


def test_events_replay_after_fixing_a_broken_notify_rule(served: Served) -> None:
    served.load(EVENT_RULES.format(owner="args['Owner']"))  # SmarterTrack does not send args_Owner
    answer = served.call(Operation.NOTIFY_EVENT_FIRED, "eventType=502000", "args_ticketNumber=T-42")
    assert answer.success

    broken = served.json("events", "list", "--has-errors")
    assert len(broken) == 1
    event_id = broken[0]["id"]
    assert broken[0]["rule_errors"] == [{"rule": "page-owner", "error": "UndefinedError"}]
    assert broken[0]["deliveries"] == {"pending": 1}
    shown = served.cli("events", "show", str(event_id))
    assert re.search(r"^Rule errors\s+page-owner:UndefinedError$", shown, re.MULTILINE)
    table = served.cli("events", "list", "--has-errors")
    assert "ERRORS" in table.splitlines()[0] and "page-owner:UndefinedError" in table

    served.load(EVENT_RULES.format(owner="args.get('Owner', 'nobody')"))
    replayed = served.cli("events", "replay", str(event_id))
    assert "1 deliveries created, 1 already there" in replayed
    deliveries = served.json("deliveries", "list", "--event-id", str(event_id))
    assert sorted(d["rule"] for d in deliveries) == ["log-ticket", "page-owner"]
    assert served.json("events", "list", "--has-errors") == []

    again = served.cli("events", "replay", str(event_id))
    assert "0 deliveries created, 2 already there" in again
    assert len(served.json("deliveries", "list", "--event-id", str(event_id))) == 2
