"""Evaluating rules: order, stop, denies, every action, templates, the sandbox and run-time errors."""

from __future__ import annotations

import json
import logging

import pytest
from prometheus_client import REGISTRY

from provider.calls import Provider
from provider.domain import CallRequest, CallResult, CustomFieldData, Decision, Identity, Operation
from provider.rules.engine import (
    DISABLED,
    ERROR,
    MATCHED,
    NO_MATCH,
    NOT_REACHED,
    RuleSet,
    TraceEntry,
    compile_rules,
)
from provider.rules.loader import parse_rules
from provider.settings import Secret
from provider.variables import InputVariables
from tests.plugins import DictAuthenticator

PW = "pw"
ANN = Identity(
    username="ann",
    email="ann@example.org",
    display_name="Ann",
    attributes={"accounts": ["abc.com", "", "def.com"], "title": ["<Boss> & Co"]},
    groups=("Customers",),
)


def rules(text: str, channels: str = "") -> RuleSet:
    return compile_rules(parse_rules(f"{channels}rules:\n{text}").rules)


def decide(rule_set: RuleSet, op: Operation, *entries: str, identity: Identity | None = None) -> Decision:
    return rule_set.evaluate(op, InputVariables.parse(entries), identity)


def traced(rule_set: RuleSet, op: Operation, *entries: str) -> list[TraceEntry]:
    trace: list[TraceEntry] = []
    rule_set.evaluate(op, InputVariables.parse(entries), None, trace=trace)
    return trace


def call(rule_set: RuleSet, op: Operation, *entries: str) -> CallResult:
    provider = Provider(
        Secret(PW), rules=rule_set, authenticator=DictAuthenticator(users={"ann": ("x", ANN)})
    )
    return provider.call(CallRequest(op, InputVariables.parse([f"authPW={PW}", *entries])))


def errors_for(rule: str) -> float:
    return REGISTRY.get_sample_value("st_provider_rule_errors_total", {"rule": rule}) or 0.0


def test_ascending_priority_equal_priorities_keep_file_order_later_set_replaces() -> None:
    rule_set = rules(
        """\
  - {name: c, method: StartTicket, priority: 5, then: {set: {departmentName: C, cf_C: c}}}
  - {name: a, method: StartTicket, priority: 1, then: {set: {departmentName: A, cf_A: a}}}
  - {name: b, method: StartTicket, priority: 5, then: {set: {DEPARTMENTNAME: B}}}
"""
    )
    decision = decide(rule_set, Operation.START_TICKET)
    assert decision.matched == ["a", "c", "b"]
    assert decision.variables == [("departmentName", "B"), ("cf_A", "a"), ("cf_C", "c")]


def test_stop_ends_evaluation_and_the_trace_says_why() -> None:
    rule_set = rules(
        """\
  - {name: first, method: StartChat, when: "subject == 'x'", then: {set: {cf_A: '1'}}}
  - {name: stopper, method: StartChat, then: {set: {cf_B: '2'}, stop: true}}
  - {name: after, method: StartChat, then: {set: {cf_C: '3'}}}
  - {name: dormant, method: StartChat, enabled: false, then: {set: {cf_D: '4'}}}
"""
    )
    assert decide(rule_set, Operation.START_CHAT).variables == [("cf_B", "2")]
    trace = traced(rule_set, Operation.START_CHAT, "subject=y")
    assert [(t.rule, t.outcome) for t in trace] == [
        ("first", NO_MATCH),
        ("stopper", MATCHED),
        ("after", NOT_REACHED),
        ("dormant", NOT_REACHED),
    ]
    assert trace[0].detail == "when is false: subject == 'x'"
    assert trace[2].detail == "evaluation stopped by 'stopper'"


def test_disabled_rules_never_apply_but_are_traced() -> None:
    rule_set = rules("  - {name: dormant, method: StartChat, enabled: false, then: {allow: false}}\n")
    assert decide(rule_set, Operation.START_CHAT).allow
    assert traced(rule_set, Operation.START_CHAT) == [TraceEntry("dormant", 0, DISABLED)]


def test_deny_is_final_with_its_own_message() -> None:
    rule_set = rules(
        """\
  - {name: note, method: StartTicket, priority: 1, then: {message: "informational"}}
  - name: deny
    method: StartTicket
    priority: 2
    then: {allow: false, message: "No more tickets, {{ loginUsername }}."}
  - {name: later, method: StartTicket, priority: 3, then: {set: {cf_X: x}}}
"""
    )
    decision = decide(rule_set, Operation.START_TICKET, "loginUsername=ann")
    assert not decision.allow and decision.message == "No more tickets, ann."
    assert decision.matched == ["note", "deny"] and decision.variables == []
    result = call(rule_set, Operation.START_TICKET, "loginUsername=ann")
    assert result.success and result.message == "No more tickets, ann."
    assert result.output.to_list() == ["TicketCreation=FALSE"]


def test_deny_without_message_uses_the_default_denial() -> None:
    rule_set = rules(
        """\
  - {name: note, method: StartChat, priority: 1, then: {message: "informational"}}
  - {name: deny, method: StartChat, priority: 2, then: {allow: false}}
"""
    )
    result = call(rule_set, Operation.START_CHAT)
    assert result.output.to_list() == ["ChatCreation=FALSE"]
    assert result.message == "Chat creation denied"


@pytest.mark.parametrize(
    ("op", "entries", "expected"),
    [
        (Operation.AUTHENTICATE, ("loginUsername=ann", "loginPassword=x"), ["Authentication=FAIL"]),
        (Operation.GET_SIGN_IN_COOKIE_INFO, ("loginUsername=ann",), ["Authentication=FAIL"]),
        (
            Operation.GET_CUSTOM_FIELD_OPTIONS,
            ("loginUsername=ann",),
            ["CanStartTickets=False", "CanStartChats=False"],
        ),
        (Operation.START_TICKET, (), ["TicketCreation=FALSE"]),
        (Operation.START_CHAT, (), ["ChatCreation=FALSE"]),
    ],
)
def test_allow_false_on_each_method(op: Operation, entries: tuple[str, ...], expected: list[str]) -> None:
    rule_set = rules('  - {name: deny, method: "*", then: {allow: false, message: "Denied <&> ü"}}\n')
    result = call(rule_set, op, *entries)
    assert result.output.to_list() == expected
    assert result.message == "Denied <&> ü"


def test_allow_false_on_user_details_hides_the_html() -> None:
    rule_set = rules(
        """\
  - {name: html, method: GetUserDetails, priority: 1, then: {html: "info"}}
  - {name: deny, method: GetUserDetails, priority: 2, then: {allow: false}}
"""
    )
    assert call(rule_set, Operation.GET_USER_DETAILS).user_info_html is None


def test_allow_tickets_and_allow_chats_deny_one_of_the_two() -> None:
    rule_set = rules(
        """\
  - name: no-tickets
    method: GetCustomFieldOptions
    when: "loginUsername != 'myusername'"
    then: {allow_tickets: false, message: "You are not currently permitted to contact that department."}
  - name: chats-only-sales
    method: GetCustomFieldOptions
    when: "loginUsername != 'myusername' and departmentName|upper != 'SALES DEPARTMENT'"
    then: {allow_chats: false}
"""
    )
    sales = call(
        rule_set, Operation.GET_CUSTOM_FIELD_OPTIONS, "loginUsername=bob", "departmentName=Sales Department"
    )
    assert sales.output.to_list() == ["CanStartTickets=False", "CanStartChats=True"]
    assert sales.message == "You are not currently permitted to contact that department."
    other = call(rule_set, Operation.GET_CUSTOM_FIELD_OPTIONS, "loginUsername=bob", "departmentName=Support")
    assert other.output.to_list() == ["CanStartTickets=False", "CanStartChats=False"]
    known = call(
        rule_set, Operation.GET_CUSTOM_FIELD_OPTIONS, "loginUsername=myusername", "departmentName=Support"
    )
    assert known.output.to_list() == ["CanStartTickets=True", "CanStartChats=True"]
    assert known.message == "Result okay"


@pytest.mark.parametrize(
    ("op", "entries", "flag"),
    [
        (Operation.AUTHENTICATE, ("loginUsername=ann", "loginPassword=x"), "Authentication=OK"),
        (Operation.GET_SIGN_IN_COOKIE_INFO, ("loginUsername=ann",), "Authentication=OK"),
        (Operation.GET_CUSTOM_FIELD_OPTIONS, ("loginUsername=ann",), "CanStartTickets=True"),
        (Operation.START_TICKET, ("loginUsername=ann",), "TicketCreation=TRUE"),
        (Operation.START_CHAT, ("loginUsername=ann",), "ChatCreation=TRUE"),
        (Operation.GET_USER_DETAILS, ("username=ann",), None),
    ],
)
def test_set_and_message_on_each_method(op: Operation, entries: tuple[str, ...], flag: str | None) -> None:
    rule_set = rules(
        """\
  - name: set-all
    method: "*"
    then:
      message: "Hello {{ user.display_name }}"
      set: {cf_Plan: "<Gold> & \\"more\\" ü", DisplayName: "{{ user.username|upper }}", groupID: 7}
"""
    )
    result = call(rule_set, op, *entries)
    output = result.output.to_list()
    if flag is not None:
        assert output[0] == flag
    # Verbatim: no escaping in output variables, unicode intact, numbers as text.
    assert 'cf_Plan=<Gold> & "more" ü' in output
    assert "DisplayName=ANN" in output and "groupID=7" in output
    assert result.message == "Hello Ann"


def test_fields_fill_custom_field_data_and_later_rules_replace_by_name() -> None:
    rule_set = rules(
        """\
  - name: account
    method: GetCustomFieldOptions
    priority: 1
    then:
      fields:
        - {name: Account, list_from: "user.accounts", required: true}
        - {name: Type of Issue, list: [a, "{{ departmentName }}", ""], required: true, visible: true}
  - name: hide-issue-type
    method: GetCustomFieldOptions
    priority: 2
    when: "departmentName == 'Billing'"
    then:
      fields:
        - {name: type of issue, list: [], required: false, visible: false, lookup: true}
"""
    )
    result = call(rule_set, Operation.GET_CUSTOM_FIELD_OPTIONS, "loginUsername=ann", "departmentName=Sales")
    assert result.custom_fields == [
        CustomFieldData("Account", False, True, ("abc.com", "def.com"), True, True, False, False),
        CustomFieldData("Type of Issue", False, True, ("a", "Sales"), True, True, True, True),
    ]
    billing = call(
        rule_set, Operation.GET_CUSTOM_FIELD_OPTIONS, "loginUsername=ann", "departmentName=Billing"
    )
    assert billing.custom_fields[1] == CustomFieldData(
        "Type of Issue", True, True, (), True, False, True, False
    )
    # Without a directory user, user.accounts is missing: the rule is skipped as a whole.
    nobody = call(rule_set, Operation.GET_CUSTOM_FIELD_OPTIONS, "loginUsername=zed", "departmentName=Sales")
    assert nobody.custom_fields == []


def test_html_escapes_every_value_but_not_the_template() -> None:
    rule_set = rules(
        """\
  - name: info
    method: GetUserDetails
    then:
      html: "<b>{{ user.title }}</b> — {{ ticketNumber }} {{ '<i>' }} ü"
"""
    )
    result = call(
        rule_set, Operation.GET_USER_DETAILS, "username=ann", "ticketNumber=<script>alert(1)</script>"
    )
    assert result.user_info_html == (
        "<b>&lt;Boss&gt; &amp; Co</b> — &lt;script&gt;alert(1)&lt;/script&gt; &lt;i&gt; ü"
    )


def test_notify_renders_nested_parameters() -> None:
    rule_set = rules(
        """\
  - name: kb
    method: NotifyEventFired
    when: "eventName == 'KB Article Created'"
    then:
      notify:
        - channel: hook
          body: {title: "{{ args.title }}", id: "{{ eventType }}", tags: ["{{ method }}", 3, true, null]}
        - channel: hook
          body: {plain: text}
""",
        channels="channels:\n  hook: {type: webhook, url: 'https://example.org/h'}\n",
    )
    decision = decide(rule_set, Operation.NOTIFY_EVENT_FIRED, "eventType=501000", "args_Title=Ünï <x>")
    first, second = decision.notifications
    assert (first.rule, first.channel) == ("kb", "hook")
    assert first.params == {
        "body": {"title": "Ünï <x>", "id": "501000", "tags": ["NotifyEventFired", 3, True, None]}
    }
    assert second.params == {"body": {"plain": "text"}}
    json.dumps([dict(n.params) for n in decision.notifications])
    assert decide(rule_set, Operation.NOTIFY_EVENT_FIRED, "eventType=502000").notifications == []


def test_runtime_errors_skip_the_rule_log_and_count(caplog: pytest.LogCaptureFixture) -> None:
    rule_set = rules(
        """\
  - {name: missing-key, method: StartTicket, priority: 1, when: "cf['Nope'] == 'x'", then: {set: {cf_A: a}}}
  - {name: bad-template, method: StartTicket, priority: 2, then: {set: {cf_B: b, cf_C: "{{ 1 / 0 }}"}}}
  - {name: unsafe, method: StartTicket, priority: 3, when: "('x' * 2000000) or true", then: {set: {cf_D: d}}}
  - {name: fine, method: StartTicket, priority: 4, then: {set: {cf_E: "{{ subject }}"}}}
"""
    )
    before = {name: errors_for(name) for name in ("missing-key", "bad-template", "unsafe")}
    with caplog.at_level(logging.WARNING, logger="provider.rules"):
        decision = decide(rule_set, Operation.START_TICKET, "subject=secret subject")
    assert decision.matched == ["fine"]
    assert decision.variables == [("cf_E", "secret subject")]  # bad-template applied nothing
    records = [r for r in caplog.records if getattr(r, "event", None) == "rules.error"]
    assert [(r.rule, r.error, r.stage) for r in records] == [
        ("missing-key", "UndefinedError", "when"),
        ("bad-template", "ZeroDivisionError", "then"),
        ("unsafe", "RuleLimitExceeded", "when"),
    ]
    assert "secret subject" not in caplog.text
    assert {name: errors_for(name) - before[name] for name in before} == dict.fromkeys(before, 1.0)
    trace = traced(rule_set, Operation.START_TICKET)
    assert [t.outcome for t in trace] == [ERROR, ERROR, ERROR, MATCHED]
    assert trace[1].detail is not None and trace[1].detail.startswith("then: ZeroDivisionError")


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("subject is matching('(?i)urgent')", True),
        ("subject is matching('^urgent')", False),
        ("subject is startingwith('Re')", True),
        ("subject is endingwith('!')", True),
        ("subject|regex_search('#([0-9]+)', 1) == '42'", True),
        ("subject|regex_replace('[0-9]', 'N') == 'Re: URGENT #NN!'", True),
        ("groups.append('x') or true", None),
        ("subject|split(' ')|length == 3", True),
        ("'URGENT' in subject and 'urgent' in subject|lower", True),
        ("departmentName|upper == 'SALES'", True),
        ("'x' * 200000 == ''", None),
        ("2 ** 100000 > 1", None),
        ("''.__class__.__mro__", None),
        ("cf.__class__", None),
        ("range(10)|list|length == 10", True),
    ],
)
def test_tests_filters_and_the_sandbox(expression: str, expected: bool | None) -> None:
    rule_set = rules(
        f'  - {{name: r, method: StartTicket, when: "{expression}", then: {{set: {{cf_A: a}}}}}}\n'
    )
    trace = traced(rule_set, Operation.START_TICKET, "subject=Re: URGENT #42!", "departmentName=sales")
    if expected is None:
        assert trace[0].outcome in (ERROR, NO_MATCH)
        assert decide(rule_set, Operation.START_TICKET, "subject=x").matched == []
    else:
        assert (trace[0].outcome == MATCHED) is expected


def test_template_set_does_not_leak_between_rules() -> None:
    rule_set = rules(
        """\
  - name: a
    method: StartTicket
    priority: 1
    then: {set: {cf_A: "{% set subject = 'changed' %}{{ subject }}"}}
  - {name: b, method: StartTicket, priority: 2, then: {set: {cf_B: "{{ subject }}"}}}
"""
    )
    assert decide(rule_set, Operation.START_TICKET, "subject=orig").variables == [
        ("cf_A", "changed"),
        ("cf_B", "orig"),
    ]


def test_no_rules_for_the_method_is_neutral() -> None:
    rule_set = rules("  - {name: a, method: StartTicket, then: {allow: false}}\n")
    assert decide(rule_set, Operation.START_CHAT) == Decision()
    assert len(rule_set) == 1 and rule_set.for_method(Operation.START_CHAT) == ()


def test_a_matched_denial_stands_when_its_templates_fail() -> None:
    rule_set = rules(
        """\
  - name: deny
    method: [StartTicket, GetCustomFieldOptions]
    when: "subject == 'x' or loginUsername == 'bob'"
    then: {allow: false, message: "Sorry {{ user.display_name }}", set: {cf_A: a}}
  - name: no-chats
    method: GetCustomFieldOptions
    then: {allow_chats: false, fields: [{name: F, list_from: "user.accounts"}]}
"""
    )
    ticket = call(rule_set, Operation.START_TICKET, "subject=x")
    assert ticket.output.to_list() == ["TicketCreation=FALSE"]
    assert ticket.message == "Ticket creation denied"
    options = call(rule_set, Operation.GET_CUSTOM_FIELD_OPTIONS, "loginUsername=zed")
    assert options.output.to_list() == ["CanStartTickets=True", "CanStartChats=False"]
    assert options.custom_fields == []
    trace = traced(rule_set, Operation.START_TICKET, "subject=x")
    assert trace[0].outcome == ERROR and trace[0].detail is not None
    assert trace[0].detail.endswith("failed closed: only its denial was applied, without its message")
