"""The conditions' pre-filter (issue 14 goal 5): which leading terms are guards, and that a rule
set decides and explains every call exactly as without it, limits and errors included."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from provider.domain import Identity, Operation
from provider.rules.context import build_context
from provider.rules.engine import NO_MATCH, RuleSet, TraceEntry, compile_rules
from provider.rules.environment import Scope
from provider.rules.limits import RuleLimits
from provider.rules.loader import parse_rules
from provider.rules.prefilter import Plan, guard_of
from provider.variables import InputVariables


@pytest.mark.parametrize(
    ("source", "kind", "constant"),
    [
        ("loginUsername == 'bob'", "eq", "bob"),
        ("'bob' == loginUsername", "eq", "bob"),
        ("loginUsername == 'bob' and location == 'PRE' and x", "eq", "bob"),
        ("departmentName in ('a', 'b')", "one_of", frozenset({"a", "b"})),
        ("departmentName in ['a']", "one_of", frozenset({"a"})),
        ("'KEY' in subject|upper", "contains", "KEY"),
        ("'Customers' in groups", "contains", "Customers"),
        ("cf.get('Plan', '')|lower == 'gold'", "eq", "gold"),
        ("args.get('k', 'none') == 'v'", "eq", "v"),
        ("subject is startingwith('RE:')", "startingwith", "RE:"),
        ("emailFrom|lower is endingwith('.org')", "endingwith", ".org"),
        ("departmentName is matching('(?i)^sales')", "matching", "(?i)^sales"),
    ],
)
def test_leading_terms_that_are_guards(source: str, kind: str, constant: Any) -> None:
    guard = guard_of(source)
    assert guard is not None
    assert (guard.kind, guard.constant) == (kind, constant)


@pytest.mark.parametrize(
    "source",
    [
        "x and loginUsername == 'bob'",  # only the leftmost term can rule a rule out alone
        "loginUsername == 'bob' or location == 'PRE'",
        "not loginUsername == 'bob'",
        "loginUsername != 'bob'",
        "cf['Plan'] == 'gold'",  # may raise (a missing key): the rule's error, not a no-match
        "eventType == 3",  # not a text constant
        "loginUsername == location",
        "subject|truncate(3) == 'abc'",  # a filter a guard does not compute
        "user.get('x', '') == 'y'",  # not a mapping of call inputs
        "cf.get(subject, '') == 'y'",
        "'a' in subject|upper|length",
        "1 == 1",
    ],
)
def test_other_conditions_have_no_guard(source: str) -> None:
    assert guard_of(source) is None


def _rules(*whens: str) -> RuleSet:
    rules = [
        {"name": f"r{i}", "method": "StartTicket", "when": when, "then": {"set": {f"out{i}": "x"}}}
        for i, when in enumerate(whens)
    ]
    return compile_rules(parse_rules(yaml.safe_dump({"rules": rules})).rules)


def test_a_plan_rejects_only_rules_whose_guard_is_false() -> None:
    rule_set = _rules(
        "loginUsername == 'bob'",
        "loginUsername == 'ann'",
        "loginUsername in ('ann', 'bob')",
        "'URGENT' in subject|upper",
        "'CALM' in subject|upper",
        "'Staff' in groups",
        "'staff' in groups",
        "subject is matching('^(a+)+$')",  # not searched without a timeout: left to Jinja
        "subject is matching('(?i)^urgent')",
        "eventName == 'Ticket Created'",  # None without an eventType: left to Jinja
    )
    variables = InputVariables.parse(["loginUsername=Bob", "subject=Urgent: printer"])
    identity = Identity(username="bob", groups=("STAFF",))
    operation = Operation.START_TICKET
    scope = Scope(build_context(operation, variables, identity))
    plan = Plan(rule.guard for rule in rule_set.for_method(operation))
    rejected = plan.rejected(scope.variables)
    assert sorted(rejected) == [1, 4]
    assert rejected[4] == (len("URGENT: PRINTER"),)  # what `subject|upper` charges the budget
    trace: list[TraceEntry] = []
    decision = rule_set.evaluate(operation, variables, identity, trace)
    assert decision.matched == ["r0", "r2", "r3", "r5", "r6", "r8"]
    assert [entry.rule for entry in trace if entry.outcome == NO_MATCH] == ["r1", "r4", "r7", "r9"]


# --- equivalence over random rule sets, inputs and limits ------------------------------------

WORDS = ["bob", "Bob", "ann", "PRE", "Sales", "dept 3", "urgent", "KEY", "gold", "Customers", "ü", ""]
TERMS = [
    "loginUsername == {a}",
    "{a} == location",
    "departmentName in ({a}, {b})",
    "{a} in subject|upper",
    "{a} in subject|lower|upper",
    "cf.get('Plan', {a})|lower == {b}",
    "{a} in groups",
    "subject is startingwith({a})",
    "departmentName|lower is endingwith({a})",
    "subject is matching({pattern})",
    "eventName == {a}",
    "cf['Plan'] == {a}",  # raises when the call has no cf_Plan
    "variables.get('other', '') == {a}",
    "args.get('k', {a}) == {b}",
    "eventType == 502000",
    "subject|length > 3",
    "(subject * 3)|length > 10",
    "{a} in user",
]
PATTERNS = ["(?i)^dept", "urgent|KEY", "^(a+)+$", "gold"]


@st.composite
def conditions(draw: st.DrawFn) -> str | None:
    if draw(st.integers(0, 9)) == 0:
        return None
    terms = []
    for _ in range(draw(st.integers(1, 3))):
        term = draw(st.sampled_from(TERMS)).format(
            a=repr(draw(st.sampled_from(WORDS))),
            b=repr(draw(st.sampled_from(WORDS))),
            pattern=repr(draw(st.sampled_from(PATTERNS))),
        )
        terms.append(f"not {term}" if draw(st.integers(0, 5)) == 0 else term)
    joiner = draw(st.sampled_from([" and ", " and ", " or "]))
    return joiner.join(terms)


@st.composite
def rule_files(draw: st.DrawFn) -> str:
    rules: list[dict[str, Any]] = []
    for i in range(draw(st.integers(1, 12))):
        then: dict[str, Any] = draw(
            st.sampled_from(
                [
                    {"set": {f"out{i}": "{{ subject|upper }}"}},
                    {"set": {"shared": f"rule {i}"}},
                    {"allow": False, "message": "{{ cf['Plan'] }}"},
                    {"allow": False},
                    {"message": "{{ loginUsername }}", "stop": True},
                ]
            )
        )
        rule: dict[str, Any] = {"name": f"r{i}", "method": "StartTicket", "priority": draw(st.integers(0, 2))}
        when = draw(conditions())
        if when is not None:
            rule["when"] = when
        if draw(st.booleans()) and "allow" in then:
            rule["on_error"] = "skip"
        if draw(st.integers(0, 6)) == 0:
            rule["enabled"] = False
        rule["then"] = then
        rules.append(rule)
    return yaml.safe_dump({"rules": rules}, sort_keys=False)


@st.composite
def calls(draw: st.DrawFn) -> tuple[InputVariables, Identity | None]:
    text = st.lists(st.sampled_from(WORDS), max_size=6).map(" ".join)
    entries = [
        f"loginUsername={draw(st.sampled_from(WORDS))}",
        f"location={draw(st.sampled_from(WORDS))}",
        f"departmentName={draw(text)}",
        f"subject={draw(text)}",
    ]
    if draw(st.booleans()):
        entries.append(f"cf_Plan={draw(text)}")
    if draw(st.booleans()):
        entries.append(f"args_K={draw(st.sampled_from(WORDS))}")
    if draw(st.booleans()):
        entries.append("eventType=502000")
    identity = None
    if draw(st.booleans()):
        identity = Identity(username="bob", groups=tuple(draw(st.lists(st.sampled_from(WORDS), max_size=3))))
    return InputVariables.parse(entries), identity


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rule_files(), calls(), st.sampled_from([1, 2, 4, 64]))
def test_the_prefilter_decides_and_explains_as_jinja_alone(
    text: str, call: tuple[InputVariables, Identity | None], max_output: int
) -> None:
    rules = parse_rules(text).rules
    fast = compile_rules(rules)
    plain = RuleSet(fast.rules, prefilter=False)
    variables, identity = call
    limits = RuleLimits(max_output=max_output, deadline_ms=60_000)
    for with_trace in (False, True):
        fast_trace: list[TraceEntry] | None = [] if with_trace else None
        plain_trace: list[TraceEntry] | None = [] if with_trace else None
        expected = plain.evaluate(Operation.START_TICKET, variables, identity, plain_trace, limits)
        actual = fast.evaluate(Operation.START_TICKET, variables, identity, fast_trace, limits)
        assert actual == expected
        assert fast_trace == plain_trace
