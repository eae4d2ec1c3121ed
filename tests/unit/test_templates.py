"""Message templates and global variables in a rules file: validation at the right lines,
``template:`` merged into notify entries, ``vars`` in conditions and templates."""

from __future__ import annotations

import pytest

from provider.comms.render import render_template
from provider.domain import Operation
from provider.errors import RuleLimitExceeded, RulesFileError
from provider.rules.engine import compile_rules
from provider.rules.limits import RuleLimits
from provider.rules.loader import dump_rules, parse_rules
from provider.variables import InputVariables

HEAD = """\
variables:
  region: eu
channels:
  mail: {type: email, host: smtp.example.org, from: helpdesk@example.org}
  hook: {type: webhook, url: "https://hooks.example.org/x"}
templates:
  mail-one:
    kind: email
    tags: [Tickets]
    subject: "Ticket {{ ticketNumber }}"
    html: "<p>{{ subject }}</p>"
"""


def rule(notify: str, when: str = "") -> str:
    condition = f"\n    when: {when}" if when else ""
    return f"""\
rules:
  - name: r
    method: NotifyEventFired{condition}
    then:
      notify:
        - {notify}
"""


def problems(text: str, **kwargs: object) -> list[tuple[int | None, str]]:
    with pytest.raises(RulesFileError) as info:
        parse_rules(text, **kwargs)  # type: ignore[arg-type]
    return [(p.line, p.message) for p in info.value.problems]


def test_a_notify_entry_gets_the_template_with_its_own_keys_over_it() -> None:
    text = HEAD + rule('{channel: mail, template: mail-one, to: "{{ email }}", subject: "Own {{ subject }}"}')
    parsed = parse_rules(text)
    [entry] = parsed.rules[0].then.notify
    assert entry.template == "mail-one"
    assert dict(entry.params) == {"to": "{{ email }}", "subject": "Own {{ subject }}"}
    assert entry.merged == {
        "subject": "Own {{ subject }}",
        "html": "<p>{{ subject }}</p>",
        "to": "{{ email }}",
    }
    # Written back as given: the template's name and the entry's own keys only.
    assert "template: mail-one" in dump_rules(parsed)
    assert parse_rules(dump_rules(parsed)) == parsed

    rules = compile_rules(parsed.rules)
    call = InputVariables([("ticketNumber", "7"), ("subject", "<i>x</i> ü"), ("email", "a@example.org")])
    [note] = rules.evaluate(Operation.NOTIFY_EVENT_FIRED, call, None).notifications
    assert note.params == {
        "subject": "Own <i>x</i> ü",
        "html": "<p>&lt;i&gt;x&lt;/i&gt; ü</p>",
        "to": "a@example.org",
    }


def test_unknown_variables_and_filters_in_a_template_are_errors_at_their_line() -> None:
    text = HEAD.replace(
        'html: "<p>{{ subject }}</p>"', 'html: "<p>{{ subjet }}</p>"\n    text: "{{ subject|shout }}"'
    )
    text += rule("{channel: mail, template: mail-one, to: x@example.org}")
    found = problems(text)
    assert found == [
        (11, "template 'mail-one': html: unknown variable 'subjet' (did you mean 'subject'?)"),
        (12, "template 'mail-one': text: unknown filter 'shout'"),
    ]


def test_a_template_for_another_channel_type_is_refused_at_the_notify_line() -> None:
    found = problems(HEAD + rule("{channel: hook, template: mail-one}"))
    assert found == [(17, "notify: template 'mail-one' is written for email, but channel 'hook' is webhook")]


def test_an_unknown_template_is_refused_with_a_hint() -> None:
    found = problems(HEAD + rule("{channel: mail, template: mail-on, to: x@example.org}"))
    assert found == [
        (
            17,
            "notify: unknown template 'mail-on' (did you mean 'mail-one'?) "
            "(define it under templates:; known: mail-one)",
        )
    ]


def test_template_kinds_and_parameters_are_checked() -> None:
    text = """\
templates:
  a: {kind: e-mail, subject: x}
  b:
    kind: webhook
    subject: x
rules: []
"""
    found = problems(text)
    assert found[0][0] == 2 and found[0][1].startswith("template 'a' needs a 'kind' (one of ")
    assert "(did you mean 'email'?)" in found[0][1]
    assert found[1] == (5, "template 'b': unknown webhook template parameter 'subject' (known: body)")


def test_variables_are_vars_in_conditions_and_templates_ignoring_case() -> None:
    text = HEAD + rule(
        '{channel: hook, body: {r: "{{ vars.REGION }}", phone: "{{ vars.phone }}"}}',
        when="vars.Region == 'eu'",
    )
    parsed = parse_rules(text, read_only_vars={"phone": "+1 555"})
    assert parsed.variables == (("region", "eu"),)
    rules = compile_rules(parsed.rules, variables={"phone": "+1 555", **dict(parsed.variables)})
    [note] = rules.evaluate(Operation.NOTIFY_EVENT_FIRED, InputVariables(), None).notifications
    assert note.params == {"body": {"r": "eu", "phone": "+1 555"}}
    # Another region: the condition is false.
    other = compile_rules(parsed.rules, variables={"phone": "+1 555", "region": "us"})
    assert other.evaluate(Operation.NOTIFY_EVENT_FIRED, InputVariables(), None).notifications == []


def test_an_editable_variable_cannot_shadow_a_read_only_one() -> None:
    text = "variables:\n  a: 1\n  Support_Phone: '+44'\n  A: 2\nrules: []\n"
    assert problems(text, read_only_vars={"support_phone": "+1"}) == [
        (
            3,
            "variable 'Support_Phone' is read-only (set by ST_PROVIDER_VAR_SUPPORT_PHONE); "
            "an editable variable cannot replace it",
        ),
        (4, "variable 'A' is defined more than once (names ignore case)"),
    ]
    assert parse_rules(text.replace("  A: 2\n", ""), read_only_vars={}).variables == (
        ("a", "1"),
        ("Support_Phone", "+44"),
    )


def test_render_a_template_with_given_values_and_vars() -> None:
    [template] = parse_rules(HEAD + "rules: []\n").templates
    rendered = render_template(template, [("ticketNumber", "9"), ("subject", "<b>&</b>")], {"region": "eu"})
    assert rendered == {"subject": "Ticket 9", "html": "<p>&lt;b&gt;&amp;&lt;/b&gt;</p>"}


def test_the_sandbox_limits_apply_to_templates() -> None:
    text = HEAD.replace('html: "<p>{{ subject }}</p>"', 'html: "{{ subject * 5000 }}"')
    parsed = parse_rules(text + rule("{channel: mail, template: mail-one, to: x@example.org}"))
    limits = RuleLimits(max_output=1_024, deadline_ms=1_000)
    rules = compile_rules(parsed.rules)
    call = InputVariables([("subject", "abc")])
    decision = rules.evaluate(Operation.NOTIFY_EVENT_FIRED, call, None, limits=limits)
    assert (decision.notifications, decision.rule_errors) == ([], [("r", "RuleLimitExceeded")])
    with pytest.raises(RuleLimitExceeded):
        render_template(parsed.templates[0], call.pairs, {}, limits=limits)
