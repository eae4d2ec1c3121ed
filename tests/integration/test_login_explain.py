"""`st-provider call --explain`'s reading of the provider's database (issue 9, item 15)."""

from __future__ import annotations

import contextlib
import re

from provider.auth import build_authenticator
from provider.auth.explain import explain_login
from provider.auth.local import LocalUsers, ScryptHasher
from provider.db.session import Database
from provider.domain import Operation
from provider.errors import AuthenticationFailed
from provider.rules.loader import parse_rules
from provider.rules.store import RuleStore
from provider.settings import Settings
from provider.variables import InputVariables

PASSWORD = "local-password-1"
RULES = """\
rules:
  - {name: no-bob, method: Authenticate, when: "loginUsername == 'bob'", then: {allow: false, message: 'Not here'}}
"""


def explain(settings: Settings, *entries: str, op: Operation = Operation.AUTHENTICATE) -> list[str]:
    return explain_login(settings, op, InputVariables.parse(entries))


def test_each_recorded_reason_is_explained(database: Database) -> None:
    settings = Settings.from_mapping(
        {
            "web_service_password": "p" * 20,
            "auth": "local",
            "database_url": database.url,
            "throttle_max_failures": "2",
        }
    )
    users = LocalUsers(database, ScryptHasher(log_n=10))
    users.add("ann", PASSWORD)
    users.add("bob", PASSWORD)
    RuleStore(database).import_rules(parse_rules(RULES), replace=True, actor="t", command="t")
    authenticator = build_authenticator(settings, database)
    assert authenticator is not None

    assert explain(settings, "loginUsername=ann") == [
        "no refused password is recorded for 'ann'",
        "the user 'ann' exists and the rules allow the login: if it still fails, the password was "
        "refused without being counted (blank), or another database is in use",
    ]
    assert explain(settings, "loginUsername=\uff42\uff4f\uff42")[-1].startswith(
        "reason: denied by rule no-bob"
    )
    assert explain(settings, "loginUsername=nobody", op=Operation.GET_SIGN_IN_COOKIE_INFO)[-1] == (
        "reason: the directory (or the local users) has no enabled user 'nobody'"
    )

    for _ in range(2):
        with contextlib.suppress(AuthenticationFailed):
            authenticator.authenticate("ANN", "wrong-password")
    lines = explain(settings, "loginUsername=\uff41nn")
    assert re.fullmatch(r"reason: throttled: .* locked until \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ .*", lines[0])
    assert lines[1].startswith("earlier refusal: bad_password (the password was wrong), recorded ")

    none = Settings.from_mapping(
        {"web_service_password": "p" * 20, "auth": "none", "database_url": database.url}
    )
    assert explain(none, "loginUsername=ann") == ["reason: ST_PROVIDER_AUTH is none: every login fails"]
    assert explain(settings, "loginPassword=x")[0].startswith("reason: no loginUsername")
