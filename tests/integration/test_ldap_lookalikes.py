"""Look-alike usernames and concurrent guesses against a real slapd (issue 9, items 2 and 6).

OpenLDAP's caseIgnoreMatch matches ``\uff41\uff4c\uff49\uff43\uff45`` (fullwidth), ``\uff41lice`` (mixed) and
``ⓐlice`` (enclosed) to ``uid=alice``. Every such spelling must share one throttle
counter, reach the rules as the same user, and come back as the directory's name.
"""

from __future__ import annotations

import logging

import pytest

from provider.db.session import Database
from provider.domain import Decision, Identity, Operation
from provider.rules.engine import RuleSet, compile_rules
from provider.rules.loader import parse_rules
from provider.variables import InputVariables
from tests.fixtures.slapd import USERS, SlapdServer
from tests.integration.test_ldap_auth import login, make_provider, user_binds
from tests.support import at_once

pytestmark = pytest.mark.slapd

LOOK_ALIKES = [
    "\uff41\uff4c\uff49\uff43\uff45",
    "\uff41lice",
    "ⓐlice",
    "\uff21\uff2c\uff29\uff23\uff25",
    "EXAMPLE\\\uff41\uff4c\uff49\uff43\uff45",
    "\uff41\uff4c\uff49\uff43\uff45@example.org",
]


class Recording:
    """A rule evaluator that allows everything and remembers the identities it saw."""

    def __init__(self) -> None:
        self.identities: list[Identity | None] = []

    def evaluate(
        self, operation: Operation, variables: InputVariables, identity: Identity | None
    ) -> Decision:
        self.identities.append(identity)
        return Decision()


@pytest.mark.parametrize("typed", LOOK_ALIKES)
def test_a_look_alike_signs_in_as_the_directory_name(slapd: SlapdServer, sqlite_url: str, typed: str) -> None:
    database = Database(sqlite_url)
    try:
        rules = Recording()
        result = login(make_provider(slapd, database, rules), typed, USERS["alice"].password)
    finally:
        database.dispose()
    assert result.output.get("Authentication") == "OK"
    [identity] = rules.identities
    assert identity is not None and identity.username == "alice"


def test_the_lockout_holds_for_every_look_alike(
    slapd: SlapdServer, database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    provider = make_provider(slapd, database, throttle_max_failures="3")
    for _ in range(3):
        assert login(provider, "alice", "not-her-password").output.get("Authentication") == "FAIL"
    binds = user_binds()
    for typed in LOOK_ALIKES:
        assert login(provider, typed, USERS["alice"].password).output.get("Authentication") == "FAIL"
    assert user_binds() == binds  # not one of them reached the directory
    refusals = [r.reason for r in caplog.records if getattr(r, "event", None) == "auth.fail"]
    assert refusals[-len(LOOK_ALIKES) :] == ["throttled"] * len(LOOK_ALIKES)


def deny_bob(condition: str) -> RuleSet:
    text = f"""\
rules:
  - name: no-bob
    method: Authenticate
    when: "{condition}"
    then: {{allow: false, message: "Bob may not sign in here"}}
"""
    return compile_rules(parse_rules(text).rules)


@pytest.mark.parametrize(
    ("condition", "typed"),
    [
        *(
            ("loginUsername == 'bob'", typed)
            for typed in ("bob", "\uff42\uff4f\uff42", "ⓑob", "\uff22\uff2f\uff22")
        ),
        # The directory's name also covers the forms with a domain.
        *(
            ("user.username == 'bob'", typed)
            for typed in (
                "\uff42\uff4f\uff42",
                "ⓑob",
                "EXAMPLE\\\uff42\uff4f\uff42",
                "\uff42\uff4f\uff42@example.org",
            )
        ),
    ],
)
def test_a_rule_denying_bob_denies_his_look_alikes(
    slapd: SlapdServer, sqlite_url: str, condition: str, typed: str
) -> None:
    database = Database(sqlite_url)
    try:
        provider = make_provider(slapd, database, deny_bob(condition))
        denied = login(provider, typed, USERS["bob"].password)
        allowed = login(provider, "alice", USERS["alice"].password)
    finally:
        database.dispose()
    assert (denied.output.get("Authentication"), denied.message) == ("FAIL", "Bob may not sign in here")
    assert allowed.output.get("Authentication") == "OK"


def test_concurrent_wrong_passwords_reach_the_directory_at_most_the_limit(
    slapd: SlapdServer, database: Database
) -> None:
    provider = make_provider(slapd, database, throttle_max_failures="5")
    binds = user_binds()
    answers: list[str | None] = []

    def guess(index: int) -> None:
        answer = login(provider, "alice", f"wrong-guess-{index}")
        answers.append(answer.output.get("Authentication") if answer.success else answer.message)

    errors = at_once(40, guess, join_timeout=60)
    assert errors == []
    assert answers == ["FAIL"] * 40
    assert user_binds() - binds <= 5
    assert login(provider, "alice", USERS["alice"].password).output.get("Authentication") == "FAIL"
