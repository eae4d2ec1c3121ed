"""Unguarded lookups of values SmarterTrack may not send: found on the Jinja2 tree, never refused."""

from __future__ import annotations

import json

import pytest

from provider.domain import Operation
from provider.rules.engine import compile_rules
from provider.rules.lint import unguarded_lookups
from provider.rules.loader import parse_rules
from provider.variables import InputVariables


def _found(when: str | None = None, message: str = "x") -> list[str]:
    """The places and lookups reported for one StartTicket rule (JSON strings are YAML scalars)."""
    lines = ["rules:", "  - name: r", "    method: StartTicket"]
    if when is not None:
        lines.append(f"    when: {json.dumps(when)}")
    lines.append(f"    then: {{message: {json.dumps(message)}}}")
    parsed = parse_rules("\n".join(lines) + "\n")
    return [p.message.split(" is read")[0] for p in unguarded_lookups(parsed.rules)]


@pytest.mark.parametrize(
    "when",
    [
        "cf.get('Plan') == 'gold'",
        "'Plan' in cf and cf['Plan'] == 'gold'",
        "'plan' in cf and cf.PLAN == 'gold'",  # names ignore case, as cf does
        "cf.Plan is defined and cf.Plan == 'gold'",
        "cf.Plan | default('') == 'gold'",
        "'Plan' not in cf or cf['Plan'] == 'gold'",
        "cf.Plan is undefined or cf.Plan == 'gold'",
        "cf['Plan'] == 'gold' if 'Plan' in cf else false",
        "subject == 'x' and 'x' in groups",
        "args.items() | list | length > 0",
    ],
)
def test_guarded_lookups_are_not_reported(when: str) -> None:
    assert _found(when=when) == []


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ("cf['Plan'] == '0'", ["when: cf['Plan']"]),
        ("cf.Plan == '0'", ["when: cf.Plan"]),
        ("args.ticketNumber == '1'", ["when: args.ticketNumber"]),
        ("user['mail'] == 'x'", ["when: user['mail']"]),
        ("variables['brand'] in ['a']", ["when: variables['brand']"]),
        ("'Plan' in cf and cf['Other'] == '1'", ["when: cf['Other']"]),  # a guard of another key
        ("'Plan' in cf or cf['Plan'] == '1'", ["when: cf['Plan']"]),  # `or` runs it when absent
        ("cf.Plan is defined or cf.Plan == '1'", ["when: cf.Plan"]),
    ],
)
def test_unguarded_lookups_are_reported_with_their_place(when: str, expected: list[str]) -> None:
    assert _found(when=when) == expected


def test_templates_and_if_blocks() -> None:
    guarded = "{% if user.mail is defined %}{{ user.mail }}{% else %}none{% endif %}"
    assert _found(message=guarded) == []
    assert _found(message="{% if 'X' in cf %}{{ cf.X }}{% endif %}{{ cf.Y }}") == ["then.message: cf.Y"]
    assert _found(message="{% if cf.X is undefined %}{{ cf.X }}{% endif %}") == ["then.message: cf.X"]


def test_rule_name_and_line_are_given() -> None:
    text = "rules:\n  - name: ok\n    method: StartChat\n    then: {allow: false}\n"
    text += "  - name: risky\n    method: StartChat\n    when: \"cf['A'] == '1'\"\n    then: {allow: false}\n"
    (warning,) = unguarded_lookups(parse_rules(text).rules)
    assert (warning.rule, warning.line) == ("risky", 5)
    assert str(warning).startswith("line 5, rule 'risky': when: cf['A'] is read without a guard")


def test_a_rule_that_raises_is_named_in_the_decision() -> None:
    rule_set = compile_rules(
        parse_rules(
            "rules:\n"
            "  - {name: fine, method: StartTicket, then: {set: {a: '1'}}}\n"
            "  - {name: broken, method: StartTicket, when: \"cf['Missing'] == '1'\", then: {set: {b: '2'}}}\n"
            "  - {name: bad-template, method: StartTicket, then: {set: {c: '{{ args.nope }}'}}}\n"
        ).rules
    )
    decision = rule_set.evaluate(Operation.START_TICKET, InputVariables(), None)
    assert decision.matched == ["fine"]
    assert decision.rule_errors == [("broken", "UndefinedError"), ("bad-template", "UndefinedError")]
