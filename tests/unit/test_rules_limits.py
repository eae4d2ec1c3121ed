"""The rules sandbox's limits (issue 9 item 4) and deny rules failing closed on errors (item 11).

Each attack is one the red-team pass ran against a server: before the limits it
allocated gigabytes or never finished. Each must now fail at once, as a rule error
naming the limit, without allocating what it asked for (tracemalloc's peak), and the
test itself must finish in well under a second.
"""

from __future__ import annotations

import logging
import time
import tracemalloc
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY

from provider.calls import Provider
from provider.domain import CallRequest, CallResult, Decision, Identity, Operation
from provider.errors import RulesFileError
from provider.rules.engine import ERROR, MATCHED, NO_MATCH, RuleSet, TraceEntry, compile_rules
from provider.rules.limits import RuleLimits
from provider.rules.loader import dump_rules, parse_rules
from provider.settings import Secret
from provider.variables import InputVariables
from tests.plugins import DictAuthenticator

PW = "pw"
FAST = RuleLimits(deadline_ms=100)
#: No attack may make Python allocate more than this while it is refused.
PEAK_BYTES = 32 * 1024 * 1024  # the total a call may build (16 MiB by default), and some
CATASTROPHIC_SUBJECT = "a" * 40 + "!"


def rules(text: str) -> RuleSet:
    return compile_rules(parse_rules(f"rules:\n{text}").rules)


def decide(rule_set: RuleSet, op: Operation, *entries: str, limits: RuleLimits = FAST) -> Decision:
    return rule_set.evaluate(op, InputVariables.parse(entries), None, limits=limits)


def traced(rule_set: RuleSet, op: Operation, *entries: str) -> list[TraceEntry]:
    trace: list[TraceEntry] = []
    rule_set.evaluate(op, InputVariables.parse(entries), None, trace=trace, limits=FAST)
    return trace


def call(rule_set: RuleSet, op: Operation, *entries: str) -> CallResult:
    ann = Identity(username="ann")
    provider = Provider(
        Secret(PW), rules=rule_set, authenticator=DictAuthenticator(users={"ann": ("x", ann)})
    )
    return provider.call(CallRequest(op, InputVariables.parse([f"authPW={PW}", *entries])))


def errors_for(rule: str) -> float:
    return REGISTRY.get_sample_value("st_provider_rule_errors_total", {"rule": rule}) or 0.0


def rule_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == "rules.error"]


@pytest.fixture
def traced_memory() -> Iterator[None]:
    """Python's allocations traced during the test (``tracemalloc.get_traced_memory``)."""
    tracemalloc.start()
    try:
        yield
    finally:
        tracemalloc.stop()


def _yaml(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


TEMPLATE_ATTACKS = [
    pytest.param("{{ (['a'*100000]*20000)|join|length }}", "value", id="2GB-join"),
    pytest.param("{{ 'a'|center(100000000) }}", "value", id="center"),
    pytest.param("{{ 'a'.ljust(100000000) }}", "value", id="ljust"),
    pytest.param("{{ 'a'.center(100000000) }}", "value", id="center-method"),
    pytest.param("{{ '%0100000000d'|format(1) }}", "value", id="format-filter"),
    pytest.param("{{ '%0100000000d' % 1 }}", "value", id="percent-width"),
    pytest.param("{{ '{:>100000000}'.format(1) }}", "value", id="str-format-width"),
    pytest.param("{{ ('%(a)s' * 100000) % {'a': 'a' * 100000} }}", "value", id="percent-repeats"),
    pytest.param("{{ ('{0}' * 200000).format('a' * 1000) }}", "value", id="str-format-repeats"),
    pytest.param("{{ 'a'|indent(100000000, true) }}", "value", id="indent"),
    pytest.param("{{ ('a ' * 300000)|wordwrap(1, wrapstring='x' * 1000) }}", "value", id="wordwrap"),
    pytest.param("{{ ('a' * 100000)|replace('', 'b' * 100000) }}", "value", id="replace"),
    pytest.param("{{ subject|regex_replace('', 'b' * 100000) }}", "value", id="regex-replace"),
    pytest.param("{{ range(100000)|map('center', 60000)|join|length }}", "value", id="map-center-join"),
    pytest.param(
        "{{ range(100000)|map('center', 60000)|list|length }}", "total|deadline", id="map-center-list"
    ),
    pytest.param("{{ (1).to_bytes(1000000000, 'big')|length }}", "value", id="int-method-size"),
    pytest.param("{{ {'a': [1] * 1000}|tojson(100000000) }}", "value", id="tojson-indent"),
    pytest.param("{{ ('a.co ' * 100000)|urlize(target='x' * 100000) }}", "value", id="urlize-target"),
    pytest.param("{{ ('a\t' * 100000).expandtabs(100000) }}", "value", id="expandtabs"),
    pytest.param(
        "{% set ns = namespace(x='a' * 100000) %}{% for i in range(40) %}{% set ns.x = ns.x ~ ns.x %}"
        "{% endfor %}{{ ns.x|length }}",
        "value",
        id="doubling-concat",
    ),
    pytest.param(
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "deadline",
        id="nested-range",
    ),
    pytest.param(
        "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% else %}x{% endif %}{% endmacro %}{{ f(60) }}",
        "deadline|value|total",  # whichever comes first
        id="exponential-macro",
    ),
    pytest.param("{{ 'a' * 70000 }}", "output", id="output-size"),
]

CONDITION_ATTACKS = [
    pytest.param("((10 ** 1000) ** 1000) ** 1000 > 1", "integer", id="huge-power"),
    pytest.param("2 ** (10 ** 10) > 1", "integer", id="power-tower"),
    pytest.param("subject is matching('^(a|aa)+$')", "regex", id="catastrophic-regex"),
    pytest.param("([1] * 100000) * 100000", "items", id="list-repeat"),
]


@pytest.mark.parametrize(("template", "limit"), TEMPLATE_ATTACKS)
def test_template_attacks_fail_fast_without_allocating(
    template: str, limit: str, caplog: pytest.LogCaptureFixture, traced_memory: None
) -> None:
    rule_set = rules(
        f'  - {{name: attack, method: StartTicket, then: {{set: {{cf_A: "{_yaml(template)}"}}}}}}\n'
    )
    before = errors_for("attack")
    # CPU time of this thread: what the attack costs, not how loaded the machine is (without the
    # limits each attack runs for minutes to years; the deadline is 200 ms).
    started = time.thread_time()
    with caplog.at_level(logging.WARNING, logger="provider.rules"):
        decision = decide(rule_set, Operation.START_TICKET, f"subject={CATASTROPHIC_SUBJECT}")
    elapsed = time.thread_time() - started
    assert decision.matched == [] and decision.variables == []
    [record] = rule_errors(caplog)
    assert (record.rule, record.error, record.stage, record.outcome) == (
        "attack",
        "RuleLimitExceeded",
        "then",
        "skipped",
    )
    assert record.limit in limit.split("|")
    assert errors_for("attack") == before + 1
    assert elapsed < 1.0
    assert tracemalloc.get_traced_memory()[1] < PEAK_BYTES


@pytest.mark.parametrize(("condition", "limit"), CONDITION_ATTACKS)
def test_condition_attacks_fail_fast(condition: str, limit: str, caplog: pytest.LogCaptureFixture) -> None:
    rule_set = rules(
        f'  - {{name: attack, method: StartChat, when: "{_yaml(condition)}", then: {{set: {{cf_A: a}}}}}}\n'
    )
    started = time.thread_time()
    with caplog.at_level(logging.WARNING, logger="provider.rules"):
        decision = decide(rule_set, Operation.START_CHAT, f"subject={CATASTROPHIC_SUBJECT}")
    assert time.thread_time() - started < 1.0
    assert decision.matched == []
    [record] = rule_errors(caplog)
    assert (record.error, record.limit, record.stage) == ("RuleLimitExceeded", limit, "when")


def test_the_issues_catastrophic_subject_answers_at_once() -> None:
    """``^(a+)+$`` against 40 a's and ``!`` took exponential time with ``re``."""
    rule_set = rules(
        "  - {name: m, method: StartChat, when: \"subject is matching('^(a+)+$')\", then: {allow: false}}\n"
    )
    started = time.thread_time()
    decision = decide(rule_set, Operation.START_CHAT, f"subject={CATASTROPHIC_SUBJECT}")
    assert time.thread_time() - started < 1.0
    assert decision.allow and decision.matched == []
    assert not decide(rule_set, Operation.START_CHAT, "subject=aaaa").allow


def test_the_deadline_is_per_call_and_checked_before_each_rule(caplog: pytest.LogCaptureFixture) -> None:
    rule_set = rules(
        """\
  - name: slow
    method: StartTicket
    priority: 1
    then: {set: {cf_A: "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"}}
  - {name: later, method: StartTicket, priority: 2, when: "subject == 'x'", then: {set: {cf_B: b}}}
"""
    )
    with caplog.at_level(logging.WARNING, logger="provider.rules"):
        decision = decide(rule_set, Operation.START_TICKET, "subject=x")
    assert decision.matched == []
    assert [(r.rule, r.limit) for r in rule_errors(caplog)] == [("slow", "deadline"), ("later", "deadline")]
    # The next call has its own deadline.
    fine = rules("  - {name: later, method: StartTicket, when: \"subject == 'x'\", then: {set: {cf_B: b}}}\n")
    assert decide(fine, Operation.START_TICKET, "subject=x").variables == [("cf_B", "b")]


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ '-' * 20 }}", "-" * 20),
        ("{{ range(5)|join(',') }}", "0,1,2,3,4"),
        ("{{ '%05d' % 42 }}-{{ '%s/%s' % (subject, 2) }}", "00042-Re: order #42/2"),
        ("{{ '{:>5}|{}'.format('a', subject) }}", "    a|Re: order #42"),
        ("{{ 'ab'|center(6) }}|{{ 'x'|indent(2, true) }}|{{ 'a-b'|replace('-', '+') }}", "  ab  |  x|a+b"),
        ("{{ subject ~ '!' ~ 3 }}", "Re: order #42!3"),
        ("{{ subject|regex_replace('#(?P<n>[0-9]+)', 'no. \\\\g<n>') }}", "Re: order no. 42"),
        ("{{ subject|regex_search('(?<=#)([0-9])\\\\1') }}", ""),
        ("{{ subject|split(' ')|join('_') }}", "Re:_order_#42"),
        ("{% for w in subject|split %}{{ loop.index }}{{ w|upper }}{% endfor %}", "1RE:2ORDER3#42"),
        ("{% macro b(x) %}<{{ x }}>{% endmacro %}{{ b(subject|lower) }}", "<re: order #42>"),
        ("{% set s %}{{ subject }}{% endset %}{{ s|length }}", "13"),
        (
            "{{ (2 ** 64) * 3 }} {{ [1, 2] + [3] }} {{ ['a'] * 2 }}",
            "55340232221128654848 [1, 2, 3] ['a', 'a']",
        ),
        ("{{ '9' * 5|int }}", "99999"),
        ("{{ [1, 2, 3]|sum }} {{ [3, 1]|sort|list }}", "6 [1, 3]"),
    ],
)
def test_normal_templates_still_work(template: str, expected: str) -> None:
    rule_set = rules(f'  - {{name: ok, method: StartTicket, then: {{set: {{cf_A: "{_yaml(template)}"}}}}}}\n')
    decision = decide(rule_set, Operation.START_TICKET, "subject=Re: order #42")
    assert decision.variables == [("cf_A", expected)]


def test_html_escaping_still_applies_through_concat_and_join() -> None:
    rule_set = rules(
        """\
  - name: h
    method: GetUserDetails
    then: {html: "<b>{{ subject ~ '&' }}</b>{{ [subject, '<i>']|join('|') }}"}
"""
    )
    decision = decide(rule_set, Operation.GET_USER_DETAILS, "subject=<x>")
    assert decision.html == "<b>&lt;x&gt;&amp;</b>&lt;x&gt;|&lt;i&gt;"


def test_a_deny_rule_whose_when_raises_denies_with_the_default_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rule_set = rules(
        """\
  - {name: vip-only, method: StartTicket, when: "cf['Tier'] != 'vip'", then: {allow: false, message: Nope}}
  - {name: later, method: StartTicket, priority: 5, then: {set: {cf_B: b}}}
  - {name: no-chats, method: GetCustomFieldOptions, when: "cf['Tier'] == 'free'", then: {allow_chats: false}}
"""
    )
    before = errors_for("vip-only")
    with caplog.at_level(logging.WARNING, logger="provider.rules"):
        result = call(rule_set, Operation.START_TICKET, "subject=x")
    assert result.output.to_list() == ["TicketCreation=FALSE"]
    assert result.message == "Ticket creation denied"
    [record] = rule_errors(caplog)
    assert (record.rule, record.error, record.stage, record.outcome) == (
        "vip-only",
        "UndefinedError",
        "when",
        "denied",
    )
    assert errors_for("vip-only") == before + 1
    # A deny is final: the later rule is not reached.
    assert decide(rule_set, Operation.START_TICKET).matched == ["vip-only"]
    trace = traced(rule_set, Operation.START_TICKET)
    assert trace[0].outcome == ERROR and trace[0].detail is not None and "failed closed" in trace[0].detail
    options = call(rule_set, Operation.GET_CUSTOM_FIELD_OPTIONS)
    assert options.output.to_list() == ["CanStartTickets=True", "CanStartChats=False"]
    assert decide(rule_set, Operation.START_TICKET, "cf_Tier=vip").allow


def test_a_deny_rule_that_hits_a_limit_fails_closed(caplog: pytest.LogCaptureFixture) -> None:
    rule_set = rules(
        "  - {name: spam, method: StartChat, when: \"subject is matching('^(a|aa)+$')\", then: {allow: false}}\n"
    )
    with caplog.at_level(logging.WARNING, logger="provider.rules"):
        decision = decide(rule_set, Operation.START_CHAT, f"subject={CATASTROPHIC_SUBJECT}")
    assert not decision.allow and decision.message is None
    [record] = rule_errors(caplog)
    assert (record.limit, record.outcome) == ("regex", "denied")


def test_on_error_skip_opts_out_of_failing_closed(caplog: pytest.LogCaptureFixture) -> None:
    rule_set = rules(
        """\
  - name: vip-only
    method: StartTicket
    when: "cf['Tier'] != 'vip'"
    on_error: skip
    then: {allow: false}
  - {name: later, method: StartTicket, priority: 5, then: {set: {cf_B: b}}}
"""
    )
    with caplog.at_level(logging.WARNING, logger="provider.rules"):
        decision = decide(rule_set, Operation.START_TICKET)
    assert decision.allow and decision.matched == ["later"]
    [record] = rule_errors(caplog)
    assert (record.rule, record.outcome) == ("vip-only", "skipped")
    assert [t.outcome for t in traced(rule_set, Operation.START_TICKET)] == [ERROR, MATCHED]
    # It still denies when its condition can be decided.
    assert not decide(rule_set, Operation.START_TICKET, "cf_Tier=free").allow
    assert [t.outcome for t in traced(rule_set, Operation.START_TICKET, "cf_Tier=vip")] == [NO_MATCH, MATCHED]


def test_on_error_is_validated_and_round_trips() -> None:
    text = "rules:\n  - {name: d, method: StartTicket, when: \"subject == 'x'\", on_error: skip, then: {allow: false}}\n"
    parsed = parse_rules(text)
    assert parsed.rules[0].on_error == "skip"
    assert parse_rules(dump_rules(parsed)) == parsed
    assert "on_error: skip" in dump_rules(parsed)
    assert (
        parse_rules("rules:\n  - {name: d, method: StartTicket, then: {allow: false}}\n").rules[0].on_error
        is None
    )
    with pytest.raises(RulesFileError) as bad:
        parse_rules("rules:\n  - {name: d, method: StartTicket, on_error: ignore, then: {allow: false}}\n")
    assert [p.message for p in bad.value.problems] == ["on_error must be one of deny, skip, not 'ignore'"]
    with pytest.raises(RulesFileError) as pointless:
        parse_rules("rules:\n  - {name: s, method: StartTicket, on_error: deny, then: {set: {cf_A: a}}}\n")
    assert "on_error: deny needs a rule that denies" in pointless.value.problems[0].message
