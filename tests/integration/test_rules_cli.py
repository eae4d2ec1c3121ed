"""`st-provider rules ...` as an admin runs it: real processes against real databases."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from provider.channels.policy import channel_policy
from provider.rules.loader import load_rules_file, parse_rules
from tests.support import REPO, base_env, run_cli

SAMPLE = REPO / "rules" / "sample-provider.yaml"

BROKEN = """\
rules:
  - name: ok
    method: StartTicket
    then: {set: {cf_A: a}}
  - name: typo
    method: StartTickt
    when: "subjet == 'x'"
    then: {set: {cf_B: b}}
  - name: wrong-action
    method: StartTicket
    then: {html: "<b>x</b>"}
"""


@pytest.mark.postgres
def test_import_and_test_on_postgresql(postgres_url: str) -> None:
    env = base_env(postgres_url)
    assert run_cli(["rules", "import", str(SAMPLE)], env).returncode == 0
    report = json.loads(
        run_cli(["rules", "test", "GetUserDetails", "username=MyUserName", "--json"], env).stdout
    )
    assert report["version"] == 1 and report["matched"] == ["account-number-for-myusername"]
    assert report["result"]["user_info_html"] == "Account Number: 000-000000-0000<br />Partner: Yes"


def test_import_list_test_disable_export_history(sqlite_url: str, tmp_path: Path) -> None:
    env = base_env(sqlite_url)
    imported = run_cli(["rules", "import", str(SAMPLE)], env)
    assert imported.returncode == 0, imported.stderr
    assert "rules: 12 created, 0 updated, 0 deleted, 0 unchanged" in imported.stdout
    assert "rule set version 1" in imported.stdout

    listed = json.loads(run_cli(["rules", "list", "--json"], env).stdout)
    assert listed["version"] == 1 and len(listed["rules"]) == 12
    assert listed["rules"][0]["name"] == "no-tickets-left"  # priority 5 comes first
    assert all(r["valid"] and r["enabled"] for r in listed["rules"])

    tested = run_cli(
        ["rules", "test", "startticket", "loginUsername=bob", "subject=URGENT: down", "--json"], env
    )
    assert tested.returncode == 0, tested.stderr
    report = json.loads(tested.stdout)
    assert [(t["rule"], t["outcome"]) for t in report["trace"]] == [
        ("no-tickets-left", "no match"),
        ("billing-fields-for-myusername", "no match"),
        ("reroute-urgent", "matched"),
        ("reroute-server-down", "no match"),
    ]
    assert report["trace"][1]["detail"] == "when is false: loginUsername|lower == 'myusername'"
    assert report["result"]["output"] == ["TicketCreation=TRUE", "departmentName=Critical Support"]

    disabled = run_cli(["rules", "disable", "reroute-urgent"], env)
    assert disabled.returncode == 0 and "rule set version 2" in disabled.stdout
    report = json.loads(run_cli(["rules", "test", "StartTicket", "subject=URGENT", "--json"], env).stdout)
    assert ("reroute-urgent", "disabled") in [(t["rule"], t["outcome"]) for t in report["trace"]]
    assert report["result"]["output"] == ["TicketCreation=TRUE"]

    out = tmp_path / "exported.yaml"
    exported = run_cli(["rules", "export", str(out)], env)
    assert exported.returncode == 0, exported.stderr
    exported_file = load_rules_file(out)
    assert [r.name for r in exported_file.rules if not r.enabled] == ["reroute-urgent"]
    assert run_cli(["rules", "enable", "reroute-urgent"], env).returncode == 0
    assert load_rules_file(SAMPLE) == parse_rules(run_cli(["rules", "export"], env).stdout)

    history = json.loads(run_cli(["rules", "history", "--rule", "reroute-urgent", "--json"], env).stdout)
    assert [(h["action"], h["version"]) for h in history] == [("enabled", 3), ("disabled", 2), ("created", 1)]
    assert history[1]["command"] == "st-provider rules disable reroute-urgent"
    assert "@" in history[1]["actor"]


def test_invalid_file_is_rejected_whole_with_every_problem(sqlite_url: str, tmp_path: Path) -> None:
    env = base_env(sqlite_url)
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN, encoding="utf-8")
    for command in (["rules", "validate", str(path)], ["rules", "import", str(path)]):
        result = run_cli(command, env)
        assert result.returncode == 1
        assert "3 problem(s)" in result.stderr
        assert (
            "line 6, rule 'typo': unknown method 'StartTickt' (did you mean 'StartTicket'?)" in result.stderr
        )
        assert (
            "line 7, rule 'typo': when: unknown variable 'subjet' (did you mean 'subject'?)" in result.stderr
        )
        assert "line 10, rule 'wrong-action': 'html' is not valid for StartTicket" in result.stderr
        assert "Traceback" not in result.stderr
    listed = json.loads(run_cli(["rules", "list", "--json"], env).stdout)
    assert listed == {"version": 0, "rules": [], "channels": []}


def test_validate_good_file_and_replace(sqlite_url: str, tmp_path: Path) -> None:
    env = base_env(sqlite_url)
    valid = run_cli(["rules", "validate", str(SAMPLE)], env)
    assert valid.returncode == 0 and "valid (12 rules, 0 channels)" in valid.stdout
    assert run_cli(["rules", "import", str(SAMPLE)], env).returncode == 0
    small = tmp_path / "small.yaml"
    small.write_text("rules:\n  - {name: only, method: StartChat, then: {allow: false}}\n", encoding="utf-8")
    replaced = run_cli(["rules", "import", str(small), "--replace"], env)
    assert replaced.returncode == 0
    assert "rules: 1 created, 0 updated, 12 deleted, 0 unchanged" in replaced.stdout
    report = json.loads(run_cli(["rules", "test", "StartChat", "--json"], env).stdout)
    assert report["result"]["output"] == ["ChatCreation=FALSE"]


def test_test_command_text_output_and_mistakes(sqlite_url: str) -> None:
    env = base_env(sqlite_url, ST_PROVIDER_AUTH="none")
    assert run_cli(["rules", "import", str(SAMPLE)], env).returncode == 0
    text = run_cli(
        ["rules", "test", "GetCustomFieldOptions", "loginUsername=bob", "departmentName=Sales Department"],
        env,
    )
    assert text.returncode == 0, text.stderr
    assert "MATCHED: allow_tickets, message" in text.stdout
    assert "CanStartTickets=False" in text.stdout and "Change Plan" in text.stdout
    assert "Message: You are not currently permitted to contact that department." in text.stdout

    for args, needle in [
        (["rules", "test", "Frobnicate"], "unknown operation 'Frobnicate'"),
        (["rules", "test", "StartTicket", "novalue"], "'novalue' is not NAME=VALUE"),
        (["rules", "test", "Authenticate", "loginPassword=hunter2"], "rules never see passwords"),
        (["rules", "test", "StartTicket", "--user", "ann"], "--user needs a directory"),
        (["rules", "disable", "nope"], "no rule is named 'nope'"),
    ]:
        result = run_cli(args, env)
        assert result.returncode in (1, 2), (args, result.stdout)
        assert needle in result.stderr, (args, result.stderr)
        assert "hunter2" not in result.stderr + result.stdout


def test_test_command_with_a_directory_user(sqlite_url: str, tmp_path: Path) -> None:
    env = base_env(sqlite_url, ST_PROVIDER_AUTH="local")
    added = run_cli(
        ["users", "add", "ann", "--group", "Customers", "--display-name", "Ann"],
        env,
        input_text="a-long-password-1\na-long-password-1\n",
    )
    assert added.returncode == 0, added.stderr
    path = tmp_path / "guests.yaml"
    path.write_text(
        """\
rules:
  - name: no-tickets-for-guests
    method: [GetCustomFieldOptions, StartTicket, StartChat, Authenticate]
    when: "'Customers' not in groups"
    then: {allow: false, message: You are not currently permitted to contact that department., stop: true}
  - name: greet
    method: Authenticate
    then: {message: "Welcome {{ user.display_name }}"}
""",
        encoding="utf-8",
    )
    assert run_cli(["rules", "import", str(path)], env).returncode == 0

    as_ann = json.loads(run_cli(["rules", "test", "StartTicket", "--user", "ann", "--json"], env).stdout)
    assert as_ann["user"] == "ann" and as_ann["result"]["output"] == ["TicketCreation=TRUE"]
    anonymous = json.loads(
        run_cli(["rules", "test", "StartTicket", "loginUsername=zed", "--json"], env).stdout
    )
    assert anonymous["user"] is None and anonymous["result"]["output"] == ["TicketCreation=FALSE"]
    # A login is evaluated as if the password were right; the user comes from loginUsername.
    login = json.loads(run_cli(["rules", "test", "Authenticate", "loginUsername=ann", "--json"], env).stdout)
    assert login["matched"] == ["greet"] and login["result"]["message"] == "Welcome Ann"
    assert login["result"]["output"][0] == "Authentication=OK"
    unknown = run_cli(["rules", "test", "StartTicket", "--user", "nobody"], env)
    assert unknown.returncode == 2 and "does not know an enabled user 'nobody'" in unknown.stderr


CHANNELS = """\
channels:
  sms:
    type: uniphore-sms
    base_url: https://gointeract.io
    account_id: "1"
    application_key: ${SMS_APP_KEY}
  hook:
    type: webhook
    url: https://hooks.example.org/x
    headers: {Authorization: "Bearer ${HOOK_TOKEN}"}
rules: []
"""


def test_unset_variables_are_warnings_naming_the_channel(sqlite_url: str, tmp_path: Path) -> None:
    path = tmp_path / "channels.yaml"
    path.write_text(CHANNELS, encoding="utf-8")
    env = {**base_env(sqlite_url), "HOOK_TOKEN": "set"}
    env.pop("SMS_APP_KEY", None)
    for command in (["rules", "validate", str(path)], ["rules", "import", str(path)]):
        result = run_cli(command, env)
        assert result.returncode == 0, result.stderr
        assert "warning: line 2: channel 'sms': environment variable SMS_APP_KEY is not set" in result.stderr
        assert "HOOK_TOKEN" not in result.stderr


@pytest.mark.parametrize(
    ("replace", "extra_env", "problem"),
    [
        (
            "https://hooks.example.org/x",
            {},
            "http://x/${ST_PROVIDER_WEB_SERVICE_PASSWORD}",
        ),
        ("Bearer ${HOOK_TOKEN}", {}, "Bearer ${ST_PROVIDER_DATABASE_URL}"),
        ("Bearer ${HOOK_TOKEN}", {"ST_PROVIDER_SECRET_VARS": "SMS_*"}, None),
    ],
)
def test_references_that_are_not_allowed_are_refused(
    sqlite_url: str, tmp_path: Path, replace: str, extra_env: dict[str, str], problem: str | None
) -> None:
    path = tmp_path / "channels.yaml"
    path.write_text(CHANNELS.replace(replace, problem or replace), encoding="utf-8")
    env = base_env(sqlite_url, SMS_APP_KEY="k", HOOK_TOKEN="t", **extra_env)
    for command in (["rules", "validate", str(path)], ["rules", "import", str(path)]):
        result = run_cli(command, env)
        assert result.returncode == 1
        assert "channel 'hook'" in result.stderr
        expected = (
            "not allowed by ST_PROVIDER_SECRET_VARS" if problem is None else "a setting of the provider"
        )
        assert expected in result.stderr
    listed = json.loads(run_cli(["rules", "list", "--json"], env).stdout)
    assert listed["channels"] == []


RETRY_WAITS = """\
channels:
  partner:
    type: smartcomm
    base_url: https://smartcomm.example.org
    token_url: https://smartcomm.example.org/token
    client_id: app
    client_secret: ${SMARTCOMM_SECRET}
    retry_waits: {429: 60, 503: 120, 500: 5}
rules: []
"""


def test_integer_status_keys_in_retry_waits_import(sqlite_url: str, tmp_path: Path) -> None:
    """``retry_waits`` as documented (integer keys) is accepted by the loader as by the channel parser."""
    path = tmp_path / "waits.yaml"
    path.write_text(RETRY_WAITS, encoding="utf-8")
    env = base_env(sqlite_url, SMARTCOMM_SECRET="s")
    for command in (["rules", "validate", str(path)], ["rules", "import", str(path)]):
        result = run_cli(command, env)
        assert result.returncode == 0, result.stderr
    again = run_cli(["rules", "import", str(path)], env)
    assert again.returncode == 0, again.stderr
    assert "channels: 0 created, 0 updated, 0 deleted, 1 unchanged" in again.stdout
    exported = parse_rules(run_cli(["rules", "export"], env).stdout)
    [channel] = exported.channels
    assert channel.settings["retry_waits"] == {"429": 60, "503": 120, "500": 5}
    assert channel_policy(channel.type, channel.settings).retry_waits == {429: 60.0, 503: 120.0, 500: 5.0}
