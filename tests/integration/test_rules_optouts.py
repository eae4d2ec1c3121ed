"""The rules test ``opted_out``: the suppression list read from a rule, bounded and cached per call."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event

from provider.comms import optouts
from provider.comms.optouts import DatabaseLookup
from provider.db.session import Database
from provider.domain import Operation
from provider.rules.evaluator import StoredRules
from provider.rules.limits import RuleLimits
from provider.rules.loader import parse_rules
from provider.rules.store import RuleStore
from provider.variables import InputVariables

WHO = {"actor": "tester@host", "command": "test"}
RULES = """rules:
  - name: quiet
    method: StartTicket
    when: "args.phone is opted_out('sms') and (args.phone is opted_out('sms') or args.mail is opted_out)"
    then: {set: {departmentName: quiet}}
  - name: no-mail
    method: StartTicket
    when: "args.mail is opted_out('email')"
    then: {set: {subject: no-mail}}
"""


def evaluator(database: Database, lookup: Any = None, *, deadline_ms: int = 2000) -> StoredRules:
    store = RuleStore(database)
    store.import_rules(parse_rules(RULES), replace=True, **WHO)
    return StoredRules(
        store,
        refresh_seconds=60,
        limits=RuleLimits(deadline_ms=deadline_ms),
        optout_lookup=lookup if lookup is not None else DatabaseLookup(database),
    )


def matched(rules: StoredRules, phone: str, mail: str) -> list[str]:
    variables = InputVariables.parse([f"args_phone={phone}", f"args_mail={mail}"])
    decision = rules.evaluate(Operation.START_TICKET, variables, None)
    assert decision.rule_errors == []
    return list(decision.matched)


@contextmanager
def optout_queries(database: Database) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "optouts" in statement:
            seen.append(statement)

    event.listen(database.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(database.engine, "before_cursor_execute", record)


def test_rules_see_the_suppression_list_by_kind(database: Database) -> None:
    optouts.add(database, "+12125550100", kind="sms", **WHO)
    optouts.add(database, "ann@example.org", **WHO)  # everything, so e-mail too
    optouts.add(database, "bob@example.org", kind="sms", **WHO)  # not e-mail
    rules = evaluator(database)
    assert matched(rules, "+1 212-555-0100", "ANN@example.org") == ["quiet", "no-mail"]
    assert matched(rules, "+12125550199", "bob@example.org") == []
    assert matched(rules, "not a number", "") == []


def test_each_address_is_looked_up_once_per_call(database: Database) -> None:
    optouts.add(database, "+12125550100", kind="sms", **WHO)
    rules = evaluator(database)
    rules.rule_set()  # load the rules first: only the opt-out queries are counted
    with optout_queries(database) as seen:
        assert matched(rules, "+12125550100", "x@example.org") == ["quiet"]
    # phone/sms (asked twice, answered once) and mail/email: two lookups, not three
    assert len(seen) == 2
    with optout_queries(database) as seen:
        matched(rules, "+12125550100", "x@example.org")
    assert len(seen) == 2  # a new call asks again (an opt-out may have been added meanwhile)


class SlowList:
    """A lookup (the Protocol's in-tree implementation) that takes longer than any deadline allows."""

    def __init__(self) -> None:
        self.timeouts: list[float | None] = []

    def __call__(self, address: str, kind: str | None, timeout: float | None) -> bool:
        self.timeouts.append(timeout)
        raise TimeoutError("too slow")


def test_the_lookup_gets_the_time_left_and_a_timeout_stops_the_rule(database: Database) -> None:
    slow = SlowList()
    rules = evaluator(database, slow, deadline_ms=200)
    variables = InputVariables.parse(["args_phone=+12125550100", "args_mail=a@example.org"])
    decision = rules.evaluate(Operation.START_TICKET, variables, None)
    assert decision.matched == []
    assert [name for name, _ in decision.rule_errors] == ["quiet", "no-mail"]
    assert {error for _, error in decision.rule_errors} == {"RuleLimitExceeded"}
    assert slow.timeouts
    assert all(t is not None and 0 < t <= 0.2 for t in slow.timeouts)
