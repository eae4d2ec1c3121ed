"""The call journal through real SOAP calls: gunicorn with two workers, SQLite and PostgreSQL.

Every operation is journaled (accepted and refused) with the user the rules saw, the
rules that matched and the answer; the Web Service Password and login passwords are
nowhere: not in the database (its file bytes, or every row as text) and not in the
output of ``calls list`` / ``calls show``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from provider.db.session import Database, create_db_engine, sqlite_file
from provider.domain import Operation
from provider.journal.queries import CallFilter, CallRow, get_call, list_calls
from provider.soap.client import CallAnswer
from tests.fixtures.server import AUTH, soap_call
from tests.support import (
    WEB_SERVICE_PASSWORD,
    ServerProcess,
    base_env,
    e2e_database_url,
    import_rules,
    run_cli,
    serve,
    wait_until,
)

pytestmark = pytest.mark.e2e

ANN_PASSWORD = "ann-Login-Secret-4711"
WRONG_LOGIN_PASSWORD = "wrong-Login-Guess-0815"
WRONG_SERVICE_PASSWORD = "Wrong-Service-Password-9999"
API_TOKEN = "tok-Custom-Field-Value-31337"
SECRETS = (WEB_SERVICE_PASSWORD, ANN_PASSWORD, WRONG_LOGIN_PASSWORD, WRONG_SERVICE_PASSWORD, API_TOKEN)

RULES = """\
channels:
  hook:
    type: webhook
    url: http://127.0.0.1:9/hook
rules:
  - name: customers-tier
    method: Authenticate
    when: "'Customers' in groups"
    then:
      set: {Tier: gold}
  - name: no-chats-for-bob
    method: StartChat
    when: "loginUsername == 'bob'"
    then:
      allow: false
      message: No chats for bob
  - name: ticket-hook
    method: NotifyEventFired
    when: "eventName == 'Ticket Created'"
    then:
      notify:
        - channel: hook
          text: "ticket {{ args.get('ticketNumber', '') }}"
"""


@dataclass
class JournalServer:
    server: ServerProcess
    env: dict[str, str]
    url: str
    directory: Path

    def call(self, op: Operation, *entries: str, auth: str = AUTH) -> CallAnswer:
        return soap_call(self.server, op, *entries, auth=auth)

    def cli_json(self, *args: str) -> Any:
        result = run_cli([*args, "--format", "json"], self.env)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def journal_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[JournalServer]:
    directory = tmp_path_factory.mktemp(f"journal-{request.param}")
    with e2e_database_url(request, directory) as url:
        env = base_env(url, ST_PROVIDER_AUTH="local", ST_PROVIDER_RULES_REFRESH_SECONDS="0.3")
        with serve(env, directory / "server.log", workers=2, extra_args=("--no-worker",)) as server:
            added = run_cli(
                ["users", "add", "ann", "--email", "ann@example.org", "--group", "Customers"],
                env,
                input_text=f"{ANN_PASSWORD}\n{ANN_PASSWORD}\n",
            )
            assert added.returncode == 0, added.stderr
            (directory / "rules.yaml").write_text(RULES, encoding="utf-8")
            import_rules(env, directory / "rules.yaml")
            time.sleep(0.5)  # every worker reloads the rules within 0.3 s
            yield JournalServer(server, env, url, directory)


def _database_text(url: str) -> bytes:
    """Everything the database holds: the SQLite file and its WAL, or every journal row as text."""
    path = sqlite_file(url)
    if path is not None:
        return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
    engine = create_db_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT t::text FROM call_journal t")).scalars().all()
            events = conn.execute(sa.text("SELECT t::text FROM events t")).scalars().all()
    finally:
        engine.dispose()
    return "\n".join([*rows, *events]).encode()


def _calls(url: str, filters: CallFilter | None = None) -> list[CallRow]:
    database = Database(url)
    try:
        return list_calls(database, filters or CallFilter(), limit=100_000)
    finally:
        database.dispose()


def _detail(url: str, call_id: int) -> dict[str, Any]:
    database = Database(url)
    try:
        return dataclasses.asdict(get_call(database, call_id))
    finally:
        database.dispose()


def test_every_operation_is_journaled_without_secrets(journal_server: JournalServer) -> None:
    s = journal_server
    before = {c.id for c in _calls(s.url)}

    assert (
        s.call(Operation.AUTHENTICATE, "loginUsername=ann", f"loginPassword={ANN_PASSWORD}").outputs[
            "Authentication"
        ]
        == "OK"
    )
    assert (
        s.call(Operation.AUTHENTICATE, "loginUsername=ann", f"loginPassword={WRONG_LOGIN_PASSWORD}").outputs[
            "Authentication"
        ]
        == "FAIL"
    )
    s.call(Operation.GET_SIGN_IN_COOKIE_INFO, "loginUsername=ann")
    s.call(Operation.GET_CUSTOM_FIELD_OPTIONS, "loginUsername=ann", "departmentName=Sales")
    s.call(Operation.START_TICKET, "loginUsername=ann", f"cf_apiToken={API_TOKEN}", "subject=Hello")
    assert s.call(Operation.START_CHAT, "loginUsername=bob").message == "No chats for bob"
    s.call(Operation.GET_USER_DETAILS, "username=ann")
    s.call(Operation.NOTIFY_EVENT_FIRED, "eventType=502000", "args_ticketNumber=T-1")
    refused = s.call(
        Operation.AUTHENTICATE,
        "loginUsername=ann",
        f"loginPassword={ANN_PASSWORD}",
        auth=f"authPW={WRONG_SERVICE_PASSWORD}",
    )
    assert refused.message == "Permission Denied"
    garbage = httpx.post(
        s.server.endpoint,
        content=b"<not-soap/>",
        headers={"Content-Type": "text/xml; charset=utf-8"},
        timeout=10,
    )
    assert garbage.status_code >= 400

    wait_until(lambda: len(_calls(s.url)) >= len(before) + 10, 20, "ten journaled calls")
    calls = sorted(
        (c for c in s.cli_json("calls", "list", "--limit", "1000") if c["id"] not in before),
        key=lambda c: c["id"],
    )
    assert len(calls) == 10
    by_op: dict[str, list[dict[str, Any]]] = {}
    for call in calls:
        by_op.setdefault(call["operation"], []).append(call)
    assert set(by_op) == {str(o) for o in Operation} | {"unknown"}
    outcomes = sorted(c["outcome"] for c in by_op["Authenticate"])
    assert outcomes == ["denied", "ok", "permission_denied"]
    assert [c["outcome"] for c in by_op["StartChat"]] == ["denied"]
    assert by_op["StartChat"][0]["matched"] == ["no-chats-for-bob"]
    assert [c["outcome"] for c in by_op["unknown"]] == ["fault"]
    assert all(c["request_id"] and c["duration_ms"] >= 0 for c in calls)

    details = {c["id"]: _detail(s.url, c["id"]) for c in calls}
    [login_ok] = [
        d
        for d in details.values()
        if d["call"]["operation"] == "Authenticate" and d["call"]["outcome"] == "ok"
    ]
    assert login_ok["identity"]["groups"] == ["Customers"]
    assert login_ok["call"]["matched"] == ["customers-tier"]
    assert ["Tier", "gold"] in login_ok["answer"]["output"]
    assert not any(name.lower() in ("authpw", "loginpassword") for name, _ in login_ok["variables"])
    [ticket] = [d for d in details.values() if d["call"]["operation"] == "StartTicket"]
    assert ["cf_apiToken", "[redacted]"] in ticket["variables"] and ["subject", "Hello"] in ticket[
        "variables"
    ]
    [event] = [d for d in details.values() if d["call"]["operation"] == "NotifyEventFired"]
    assert [n["rule"] for n in event["answer"]["notifications"]] == ["ticket-hook"]

    # What the commands print, in every format: no secret anywhere.
    printed = [
        run_cli(["calls", "list", "--limit", "1000", "--format", fmt], s.env).stdout
        for fmt in ("table", "json", "csv")
    ]
    for call_id in (login_ok["call"]["id"], ticket["call"]["id"]):
        printed += [
            run_cli(["calls", "show", str(call_id), "--format", f], s.env).stdout for f in ("table", "json")
        ]
    everything = json.dumps(details, default=str) + "".join(printed)
    assert "Tier" in everything and "cf_apiToken" in everything
    stored = _database_text(s.url)
    for secret in SECRETS:
        assert secret not in everything
        assert secret.encode() not in stored


def test_calls_list_filters(journal_server: JournalServer) -> None:
    s = journal_server
    s.call(Operation.START_CHAT, "loginUsername=bob")
    s.call(Operation.GET_USER_DETAILS, "username=ann")
    wait_until(
        lambda: len(s.cli_json("calls", "list", "--operation", "StartChat", "--user", "BOB")) >= 1,
        20,
        "bob's chat",
    )
    chats = s.cli_json("calls", "list", "--operation", "StartChat", "--outcome", "denied", "--user", "BOB")
    assert chats and {(c["operation"], c["user"], c["outcome"]) for c in chats} == {
        ("StartChat", "bob", "denied")
    }
    assert s.cli_json("calls", "list", "--since", "2999-01-01") == []
    assert len(s.cli_json("calls", "list", "--limit", "1")) == 1
    missing = run_cli(["calls", "show", "999999"], s.env)
    assert missing.returncode == 1 and "no journaled call 999999" in missing.stderr


DRAFT = (
    RULES.replace("set: {Tier: gold}", "set: {Tier: silver}")
    .replace(
        """  - name: no-chats-for-bob
    method: StartChat
    when: "loginUsername == 'bob'"
    then:
      allow: false
      message: No chats for bob
""",
        "",
    )
    .replace(
        "text: \"ticket {{ args.get('ticketNumber', '') }}\"",
        "text: \"new ticket {{ args.get('ticketNumber', '') }}\"",
    )
)


def test_whatif_reports_exactly_the_calls_whose_answer_changes(journal_server: JournalServer) -> None:
    s = journal_server
    assert DRAFT != RULES and "no-chats-for-bob" not in DRAFT and "new ticket" in DRAFT
    since = datetime.now(UTC).isoformat()
    start = len(_calls(s.url))
    s.call(Operation.START_CHAT, "loginUsername=bob")
    s.call(Operation.START_CHAT, "loginUsername=bob", "departmentName=Sales")
    s.call(Operation.START_CHAT, "loginUsername=ann")
    s.call(Operation.AUTHENTICATE, "loginUsername=ann", f"loginPassword={ANN_PASSWORD}")
    # A refused login is replayed as accepted, as a user the directory never described (no groups).
    s.call(Operation.AUTHENTICATE, "loginUsername=ann", f"loginPassword={WRONG_LOGIN_PASSWORD}")
    s.call(Operation.GET_USER_DETAILS, "username=ann")
    s.call(Operation.NOTIFY_EVENT_FIRED, "eventType=502000", "args_ticketNumber=T-7")
    s.call(
        Operation.START_TICKET, "loginUsername=ann", auth=f"authPW={WRONG_SERVICE_PASSWORD}"
    )  # not replayed
    wait_until(lambda: len(_calls(s.url)) >= start + 8, 20, "eight journaled calls")
    deliveries_before = _count(s.url, "deliveries")

    draft = s.directory / "draft.yaml"
    draft.write_text(DRAFT, encoding="utf-8")
    same = s.directory / "same.yaml"
    same.write_text(RULES, encoding="utf-8")

    report = s.cli_json("rules", "whatif", str(draft), "--replace", "--since", since)
    assert report["replayed"] == 7
    assert report["by_operation"] == {
        "Authenticate": {"replayed": 2, "changed": 1},
        "GetUserDetails": {"replayed": 1, "changed": 0},
        "NotifyEventFired": {"replayed": 1, "changed": 1},
        "StartChat": {"replayed": 3, "changed": 2},
    }
    assert report["changed"] == 4
    changed = {(c["operation"], c["user"]) for c in report["calls"]}
    assert changed == {("StartChat", "bob"), ("Authenticate", "ann"), ("NotifyEventFired", None)}
    assert [c["operation"] for c in report["calls"]] == [
        "NotifyEventFired",
        "Authenticate",
        "StartChat",
        "StartChat",
    ]
    login = next(c for c in report["calls"] if c["operation"] == "Authenticate")
    assert login["diff"] == {"output": {"added": {}, "removed": {}, "changed": {"Tier": ["gold", "silver"]}}}
    chat = next(c for c in report["calls"] if c["operation"] == "StartChat")
    assert chat["before"]["output"] == [["ChatCreation", "FALSE"]] and chat["after"]["output"] == [
        ["ChatCreation", "TRUE"]
    ]
    assert chat["diff"]["message"] == ["No chats for bob", "Chat Creation Successful"]
    event = next(c for c in report["calls"] if c["operation"] == "NotifyEventFired")
    assert [n["params"]["text"] for n in event["diff"]["notifications"]["added"]] == ["new ticket T-7"]
    assert [n["params"]["text"] for n in event["diff"]["notifications"]["dropped"]] == ["ticket T-7"]
    assert set(report["calls"][0]) == {"id", "time", "operation", "user", "before", "after", "diff"}

    identical = s.cli_json("rules", "whatif", str(same), "--replace", "--since", since)
    assert (identical["replayed"], identical["changed"], identical["calls"]) == (7, 0, [])
    merged = s.cli_json("rules", "whatif", str(draft), "--since", since)  # no --replace: bob's rule stays
    assert merged["changed"] == 2 and {c["operation"] for c in merged["calls"]} == {
        "Authenticate",
        "NotifyEventFired",
    }
    table = run_cli(["rules", "whatif", str(draft), "--replace", "--since", since], s.env)
    assert table.returncode == 0 and "of the last 7 calls, 4 would be answered differently" in table.stdout
    assert _count(s.url, "deliveries") == deliveries_before  # nothing written, nothing queued
    assert len(_calls(s.url)) == start + 8


def _count(url: str, table: str) -> int:
    engine = create_db_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())
    finally:
        engine.dispose()
