"""Rules files: parsing, every validation problem with its line and rule, and round trips."""

from __future__ import annotations

from pathlib import Path

import pytest

from provider.domain import Operation
from provider.errors import RuleProblem, RulesFileError
from provider.rules.loader import (
    channel_warnings,
    dump_rules,
    load_rules_file,
    parse_rules,
    rule_from_mapping,
)

REPO = Path(__file__).resolve().parents[2]

ISSUE_EXAMPLE = """\
channels:
  sms:
    type: uniphore-sms
    base_url: https://gointeract.io
    account_id: acc
    tenant_id: ten
    application_key: ${SMS_APP_KEY}
    environment: prod
rules:
  - name: issue-types-sales
    method: GetCustomFieldOptions
    priority: 10
    enabled: true
    when: "'sales' in departmentName|lower and location == 'PRE'"
    then:
      fields:
        - name: Type of Issue
          list: [Change Plan, Help with order]
          required: true
          visible: true
          lookup: false
  - name: urgent-to-critical
    method: StartTicket
    when: "subject is matching('(?i)urgent')"
    then:
      set: {departmentName: Critical Support, "cf_Escalated": "yes, from {{ loginUsername }}"}
  - name: no-tickets-for-guests
    method: [GetCustomFieldOptions, StartTicket, StartChat]
    when: "'Customers' not in groups"
    then:
      allow: false
      message: You are not currently permitted to contact that department.
      stop: true
  - name: sms-on-ticket
    method: NotifyEventFired
    when: "eventType == 502000"
    then:
      notify:
        - channel: sms
          campaign: tickets
          to: "{{ args.phone }}"
          params: {title: "{{ eventName }}", count: 3, nested: ["{{ method }}", true]}
"""


def problems(text: str, **kwargs: object) -> list[RuleProblem]:
    with pytest.raises(RulesFileError) as info:
        parse_rules(text, **kwargs)  # type: ignore[arg-type]
    return list(info.value.problems)


def one_problem(text: str, **kwargs: object) -> RuleProblem:
    found = problems(text, **kwargs)
    assert len(found) == 1, found
    return found[0]


def test_the_issue_example_parses_into_the_model() -> None:
    rules_file = parse_rules(ISSUE_EXAMPLE)
    [sms] = rules_file.channels
    assert (sms.name, sms.type) == ("sms", "uniphore-sms")
    assert sms.settings["application_key"] == "${SMS_APP_KEY}"  # never resolved
    sales, urgent, guests, notify = rules_file.rules
    assert sales.priority == 10 and sales.methods == {Operation.GET_CUSTOM_FIELD_OPTIONS}
    [field] = sales.then.fields
    assert field.options == ("Change Plan", "Help with order")
    assert (field.required, field.visible, field.lookup) == (True, True, False)
    assert urgent.priority == 0 and urgent.enabled
    assert urgent.then.set == (
        ("departmentName", "Critical Support"),
        ("cf_Escalated", "yes, from {{ loginUsername }}"),
    )
    assert guests.methods == {
        Operation.GET_CUSTOM_FIELD_OPTIONS,
        Operation.START_TICKET,
        Operation.START_CHAT,
    }
    assert guests.then.allow is False and guests.then.stop
    assert notify.then.notify[0].channel == "sms"
    assert notify.then.notify[0].params["params"] == {
        "title": "{{ eventName }}",
        "count": 3,
        "nested": ["{{ method }}", True],
    }
    assert [r.line for r in rules_file.rules] == [10, 22, 27, 34]


def test_the_sample_provider_file_is_shipped() -> None:
    assert (REPO / "rules" / "sample-provider.yaml").is_file()


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "rules").glob("*.yaml")))
def test_shipped_examples_are_valid(name: str) -> None:
    rules_file = load_rules_file(REPO / "rules" / name)
    assert rules_file.rules


def test_export_round_trips() -> None:
    original = parse_rules(ISSUE_EXAMPLE)
    text = dump_rules(original, header="exported\n${VAR} kept")
    assert text.startswith("# exported\n# ${VAR} kept\n")
    again = parse_rules(text)
    assert again == original
    assert dump_rules(again, header="exported\n${VAR} kept") == text


def test_multiline_html_is_exported_as_a_block_and_round_trips() -> None:
    text = """\
rules:
  - name: info
    method: GetUserDetails
    then:
      html: |
        <b>{{ user.display_name }}</b>
        <i>line 2 ü</i>
"""
    original = parse_rules(text)
    exported = dump_rules(original)
    assert "html: |" in exported
    assert parse_rules(exported) == original


def test_stored_mapping_round_trips_through_rule_from_mapping() -> None:
    for rule in parse_rules(ISSUE_EXAMPLE).rules:
        assert (
            rule_from_mapping(rule.to_mapping(), channels={"sms": "uniphore-sms"}, check_templates=True)
            == rule
        )


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "empty"),
        ("- a\n- b\n", "is a mapping"),
        ("channels: {}\n", "needs 'rules:'"),
        ("rules: {}\n", "rules must be a list"),
        ("rules: [1]\n", "a rule must be a mapping"),
    ],
)
def test_file_shape_problems(text: str, needle: str) -> None:
    assert needle in str(one_problem(text))


def test_yaml_syntax_error_has_its_line() -> None:
    problem = one_problem("rules:\n  - name: a\n    method: [StartTicket\n    then: {}\n")
    assert problem.message.startswith("invalid YAML")
    assert problem.line is not None and problem.line >= 3


def test_anchors_and_aliases_are_refused() -> None:
    text = "rules:\n  - &x\n    name: a\n    method: StartTicket\n    then: {stop: true}\n  - *x\n"
    problem = one_problem(text)
    assert "anchors and aliases" in problem.message and problem.line == 2


def test_every_problem_is_reported_with_rule_and_line() -> None:
    text = """\
rules:
  - name: first
    method: StartTickets
    then:
      set: {departmentName: x}
  - name: second
    method: StartTicket
    priorty: 3
    when: "subject is matching('(')"
    then:
      fields:
        - name: F
          list: [a]
  - name: third
    method: GetUserDetails
    then:
      html: "{{ usr.name }}"
      message: "{{ departmentName | nosuchfilter }}"
  - name: first
    method: StartChat
    then: {stop: true}
"""
    found = problems(text)
    by_rule = {(p.rule, p.line): p.message for p in found}
    assert "unknown method 'StartTickets' (did you mean 'StartTicket'?)" in by_rule[("first", 3)]
    assert "unknown key 'priorty' (did you mean 'priority'?)" in by_rule[("second", 8)]
    assert "'fields' is not valid for StartTicket (only for GetCustomFieldOptions)" in by_rule[("second", 7)]
    third = [p for p in found if p.rule == "third"]
    assert {p.line for p in third} == {17, 18}
    assert any("unknown variable 'usr' (did you mean 'user'?)" in p.message for p in third)
    assert any("unknown filter 'nosuchfilter'" in p.message for p in third)
    assert any("already used by the rule on line 2" in p.message and p.line == 19 for p in found)
    # sorted by line, and the message names both
    assert [p.line for p in found] == sorted(p.line or 0 for p in found)
    assert "line 3, rule 'first'" in str(RulesFileError(found))


def test_invalid_regex_constant_is_found_at_import() -> None:
    text = "rules:\n  - name: r\n    method: StartTicket\n"
    problem = one_problem(text + "    when: \"subject is matching('(')\"\n    then: {stop: true}\n")
    assert "invalid regular expression '('" in problem.message
    assert (problem.rule, problem.line) == ("r", 4)


@pytest.mark.parametrize(
    ("then", "needle"),
    [
        ("{allow: true}", "allow: true has no effect"),
        ("{allow: 'no'}", "allow must be false"),
        ("{}", "then has no actions"),
        ("{set: {TicketCreation: 'FALSE'}}", "use allow: false instead"),
        ("{set: {CanStartChats: 'False'}}", "use allow_chats: false instead"),
        ("{set: {'a=b': x}}", "not a valid variable name"),
        ("{set: {cf_VIP: yes}}", "put the text in quotes"),
        ("{set: {cf_A: [1]}}", "must be text"),
        ("{set: {cf_a: x, CF_A: y}}", "given more than once"),
        ("{message: 42}", "message must be text"),
        ("{stop: 1}", "stop must be true or false"),
        ("{frobnicate: 1}", "unknown key 'frobnicate'"),
        ("{set: {cf_A: '{{ loginPassword }}'}}", "unknown variable 'loginPassword'"),
        ("{set: {cf_A: '{{ authPW }}'}}", "unknown variable 'authPW'"),
        ("{set: {cf_A: '{{ subject'}}", "then.set.cf_A"),
    ],
)
def test_action_problems(then: str, needle: str) -> None:
    text = f"rules:\n  - name: r\n    method: StartTicket\n    then: {then}\n"
    found = problems(text)
    assert any(needle in str(p) for p in found), found
    assert all(p.rule == "r" for p in found)


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ("[{list: [a]}]", "needs a 'name'"),
        ("[{name: F}]", "changes nothing"),
        ("[{name: F, list: a}]", "list must be a list"),
        ("[{name: F, list: [Yes]}]", "put the text in quotes"),
        ("[{name: F, required: 'yes'}]", "required must be true or false"),
        ("[{name: F, list: [a], list_from: 'user.x'}]", "either list or list_from"),
        ("[{name: F, colour: red, visible: true}]", "unknown key 'colour'"),
        ("[{name: F, visible: true}, {name: f, visible: false}]", "given more than once"),
        ("[{name: F, list_from: 'user.'}]", "then.fields.0.list_from"),
    ],
)
def test_field_problems(fields: str, needle: str) -> None:
    text = f"rules:\n  - name: r\n    method: GetCustomFieldOptions\n    then: {{fields: {fields}}}\n"
    assert any(needle in str(p) for p in problems(text))


def test_rule_problems_name_method_priority_when() -> None:
    text = """\
rules:
  - method: StartTicket
    then: {stop: true}
  - name: "bad name!"
    method: StartTicket
    then: {stop: true}
  - name: p
    method: [StartTicket, StartTicket]
    priority: high
    when: true
    then: {stop: true}
  - name: q
    method: ["*", StartChat]
    then: {stop: true}
  - name: s
    then: {stop: true}
  - name: t
    method: StartTicket
"""
    messages = [str(p) for p in problems(text)]
    assert any("line 2" in m and "the rule name must be a non-empty text" in m for m in messages)
    assert any("'bad name!' may only hold" in m for m in messages)
    assert any("listed twice" in m for m in messages)
    assert any("priority must be a whole number" in m for m in messages)
    assert any("leave 'when' out to always match" in m for m in messages)
    assert any("'*' already means every method" in m for m in messages)
    assert any("rule 's'" in m and "needs 'method'" in m for m in messages)
    assert any("rule 't'" in m and "needs 'then'" in m for m in messages)


def test_star_narrows_to_the_methods_every_action_supports() -> None:
    text = """\
rules:
  - name: deny-all
    method: "*"
    then: {allow: false}
  - name: fields-anywhere
    method: "*"
    then: {fields: [{name: F, visible: false}]}
  - name: stop-all
    method: "*"
    then: {stop: true}
"""
    deny, fields, stop = parse_rules(text).rules
    assert deny.methods == frozenset(Operation) - {Operation.NOTIFY_EVENT_FIRED}
    assert fields.methods == {Operation.GET_CUSTOM_FIELD_OPTIONS}
    assert stop.methods == frozenset(Operation)
    assert deny.method == "*"


def test_star_with_incompatible_actions_is_an_error() -> None:
    text = 'rules:\n  - name: r\n    method: "*"\n    then: {fields: [{name: F, visible: false}], html: x}\n'
    assert "no method supports all of: fields, html" in str(one_problem(text))


def test_actions_not_valid_for_explicit_methods() -> None:
    text = """\
rules:
  - name: r
    method: [StartTicket, NotifyEventFired]
    then: {html: x, allow_tickets: false}
"""
    messages = [p.message for p in problems(text)]
    assert "'allow_tickets' is not valid for StartTicket (only for GetCustomFieldOptions)" in messages
    assert "'allow_tickets' is not valid for NotifyEventFired (only for GetCustomFieldOptions)" in messages
    assert "'html' is not valid for StartTicket (only for GetUserDetails)" in messages


def test_notify_needs_a_known_channel() -> None:
    text = """\
rules:
  - name: r
    method: NotifyEventFired
    then:
      notify:
        - channel: smss
          to: x
"""
    problem = one_problem(text)
    assert "unknown channel 'smss'" in problem.message and problem.line == 6
    # A stored channel is fine (asked lazily), and its type's parameters are checked.
    asked: list[bool] = []

    def stored() -> dict[str, str]:
        asked.append(True)
        return {"smss": "webhook"}

    rules_file = parse_rules(text.replace("to: x", "body: {a: '{{ eventName }}'}"), stored_channels=stored)
    assert rules_file.rules[0].then.notify[0].channel == "smss" and asked


def test_notify_parameters_are_checked_against_the_channel_type() -> None:
    text = ISSUE_EXAMPLE.replace("campaign: tickets", "campain: tickets")
    assert any("campain" in p.message for p in problems(text))


def test_notify_entry_problems() -> None:
    text = """\
rules:
  - name: r
    method: NotifyEventFired
    then:
      notify:
        - to: x
        - 3
        - channel: hook
          body: {when: 2024-01-01, text: "{{ nope }}"}
channels:
  hook: {type: webhook, url: "https://example.org/hook"}
"""
    messages = [str(p) for p in problems(text)]
    assert any("needs a 'channel'" in m for m in messages)
    assert any("must be a mapping with a channel" in m for m in messages)
    assert any("then.notify.2.body.text: unknown variable 'nope'" in m and "line 9" in m for m in messages)


def test_yaml_dates_are_kept_as_text() -> None:
    text = """\
channels:
  hook: {type: webhook, url: "https://example.org/hook"}
rules:
  - name: r
    method: NotifyEventFired
    then:
      notify:
        - channel: hook
          body: {since: 2024-01-01}
"""
    [rule] = parse_rules(text).rules
    assert rule.then.notify[0].params["body"] == {"since": "2024-01-01"}


def test_channel_problems() -> None:
    text = """\
channels:
  sms: {base_url: x}
  mail: {type: carrier-pigeon}
  ok: {type: webhook, url: "https://example.org", enabled: maybe}
  "bad name!": {type: webhook}
  %s: {type: webhook, url: "https://example.org"}
rules: []
""" % ("c" * 101)
    messages = [str(p) for p in problems(text)]
    assert any("line 2" in m and "channel 'sms' needs a 'type'" in m for m in messages)
    assert any("line 3" in m and "unknown channel type 'carrier-pigeon'" in m for m in messages)
    assert any("line 4" in m and "enabled must be true or false" in m for m in messages)
    assert any("a channel name is longer than 100 characters" in m for m in messages)
    assert any("'bad name!' may only hold" in m for m in messages)
    assert any("a channel name is longer than 100 characters" in m for m in messages)


def test_duplicate_keys_are_problems() -> None:
    text = "rules:\n  - name: a\n    name: b\n    method: StartTicket\n    then: {stop: true}\n"
    problem = one_problem(text)
    assert "'name' is given more than once" in problem.message and problem.line == 3


def test_unreadable_and_non_utf8_files(tmp_path: Path) -> None:
    with pytest.raises(RulesFileError, match="cannot read"):
        load_rules_file(tmp_path / "missing.yaml")
    path = tmp_path / "latin1.yaml"
    path.write_bytes("rules: []\n# caf\xe9\n".encode("latin-1"))
    with pytest.raises(RulesFileError, match="not UTF-8"):
        load_rules_file(path)


def test_unicode_and_html_special_characters_survive() -> None:
    text = """\
rules:
  - name: ünïcode-rule
    method: StartTicket
    when: "subject is matching('Ünïcødé')"
    then:
      set: {"cf_Note ✓": "<b>&amp; \\"x\\" 'y' — {{ subject }}</b>"}
"""
    original = parse_rules(text)
    assert original.rules[0].then.set == (("cf_Note ✓", "<b>&amp; \"x\" 'y' — {{ subject }}</b>"),)
    assert parse_rules(dump_rules(original)) == original


SMS_STRING_PARAMS = """\
channels:
  sms: {type: uniphore-sms, base_url: "https://gointeract.io", account_id: "1", application_key: "${SMS_APP_KEY}"}
rules:
  - name: text
    method: NotifyEventFired
    then:
      notify:
        - channel: sms
          campaign: c
          to: "{{ args.phone }}"
          params: "ticketNumber={{ args.ticketNumber }}&lang=en"
"""


def test_sms_string_params_are_stored_as_one_template_per_value() -> None:
    rules_file = parse_rules(SMS_STRING_PARAMS)

    [notify] = rules_file.rules[0].then.notify
    assert notify.params["params"] == {"ticketNumber": "{{ args.ticketNumber }}", "lang": "en"}
    assert parse_rules(dump_rules(rules_file)) == rules_file


def test_sms_string_params_that_are_not_pairs_are_refused_with_a_pointer() -> None:
    text = SMS_STRING_PARAMS.replace("ticketNumber={{ args.ticketNumber }}&lang=en", "{{ args.all }}")
    with pytest.raises(RulesFileError) as info:
        parse_rules(text)
    [problem] = info.value.problems
    assert problem.line == 11 and problem.rule == "text"
    assert "write params as a mapping instead" in problem.message


def test_channel_references_are_checked_against_the_allowed_names() -> None:
    assert parse_rules(SMS_STRING_PARAMS, secret_vars=("SMS_*",)).channels
    with pytest.raises(RulesFileError) as info:
        parse_rules(SMS_STRING_PARAMS, secret_vars=("HOOK_*",))
    [problem] = info.value.problems
    assert "${SMS_APP_KEY} is not allowed by ST_PROVIDER_SECRET_VARS" in problem.message


def test_channel_warnings_name_the_channel_and_variable() -> None:
    rules_file = parse_rules(SMS_STRING_PARAMS)

    [warning] = channel_warnings(rules_file.channels, {})

    assert warning.line == 2
    assert "channel 'sms': environment variable SMS_APP_KEY is not set" in warning.message
    assert channel_warnings(rules_file.channels, {"SMS_APP_KEY": "k"}) == []


def test_retry_waits_with_integer_status_keys_are_accepted_and_stored_as_text() -> None:
    """What the channel parser accepts, the loader accepts (issue 10): ``{429: 60}`` as documented."""
    text = """\
channels:
  doc:
    type: smartcomm
    base_url: https://c.example.org
    token_url: https://c.example.org/t
    client_id: c
    client_secret: ${S}
    retry_waits: {429: 60, 503: 120, 500: 5}
    headers_unused: {1.5: x}
rules: []
"""
    with pytest.raises(RulesFileError) as caught:
        parse_rules(text)
    [problem] = caught.value.problems
    assert "setting 'headers_unused' must be text, a number" in problem.message and problem.line == 9
    [channel] = parse_rules(text.replace("    headers_unused: {1.5: x}\n", "")).channels
    assert channel.settings["retry_waits"] == {"429": 60, "503": 120, "500": 5}
