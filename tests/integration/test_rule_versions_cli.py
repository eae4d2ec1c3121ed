"""`st-provider rules versions / diff / rollback / import --dry-run`, the actor of a change,
and the unguarded-lookup warnings: real processes on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import socket
from pathlib import Path

from tests.support import base_env, run_cli

V1 = """\
rules:
  - name: route
    method: StartTicket
    then: {set: {departmentName: First Line}}
  - name: vip
    method: StartTicket
    when: "subject == 'vip'"
    then: {set: {departmentName: VIP Desk}}
"""

V2 = """\
rules:
  - name: route
    method: StartTicket
    then: {set: {departmentName: Second Line}}
"""


def _department(env: dict[str, str], *variables: str) -> str:
    result = run_cli(["rules", "test", "StartTicket", *variables, "--json"], env)
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)["result"]["output"]
    return dict(entry.split("=", 1) for entry in output).get("departmentName", "")


def _versions(env: dict[str, str]) -> dict[str, object]:
    result = run_cli(["rules", "versions", "--json"], env)
    assert result.returncode == 0, result.stderr
    payload: dict[str, object] = json.loads(result.stdout)
    return payload


def test_every_change_is_a_version_with_its_actor_and_rollback_restores_answers(
    database_url: str, tmp_path: Path
) -> None:
    env = base_env(database_url)
    v1, v2 = tmp_path / "v1.yaml", tmp_path / "v2.yaml"
    v1.write_text(V1, encoding="utf-8")
    v2.write_text(V2, encoding="utf-8")
    host = socket.gethostname()

    assert run_cli(["rules", "import", str(v1), "--actor", "Jane Admin"], env).returncode == 0
    assert _department(env) == "First Line"
    replaced = run_cli(["rules", "import", str(v2), "--replace"], {**env, "SUDO_USER": "alice"})
    assert replaced.returncode == 0, replaced.stderr
    assert _department(env, "subject=vip") == "Second Line"
    assert run_cli(["rules", "disable", "route", "--actor", "bob"], env).returncode == 0
    assert run_cli(["rules", "enable", "route", "--actor", "carol"], env).returncode == 0
    rolled = run_cli(["rules", "rollback", "1", "--actor", "dave"], env)
    assert rolled.returncode == 0, rolled.stderr
    assert "rolled back to version 1: rule set version 5" in rolled.stdout

    assert _department(env) == "First Line"
    assert _department(env, "subject=vip") == "VIP Desk"
    payload = _versions(env)
    assert payload["current"] == 5
    rows = payload["versions"]
    assert isinstance(rows, list)
    assert [(v["version"], v["action"], v["actor"]) for v in rows] == [
        (5, "rollback", "dave"),
        (4, "enable", "carol"),
        (3, "disable", "bob"),
        (2, "replace", f"alice@{host}"),
        (1, "import", "Jane Admin"),
    ]
    assert rows[0]["summary"].startswith("to version 1: ")
    assert rows[3]["summary"] == "rules: 1 updated, 1 deleted"
    # The audit names the same people, and the rollback's command line.
    history = json.loads(run_cli(["rules", "history", "--json"], env).stdout)
    assert {(h["version"], h["actor"]) for h in history} >= {
        (5, "dave"),
        (2, f"alice@{host}"),
        (1, "Jane Admin"),
    }
    assert {h["command"] for h in history if h["version"] == 5} == {
        "st-provider rules rollback 1 --actor dave"
    }
    # The content of version 5 is the content of version 1.
    same = run_cli(["rules", "diff", "1", "5"], env)
    assert same.returncode == 0 and same.stdout == "no differences between version 1 and version 5\n"


def test_diff_versions_and_a_file(database_url: str, tmp_path: Path) -> None:
    env = base_env(database_url)
    v1, v2 = tmp_path / "v1.yaml", tmp_path / "v2.yaml"
    v1.write_text(V1, encoding="utf-8")
    v2.write_text(V2, encoding="utf-8")
    assert run_cli(["rules", "import", str(v1)], env).returncode == 0
    first = run_cli(["rules", "diff"], env)  # version 0 (empty) against the current one
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("--- version 0\n+++ version 1 (current)\n")
    assert "+- name: vip\n" in first.stdout

    assert run_cli(["rules", "import", str(v2), "--replace"], env).returncode == 0
    default = run_cli(["rules", "diff"], env)
    assert default.stdout.startswith("--- version 1\n+++ version 2 (current)\n")
    lines = default.stdout.splitlines()
    assert "-    set: {departmentName: First Line}" not in lines  # block style, one value a line
    assert "-      departmentName: First Line" in lines
    assert "+      departmentName: Second Line" in lines
    assert "-- name: vip" in lines
    assert run_cli(["rules", "diff", "1", "2"], env).stdout == default.stdout.replace(
        "+++ version 2 (current)", "+++ version 2"
    )
    against_file = run_cli(["rules", "diff", "2", str(v1)], env)
    assert against_file.stdout.startswith(f"--- version 2\n+++ {v1}\n")
    assert "+- name: vip" in against_file.stdout.splitlines()
    missing = run_cli(["rules", "diff", "9"], env)
    assert missing.returncode == 1 and "rule set version 9 is not kept" in missing.stderr


def test_import_dry_run_shows_the_diff_and_stores_nothing(database_url: str, tmp_path: Path) -> None:
    env = base_env(database_url)
    v1, v2 = tmp_path / "v1.yaml", tmp_path / "v2.yaml"
    v1.write_text(V1, encoding="utf-8")
    v2.write_text(V2, encoding="utf-8")
    assert run_cli(["rules", "import", str(v1)], env).returncode == 0
    exported = run_cli(["rules", "export"], env).stdout

    dry = run_cli(["rules", "import", str(v2), "--replace", "--dry-run"], env)
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    assert lines[0] == f"dry run of {v2}: nothing was stored"
    assert lines[1:3] == ["--- version 1 (current)", f"+++ {v2}"]
    assert "+      departmentName: Second Line" in lines
    assert "  rules: 0 created, 1 updated, 1 deleted, 0 unchanged" in lines
    assert "  would be rule set version 2" in lines

    assert run_cli(["rules", "export"], env).stdout == exported
    payload = _versions(env)
    assert payload["current"] == 1 and len(payload["versions"]) == 1  # type: ignore[arg-type]
    history = json.loads(run_cli(["rules", "history", "--json"], env).stdout)
    assert {h["version"] for h in history} == {1}
    assert _department(env) == "First Line"


UNGUARDED = """\
rules:
  - name: guarded
    method: StartTicket
    when: "'Plan' in cf and cf['Plan'] == 'gold' or cf.get('X') == '1' or cf.Y is defined"
    then:
      set: {departmentName: "{{ args.who | default('') }}{% if user.mail is defined %}{{ user.mail }}{% endif %}"}
  - name: deny-plan-zero
    method: StartTicket
    when: "cf['Plan'] == '0'"
    then:
      allow: false
      message: "Not for {{ variables['brand'] }}"
"""


def test_unguarded_lookups_are_warnings_naming_rule_and_line(sqlite_url: str, tmp_path: Path) -> None:
    env = base_env(sqlite_url)
    path = tmp_path / "rules.yaml"
    path.write_text(UNGUARDED, encoding="utf-8")
    validated = run_cli(["rules", "validate", str(path)], env)
    assert validated.returncode == 0, validated.stderr
    warnings = [line for line in validated.stderr.splitlines() if line.startswith("warning: ")]
    assert warnings == [
        "warning: line 7, rule 'deny-plan-zero': when: cf['Plan'] is read without a guard; it raises when "
        "SmarterTrack does not send it (use .get(...), 'is defined', 'in' or '| default(...)')",
        "warning: line 7, rule 'deny-plan-zero': then.message: variables['brand'] is read without a guard; "
        "it raises when SmarterTrack does not send it (use .get(...), 'is defined', 'in' or '| default(...)')",
    ]
    imported = run_cli(["rules", "import", str(path)], env)
    assert imported.returncode == 0, imported.stderr
    assert [line for line in imported.stderr.splitlines() if line.startswith("warning: ")] == warnings
