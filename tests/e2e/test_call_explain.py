"""`st-provider call` against a real gunicorn server: a refused login exits 1, and
`--explain` (same settings, same database) says why (issue 9, item 15)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from provider.auth.local import LocalUsers, ScryptHasher
from provider.db.session import Database
from provider.rules.loader import parse_rules
from provider.rules.store import RuleStore
from tests.support import base_env, run_cli, serve

pytestmark = pytest.mark.e2e

PASSWORD = "Zoës-passwort-1"
RULES = """\
rules:
  - name: no-bob
    method: Authenticate
    when: "loginUsername == 'bob'"
    then: {allow: false, message: "Bob may not sign in here"}
"""
UTC_TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


def prepare(database_url: str) -> None:
    """Two local users and a rule denying bob, written straight to the database."""
    database = Database(database_url)
    try:
        users = LocalUsers(database, ScryptHasher(log_n=10))
        for name in ("zoe", "bob"):
            users.add(name, PASSWORD)
        RuleStore(database).import_rules(parse_rules(RULES), replace=True, actor="test", command="test")
    finally:
        database.dispose()


def test_call_exits_1_on_a_refused_login_and_explains_it(sqlite_url: str, tmp_path: Path) -> None:
    env = base_env(sqlite_url, ST_PROVIDER_AUTH="local", ST_PROVIDER_THROTTLE_MAX_FAILURES="3")
    prepare(sqlite_url)
    with serve(env, tmp_path / "server.log", workers=1) as server:

        def call(*args: str) -> tuple[int, list[str]]:
            result = run_cli(["call", *args, "--url", server.endpoint], env)
            assert "Traceback" not in result.stderr, result.stderr
            return result.returncode, result.stdout.splitlines()

        code, lines = call("Authenticate", "loginUsername=zoe", "loginPassword=wrong-password")
        assert code == 1 and "  Authentication=FAIL" in lines
        assert any("--explain" in line for line in lines)

        code, lines = call("Authenticate", "loginUsername=ZOE", "loginPassword=wrong-password", "--explain")
        assert code == 1
        assert any(re.fullmatch(rf"reason: bad_password \(.*\), recorded {UTC_TIME}; .*", ln) for ln in lines)

        # The third failure reaches the limit: then the lock is the reason, even for the right password.
        assert call("Authenticate", "loginUsername=zoe", "loginPassword=wrong-password")[0] == 1
        code, lines = call("Authenticate", "loginUsername=zoe", f"loginPassword={PASSWORD}", "--explain")
        assert code == 1
        assert any(re.match(rf"reason: throttled: .* locked until {UTC_TIME} ", ln) for ln in lines)

        code, lines = call(
            "Authenticate", "loginUsername=\uff42\uff4f\uff42", f"loginPassword={PASSWORD}", "--explain"
        )
        assert code == 1
        assert lines[1] == "Message: Bob may not sign in here"
        assert any(ln.startswith("reason: denied by rule no-bob") for ln in lines)

    listed = run_cli(["users", "list"], env)
    assert listed.returncode == 0, listed.stderr
    rows = {line.split("\t")[0]: line.split("\t")[1] for line in listed.stdout.splitlines()[1:]}
    assert rows["bob"] == "enabled"
    assert re.fullmatch(rf"enabled, locked until {UTC_TIME} \(failed logins\)", rows["zoe"])
