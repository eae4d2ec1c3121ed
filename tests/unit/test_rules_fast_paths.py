"""The rules evaluation's fast paths (issue 14 goal 5) answer exactly as the general ones,
and every limit still holds on them."""

from __future__ import annotations

import inspect
from types import SimpleNamespace

import pytest
import regex

from provider.domain import Operation
from provider.errors import RuleLimitExceeded
from provider.rules import limits
from provider.rules.context import CONTEXT_NAMES, Names, build_context
from provider.rules.engine import NO_MATCH, TraceEntry, compile_rules
from provider.rules.environment import Condition, Scope, compile_condition
from provider.rules.limits import Budget, RuleLimits, linear_cost, regex_search
from provider.rules.loader import parse_rules
from provider.variables import InputVariables


@pytest.mark.parametrize(
    "pattern",
    ["(?i)^dept 3\\b", "(?i)sales", "^type", "a|b|cd", "(?=ab|c)x", "(?<!x)[a-z]\\w.", "\\d\\d-\\d\\d"],
)
def test_patterns_without_repetition_are_linear(pattern: str) -> None:
    cost = linear_cost(pattern)
    assert cost is not None and cost >= len(pattern)


@pytest.mark.parametrize(
    "pattern",
    [
        "^(a|aa)+$",  # repetition
        "^(a+)+$",
        "a*",
        "a?",
        "a{2}",  # braces: regex's fuzzy matching and repeats
        "(?:foo){e<=1}",
        "(?<=#)([0-9])\\1",  # backreference
        "(a)?(?(1)b|c)",  # conditional
        "[[:alpha:]]",  # read differently by re's parser
        "\\p{L}",  # regex-only syntax
        "(ab|cd|ef|gh|ij|kl|mn|op|qr)(ab|cd|ef|gh|ij|kl|mn|op|qr)",  # too many ways through
        "(",  # invalid
    ],
)
def test_anything_else_keeps_the_timeout(pattern: str) -> None:
    assert linear_cost(pattern) is None


@pytest.mark.parametrize(
    ("pattern", "text"),
    [
        ("(?i)^dept 3\\b", "Dept 3 Sales"),
        ("(?i)^dept 3\\b", "Dept 33"),
        ("(?i)sales", "the SALES team"),
        ("^type", "type 2"),
        ("(?=ab|c)x", "cx"),
        ("\\bü\\b", "a ü b"),
    ],
)
def test_a_linear_search_finds_what_the_timed_search_finds(pattern: str, text: str) -> None:
    found = regex_search(pattern, text)
    expected = regex.compile(pattern).search(text, timeout=1.0)
    assert (found and found.span()) == (expected and expected.span())


@pytest.mark.parametrize("text", ["short", "x" * (limits.LINEAR_STEPS + 1)])
def test_the_deadline_holds_on_both_regex_paths(text: str) -> None:
    budget = Budget(RuleLimits(deadline_ms=100))
    budget.deadline = 0.0  # long past
    token = limits.activate(budget)
    try:
        with pytest.raises(RuleLimitExceeded) as raised:
            regex_search("^type", text)
    finally:
        limits.deactivate(token)
    assert raised.value.limit == "deadline"


def test_conditions_run_as_plain_functions_with_the_generators_value() -> None:
    source = (
        "'Customers' in groups and cf.get('Plan', '')|lower == 'gold' and subject is matching('(?i)^re:')"
    )
    condition = compile_condition(source, CONTEXT_NAMES)
    assert inspect.isfunction(condition.function)
    assert not inspect.isgeneratorfunction(condition.function)
    # The general path: Jinja's generator storing ``result`` in the context.
    compiled = SimpleNamespace(root_render_func=condition._render)
    generated = Condition(source, compiled)  # type: ignore[arg-type]
    assert generated.function == generated._generated
    for subject, plan in (("Re: hi", "GOLD"), ("hi", "gold"), ("Re: x", "silver")):
        variables = InputVariables.parse([f"subject={subject}", f"cf_Plan={plan}"])
        scope = Scope(build_context(Operation.START_TICKET, variables, None))
        scope.variables["groups"] = Names(("customers",))
        assert condition(scope) == generated(scope) == (subject.startswith("Re") and plan == "GOLD")
        assert scope.condition_context().vars == {}


def test_group_membership_ignores_case_and_non_text() -> None:
    names = Names(("Customers", "VIP"))
    assert "CUSTOMERS" in names and "vip" in names
    assert "Nobody" not in names and 3 not in names
    assert list(names) == ["Customers", "VIP"] and names == ("Customers", "VIP")


def test_the_trace_of_rules_test_is_unchanged() -> None:
    rule_set = compile_rules(
        parse_rules(
            """\
rules:
  - {name: a, method: StartTicket, when: "subject == 'x'", then: {set: {cf_A: a}}}
  - {name: b, method: StartTicket, when: "subject is matching('^y')", then: {set: {cf_B: "{{ subject }}"}}}
  - {name: c, method: StartTicket, enabled: false, then: {set: {cf_C: c}}}
  - {name: d, method: StartTicket, then: {stop: true}}
  - {name: e, method: StartTicket, then: {set: {cf_E: e}}}
"""
        ).rules
    )
    trace: list[TraceEntry] = []
    decision = rule_set.evaluate(
        Operation.START_TICKET, InputVariables.parse(["subject=yes"]), None, trace=trace
    )
    assert decision.matched == ["b", "d"] and decision.variables == [("cf_B", "yes")]
    assert [(t.rule, t.outcome, t.detail) for t in trace] == [
        ("a", NO_MATCH, "when is false: subject == 'x'"),
        ("b", "matched", "set"),
        ("c", "disabled", None),
        ("d", "matched", "stop"),
        ("e", "not reached", "evaluation stopped by 'd'"),
    ]
