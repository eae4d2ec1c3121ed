"""Rules and channels in SQLite and PostgreSQL: import, replace, export, enable/disable, version, audit."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from provider.db.rules import ChannelRecord, RuleRecord
from provider.db.session import Database
from provider.errors import RuleNotFound, RulesFileError
from provider.rules.loader import dump_rules, load_rules_file, parse_rules
from provider.rules.store import RuleStore

REPO = Path(__file__).resolve().parents[2]
WHO = {"actor": "tester@host", "command": "st-provider rules import x.yaml"}

FIRST = """\
channels:
  hook:
    type: webhook
    url: https://example.org/hook
    secret: ${HOOK_SECRET}
rules:
  - {name: a, method: StartTicket, priority: 5, then: {set: {cf_A: a}}}
  - {name: b, method: StartTicket, priority: 5, then: {set: {cf_B: b}}}
  - name: n
    method: NotifyEventFired
    then:
      notify:
        - channel: hook
          body: {t: "{{ eventName }}"}
"""


@pytest.fixture
def store(database: Database) -> RuleStore:
    return RuleStore(database)


def test_import_stores_rules_and_channels_as_written(store: RuleStore, database: Database) -> None:
    assert store.version() == 0
    summary = store.import_rules(parse_rules(FIRST), replace=False, **WHO)
    assert summary.version == 1
    assert summary.count("rule", "created") == 3 and summary.count("channel", "created") == 1
    with database.session() as session:
        [channel] = session.scalars(select(ChannelRecord)).all()
        names = [r.name for r in session.scalars(select(RuleRecord).order_by(RuleRecord.position))]
    assert channel.settings == {"url": "https://example.org/hook", "secret": "${HOOK_SECRET}"}
    assert channel.type == "webhook" and channel.enabled
    assert channel.created_at.tzinfo is not None and channel.updated_at >= channel.created_at
    assert names == ["a", "b", "n"]
    assert store.export() == parse_rules(FIRST)


def test_reimport_of_the_same_file_changes_nothing(store: RuleStore) -> None:
    store.import_rules(parse_rules(FIRST), replace=False, **WHO)
    again = store.import_rules(parse_rules(FIRST), replace=False, **WHO)
    assert again.changes == () and again.version == 1
    assert (again.unchanged_rules, again.unchanged_channels) == (3, 1)
    assert store.import_rules(parse_rules(FIRST), replace=True, **WHO).changes == ()


def test_merge_import_updates_by_name_and_appends_new_rules(store: RuleStore) -> None:
    store.import_rules(parse_rules(FIRST), replace=False, **WHO)
    second = """\
rules:
  - {name: c, method: StartTicket, priority: 5, then: {set: {cf_C: c}}}
  - {name: a, method: StartTicket, priority: 5, then: {set: {cf_A: changed}}}
  - name: n2
    method: NotifyEventFired
    then: {notify: [{channel: hook, body: {x: y}}]}
"""
    summary = store.import_rules(
        parse_rules(second, stored_channels=store.channel_types), replace=False, **WHO
    )
    assert summary.version == 2
    assert {(c.subject, c.action) for c in summary.changes} == {
        ("c", "created"),
        ("a", "updated"),
        ("n2", "created"),
    }
    snapshot = store.snapshot()
    # a keeps its place; new rules go after the stored ones, in file order
    assert [r.name for r in snapshot.rules] == ["a", "b", "n", "c", "n2"]
    assert snapshot.rules[0].mapping["then"] == {"set": {"cf_A": "changed"}}
    assert [c.entry.name for c in snapshot.channels] == ["hook"]


def test_replace_makes_the_stored_set_exactly_the_file(store: RuleStore) -> None:
    store.import_rules(parse_rules(FIRST), replace=False, **WHO)
    replacement = """\
channels:
  mail: {type: email, host: smtp.example.org, port: 25, from: a@example.org}
rules:
  - {name: b, method: StartTicket, priority: 5, then: {set: {cf_B: b}}}
  - {name: z, method: StartTicket, priority: 5, then: {set: {cf_Z: z}}}
"""
    summary = store.import_rules(parse_rules(replacement), replace=True, **WHO)
    assert {(c.kind, c.subject, c.action) for c in summary.changes} == {
        ("rule", "a", "deleted"),
        ("rule", "n", "deleted"),
        ("rule", "b", "updated"),  # moved to position 0
        ("rule", "z", "created"),
        ("channel", "hook", "deleted"),
        ("channel", "mail", "created"),
    }
    assert store.export() == parse_rules(replacement)
    assert [r.position for r in store.snapshot().rules] == [0, 1]


def test_replace_cannot_keep_a_notify_on_a_deleted_channel(store: RuleStore) -> None:
    store.import_rules(parse_rules(FIRST), replace=False, **WHO)
    text = (
        "rules:\n  - name: n\n    method: NotifyEventFired\n    then: {notify: [{channel: hook, body: {}}]}\n"
    )
    rules_file = parse_rules(text, stored_channels=store.channel_types)  # valid as a merge
    with pytest.raises(RulesFileError) as info:
        store.import_rules(rules_file, replace=True, **WHO)
    assert "unknown channel 'hook'" in str(info.value)
    assert store.version() == 1 and len(store.snapshot().rules) == 3  # nothing written


def test_enable_disable_bump_the_version_and_are_audited(store: RuleStore) -> None:
    store.import_rules(parse_rules(FIRST), replace=False, **WHO)
    assert store.set_enabled("a", False, actor="ops@host", command="st-provider rules disable a") == (2, True)
    assert store.set_enabled("a", False, actor="ops@host", command="st-provider rules disable a") == (
        2,
        False,
    )
    snapshot = store.snapshot()
    assert not snapshot.rules[0].enabled and snapshot.rules[0].rule is not None
    assert snapshot.rules[0].rule.enabled is False
    assert store.export().rules[0].enabled is False
    assert store.set_enabled("a", True, actor="ops@host", command="st-provider rules enable a") == (3, True)
    [enable, disable, *imports] = store.history()
    assert (enable.action, enable.subject, enable.version, enable.actor) == ("enabled", "a", 3, "ops@host")
    assert (disable.before, disable.after, disable.command) == (
        {"enabled": True},
        {"enabled": False},
        "st-provider rules disable a",
    )
    assert {e.subject for e in imports} == {"a", "b", "n", "hook"}
    assert all(e.version == 1 and e.action == "created" and e.before is None for e in imports)
    [only] = store.history(subject="hook")
    assert only.kind == "channel" and only.after["settings"]["secret"] == "${HOOK_SECRET}"


def test_unknown_rule_name_is_a_clear_error(store: RuleStore) -> None:
    store.import_rules(parse_rules(FIRST), replace=False, **WHO)
    with pytest.raises(RuleNotFound, match="no rule is named 'bb' \\(did you mean 'b'\\?\\)"):
        store.set_enabled("bb", False, **WHO)
    assert store.version() == 1


def test_update_records_before_and_after(store: RuleStore) -> None:
    store.import_rules(parse_rules(FIRST), replace=False, **WHO)
    store.import_rules(parse_rules(FIRST.replace("cf_B: b", "cf_B: bee")), replace=False, **WHO)
    [update] = store.history(limit=1)
    assert update.action == "updated" and update.subject == "b" and update.version == 2
    assert update.before["then"] == {"set": {"cf_B": "b"}}
    assert update.after["then"] == {"set": {"cf_B": "bee"}}


def test_sample_provider_round_trips_through_the_database(store: RuleStore, tmp_path: Path) -> None:
    original = load_rules_file(REPO / "rules" / "sample-provider.yaml")
    store.import_rules(original, replace=True, **WHO)
    exported = dump_rules(store.export())
    assert parse_rules(exported) == original
    path = tmp_path / "exported.yaml"
    path.write_text(exported, encoding="utf-8")
    assert store.import_rules(load_rules_file(path), replace=True, **WHO).changes == ()


def test_unicode_survives_storage(store: RuleStore) -> None:
    text = (
        "rules:\n  - name: ünï\n    method: GetUserDetails\n"
        '    then: {html: "<b>Ünïcødé ✓ {{ username }}</b> &amp;"}\n'
    )
    store.import_rules(parse_rules(text), replace=False, **WHO)
    assert store.export() == parse_rules(text)


def test_on_error_is_stored_and_exported(store: RuleStore, database: Database) -> None:
    text = """\
rules:
  - {name: strict, method: StartTicket, when: "cf['Tier'] != 'vip'", then: {allow: false}}
  - {name: lenient, method: StartTicket, when: "cf['Tier'] != 'vip'", on_error: skip, then: {allow: false}}
"""
    store.import_rules(parse_rules(text), replace=True, **WHO)
    with database.session() as session:
        stored = {r.name: r.on_error for r in session.scalars(select(RuleRecord))}
    assert stored == {"strict": None, "lenient": "skip"}
    exported = store.export()
    assert exported == parse_rules(text)
    assert [r.on_error for r in parse_rules(dump_rules(exported)).rules] == [None, "skip"]
    # Changing only on_error is an update.
    summary = store.import_rules(parse_rules(text.replace("on_error: skip, ", "")), replace=True, **WHO)
    assert summary.count("rule", "updated") == 1
