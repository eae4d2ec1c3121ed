"""Rules through real SOAP calls: gunicorn with two workers, rules changed by the CLI while it runs.

On SQLite and PostgreSQL. The sample provider's behaviours go through zeep and the served
WSDL; the other calls are raw SOAP 1.1 posts on a new connection each, so both workers
answer some of them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import zeep

from provider.domain import Operation
from provider.soap.client import CallAnswer
from tests.fixtures.server import AUTH, soap_call
from tests.support import (
    REPO,
    ServerProcess,
    base_env,
    e2e_database_url,
    import_rules,
    run_cli,
    serve,
)

pytestmark = pytest.mark.e2e

REFRESH_SECONDS = 0.3
SAMPLE = REPO / "rules" / "sample-provider.yaml"


@dataclass
class RulesServer:
    server: ServerProcess
    env: dict[str, str]
    directory: Path
    current: str | None = None

    def call(self, op: Operation, *entries: str) -> CallAnswer:
        return soap_call(self.server, op, *entries)

    def load(self, text: str) -> int:
        """Replace the stored rules with ``text`` (unless already loaded); returns the version."""
        path = self.directory / "rules.yaml"
        path.write_text(text, encoding="utf-8")
        return self.load_file(path)

    def load_file(self, path: Path) -> int:
        text = path.read_text(encoding="utf-8")
        if text == self.current:
            return -1
        version = import_rules(self.env, path)
        self.current = text
        # Every worker checks the version at most every REFRESH_SECONDS: after that, every call sees it.
        time.sleep(REFRESH_SECONDS + 0.2)
        return version

    def log_events(self, name: str) -> list[dict[str, object]]:
        events = []
        for line in self.server.log().splitlines():
            if line.startswith("{"):
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if record.get("event") == name:
                    events.append(record)
        return events


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def rules_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RulesServer]:
    directory = tmp_path_factory.mktemp(f"rules-{request.param}")
    with e2e_database_url(request, directory) as url:
        env = base_env(
            url,
            ST_PROVIDER_RULES_REFRESH_SECONDS=str(REFRESH_SECONDS),
            ST_PROVIDER_LOG_FORMAT="json",
            ST_PROVIDER_AUTH="local",
        )
        with serve(env, directory / "server.log", workers=2, extra_args=("--no-worker",)) as server:
            added = run_cli(
                [
                    "users",
                    "add",
                    "ann",
                    "--email",
                    "ann@example.org",
                    "--display-name",
                    "Ann <Example> & Co",
                    "--group",
                    "Customers",
                ],
                env,
                input_text="ann-password-1\nann-password-1\n",
            )
            assert added.returncode == 0, added.stderr
            yield RulesServer(server, env, directory)


def wait_until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_sample_provider_through_zeep(rules_server: RulesServer) -> None:
    rules_server.load_file(SAMPLE)
    client = zeep.Client(f"{rules_server.server.endpoint}?wsdl")
    service = client.service

    def inputs(*entries: str) -> dict[str, object]:
        return {"InputVariables": {"string": [AUTH, *entries]}}

    def outputs(result: object) -> list[str]:
        variables = result.OutputVariables  # type: ignore[attr-defined]
        return [] if variables is None else list(variables.string)

    # Allow tickets/chats to only certain customers; issue types by department
    sales = service.GetCustomFieldOptions(
        inputs=inputs("loginUsername=bob", "departmentName=Sales Department")
    )
    assert outputs(sales) == ["CanStartTickets=False", "CanStartChats=True"]
    assert sales.Message == "You are not currently permitted to contact that department."
    [issue] = sales.CustomFieldDataItems.ExternalCustomFieldData
    assert issue.CustomFieldName == "Type of Issue" and issue.ChangeListOptions is True
    assert list(issue.ListOptions.string)[:2] == ["Change Plan", "Help with order"]
    assert (issue.ChangeRequired, issue.NewRequiredValue, issue.ChangeVisible, issue.NewVisibleValue) == (
        True,
        True,
        True,
        True,
    )
    other = service.GetCustomFieldOptions(inputs=inputs("loginUsername=bob", "departmentName=Billing"))
    assert outputs(other) == ["CanStartTickets=False", "CanStartChats=False"]
    [hidden] = other.CustomFieldDataItems.ExternalCustomFieldData
    assert (hidden.NewRequiredValue, hidden.ChangeVisible, hidden.NewVisibleValue) == (False, True, False)

    # Account drop-down for the support department's first step
    support = service.GetCustomFieldOptions(
        inputs=inputs("loginUsername=myusername", "departmentName=Support Department", "location=PRE")
    )
    assert outputs(support) == ["CanStartTickets=True", "CanStartChats=True"]
    account, support_issue = support.CustomFieldDataItems.ExternalCustomFieldData
    assert account.CustomFieldName == "Account" and list(account.ListOptions.string) == ["abc.com", "def.com"]
    assert account.DisplayWithInformationLookup is False and account.NewRequiredValue is True
    assert list(support_issue.ListOptions.string)[-1] == "Network connectivity"

    # Hidden billing fields, rerouting, quota
    ticket = service.StartTicket(inputs=inputs("loginUsername=myusername", "subject=Urgent: site down"))
    assert outputs(ticket) == [
        "TicketCreation=TRUE",
        "cf_Billing ID=4126",
        "cf_Plan Type=ASP.NET Semi-dedicated",
        "departmentName=Critical Support",
    ]
    down = service.StartTicket(inputs=inputs("emailFrom=x@example.org", "cf_Issue Type=server down"))
    assert outputs(down) == ["TicketCreation=TRUE", "departmentName=Server Operations Department"]
    empty = service.StartTicket(inputs=inputs("loginUsername=bob", "cf_Tickets Remaining=0"))
    assert (outputs(empty), empty.Message) == (
        ["TicketCreation=FALSE"],
        "There are no more tickets in your account.",
    )
    chat = service.StartChat(inputs=inputs("loginUsername=myusername"))
    assert outputs(chat) == ["ChatCreation=TRUE", "cf_Billing ID=4126", "cf_Plan Type=ASP.NET Semi-dedicated"]

    # User information HTML
    info = service.GetUserDetails(inputs=inputs("username=myusername", "ticketNumber=ABC-1"))
    assert info.UserInfoHtml == "Account Number: 000-000000-0000<br />Partner: Yes"
    assert service.GetUserDetails(inputs=inputs("username=bob")).UserInfoHtml is None


EVERY_ACTION = """\
rules:
  - name: deny
    method: "*"
    priority: 1
    when: "variables.get('mode') == 'deny'"
    then: {allow: false, message: "Denied: {{ method }} ✗ <&>"}
  - name: set-and-message
    method: "*"
    priority: 2
    when: "variables.get('mode') == 'set'"
    then:
      message: "Hi {{ user.display_name or loginUsername }} — {{ method }}"
      set: {cf_Echo: "<{{ subject }}> & \\"q\\" ü", groupName: Tier 2}
  - name: half
    method: GetCustomFieldOptions
    priority: 3
    when: "variables.get('mode') == 'half'"
    then:
      allow_chats: false
      fields: [{name: Account, list_from: "[user.email, 'other.example']", visible: true, lookup: true}]
  - name: half-tickets
    method: GetCustomFieldOptions
    priority: 4
    when: "variables.get('mode') == 'half' and 'Customers' not in groups"
    then: {allow_tickets: false}
  - name: info
    method: GetUserDetails
    priority: 5
    when: "variables.get('mode') == 'html'"
    then: {html: "<p>{{ user.display_name }} / {{ ticketNumber }} ü</p>"}
"""

LOGIN = ("loginUsername=ann", "loginPassword=ann-password-1")


@pytest.mark.parametrize(
    ("op", "entries", "denied"),
    [
        (Operation.AUTHENTICATE, LOGIN, ["Authentication=FAIL"]),
        (Operation.GET_SIGN_IN_COOKIE_INFO, ("loginUsername=ann",), ["Authentication=FAIL"]),
        (
            Operation.GET_CUSTOM_FIELD_OPTIONS,
            ("loginUsername=ann",),
            ["CanStartTickets=False", "CanStartChats=False"],
        ),
        (Operation.START_TICKET, ("loginUsername=ann", "subject=s"), ["TicketCreation=FALSE"]),
        (Operation.START_CHAT, ("loginUsername=ann",), ["ChatCreation=FALSE"]),
        (Operation.GET_USER_DETAILS, ("username=ann",), []),
    ],
)
def test_deny_set_and_message_on_each_method(
    rules_server: RulesServer, op: Operation, entries: tuple[str, ...], denied: list[str]
) -> None:
    rules_server.load(EVERY_ACTION)

    plain = rules_server.call(op, *entries)
    assert plain.success and "cf_Echo" not in "".join(plain.output_variables)

    deny = rules_server.call(op, *entries, "mode=deny")
    assert deny.success and deny.output_variables == denied
    assert deny.message == f"Denied: {op.value} ✗ <&>"

    changed = rules_server.call(op, *entries, "subject=<b>Ünï</b>", "mode=set")
    assert changed.success
    assert changed.message == f"Hi Ann <Example> & Co — {op.value}"
    # set values go out verbatim (XML-escaped on the wire only), unicode intact
    assert 'cf_Echo=<<b>Ünï</b>> & "q" ü' in changed.output_variables
    assert "groupName=Tier 2" in changed.output_variables
    if op in (Operation.AUTHENTICATE, Operation.GET_SIGN_IN_COOKIE_INFO):
        assert changed.output_variables[:3] == [
            "Authentication=OK",
            "EmailAddress=ann@example.org",
            "DisplayName=Ann <Example> & Co",
        ]


def test_fields_allow_chats_and_html(rules_server: RulesServer) -> None:
    rules_server.load(EVERY_ACTION)
    half = rules_server.call(Operation.GET_CUSTOM_FIELD_OPTIONS, "loginUsername=ann", "mode=half")
    assert half.output_variables == ["CanStartTickets=True", "CanStartChats=False"]  # ann is a Customer
    [account] = half.custom_fields
    assert account["CustomFieldName"] == "Account"
    assert account["ListOptions"] == ["ann@example.org", "other.example"]
    assert (account["ChangeListOptions"], account["ChangeVisible"], account["NewVisibleValue"]) == (
        "true",
        "true",
        "true",
    )
    assert (account["DisplayWithInformationLookup"], account["ChangeRequired"]) == ("true", "false")
    stranger = rules_server.call(Operation.GET_CUSTOM_FIELD_OPTIONS, "loginUsername=zed", "mode=half")
    # user.email is missing for an unknown user: the fields are dropped, the denial stands (fail closed)
    assert stranger.output_variables == ["CanStartTickets=False", "CanStartChats=False"]
    assert stranger.custom_fields == []

    info = rules_server.call(Operation.GET_USER_DETAILS, "username=ann", "ticketNumber=<script>", "mode=html")
    assert info.user_info_html == "<p>Ann &lt;Example&gt; &amp; Co / &lt;script&gt; ü</p>"


def test_priorities_stop_and_runtime_errors(rules_server: RulesServer) -> None:
    rules_server.load(
        """\
rules:
  - name: broken
    method: StartTicket
    priority: 1
    when: "cf['Missing'] == 'x'"
    on_error: skip   # without it, a deny rule that raises denies (fail closed)
    then: {allow: false}
  - {name: first, method: StartTicket, priority: 2, then: {set: {departmentName: First, cf_A: a}}}
  - {name: second, method: StartTicket, priority: 3, then: {set: {departmentName: Second}}}
  - {name: stopper, method: StartTicket, priority: 4, when: "subject == 'stop'", then: {stop: true}}
  - {name: last, method: StartTicket, priority: 5, then: {set: {cf_Last: yes-last}}}
"""
    )
    answer = rules_server.call(Operation.START_TICKET, "subject=go")
    assert answer.output_variables == [
        "TicketCreation=TRUE",
        "departmentName=Second",
        "cf_A=a",
        "cf_Last=yes-last",
    ]
    stopped = rules_server.call(Operation.START_TICKET, "subject=stop")
    assert stopped.output_variables == ["TicketCreation=TRUE", "departmentName=Second", "cf_A=a"]

    wait_until(lambda: any(e.get("rule") == "broken" for e in rules_server.log_events("rules.error")))
    [error, *_] = [e for e in rules_server.log_events("rules.error") if e.get("rule") == "broken"]
    assert error["error"] == "UndefinedError" and error["stage"] == "when"
    metrics = httpx.get(f"{rules_server.server.url}/metrics", timeout=10).text
    assert 'st_provider_rule_errors_total{rule="broken"}' in metrics


def test_a_catastrophic_subject_answers_promptly_and_the_service_keeps_answering(
    rules_server: RulesServer,
) -> None:
    """Issue 9 item 4: a portal user's subject against ``matching`` rules hung both workers."""
    version = rules_server.load(
        """\
rules:
  - {name: issue-pattern, method: StartChat, when: "subject is matching('^(a+)+$')", then: {set: {cf_A: a}}}
  - {name: no-spam, method: StartChat, priority: 5, when: "subject is matching('^(a|aa)+$')", then: {allow: false}}
"""
    )

    def both_workers_loaded() -> bool:
        # Concurrent calls would otherwise meet a worker still serving the previous rules.
        rules_server.call(Operation.START_CHAT, "subject=hello")
        reloads = rules_server.log_events("rules.reloaded")
        return len({e.get("pid") for e in reloads if e.get("version") == version}) >= 2

    wait_until(both_workers_loaded)
    subject = "subject=" + "a" * 40 + "!"
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(lambda _: rules_server.call(Operation.START_CHAT, subject), range(6)))
    # Each call's rules stop at the deadline (200 ms) inside the evaluation; nothing keeps spinning.
    assert time.monotonic() - started < 5.0
    for answer in answers:
        # The deny rule could not decide in time: it fails closed, with the default message.
        assert answer.output_variables == ["ChatCreation=FALSE"]
        assert answer.message == "Chat creation denied"
    started = time.monotonic()
    normal = rules_server.call(Operation.START_CHAT, "subject=hello")
    assert time.monotonic() - started < 2.0
    assert normal.output_variables == ["ChatCreation=TRUE"]
    # The rules still decide when they can: "aaaa" matches both.
    assert rules_server.call(Operation.START_CHAT, "subject=aaaa").output_variables == ["ChatCreation=FALSE"]
    wait_until(lambda: any(e.get("rule") == "no-spam" for e in rules_server.log_events("rules.error")))
    error = next(e for e in rules_server.log_events("rules.error") if e.get("rule") == "no-spam")
    assert (error["limit"], error["outcome"], error["stage"]) == ("regex", "denied", "when")


def test_invalid_file_is_rejected_and_the_service_keeps_its_rules(rules_server: RulesServer) -> None:
    rules_server.load("rules:\n  - {name: keep, method: StartChat, then: {set: {cf_Kept: 'yes'}}}\n")
    bad = rules_server.directory / "bad.yaml"
    bad.write_text(
        "rules:\n  - {name: keep, method: StartChat, then: {set: {cf_Kept: 'no'}}}\n"
        "  - {name: oops, method: StartChat, then: {fields: [{name: F, visible: true}]}}\n",
        encoding="utf-8",
    )
    result = run_cli(["rules", "import", str(bad), "--replace"], rules_server.env)
    assert result.returncode == 1
    assert "line 3, rule 'oops': 'fields' is not valid for StartChat" in result.stderr
    time.sleep(REFRESH_SECONDS + 0.2)
    assert rules_server.call(Operation.START_CHAT).output_variables == ["ChatCreation=TRUE", "cf_Kept=yes"]


def test_notify_reaches_the_event_outbox(rules_server: RulesServer) -> None:
    rules_server.load(
        """\
channels:
  hook: {type: webhook, url: "https://hooks.example.org/st"}
rules:
  - name: ticket-created
    method: NotifyEventFired
    when: "eventName == 'Ticket Created'"
    then:
      notify:
        - channel: hook
          body: {title: "{{ args.title }}", event: "{{ eventName }}"}
"""
    )
    answer = rules_server.call(
        Operation.NOTIFY_EVENT_FIRED, "eventType=502000", "args_title=Printer on fire ü"
    )
    assert answer.success and answer.message == "Event Notification Successful"
    listed = run_cli(["deliveries", "list", "--format", "json"], rules_server.env)
    assert listed.returncode == 0, listed.stderr
    deliveries = json.loads(listed.stdout)
    assert [d["channel"] for d in deliveries] == ["hook"]


def test_live_reload_across_two_workers(rules_server: RulesServer) -> None:
    template = "rules:\n  - {name: v, method: StartTicket, then: {set: {departmentName: 'Version %s'}}}\n"

    def workers_on(version: int) -> set[object]:
        return {e["pid"] for e in rules_server.log_events("rules.reloaded") if e["version"] == version}

    def answers(count: int) -> set[str]:
        # Concurrent calls, each on a new connection, keep both workers busy.
        with ThreadPoolExecutor(max_workers=4) as pool:
            results = pool.map(lambda _: rules_server.call(Operation.START_TICKET), range(count))
            return {answer.output_variables[-1] for answer in results}

    for n in (1, 2, 3):
        version = rules_server.load(template % n)
        deadline = time.monotonic() + 15
        # Each worker reloads on its first call after the change: wait until both have.
        # (Threads answering while their worker compiles the new set still use its old one.)
        while len(workers_on(version)) < 2:
            answers(4)
            assert time.monotonic() < deadline, rules_server.log_events("rules.reloaded")[-4:]
        assert answers(12) == {f"departmentName=Version {n}"}
