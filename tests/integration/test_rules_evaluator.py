"""The serving evaluator: cached compiled rules, cheap version checks, reload on change, outages."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import event

from provider.calls import Provider
from provider.db.migrate import upgrade
from provider.db.session import Database
from provider.domain import CallRequest, CallResult, Operation
from provider.errors import StorageError
from provider.rules.evaluator import StoredRules, build_evaluator
from provider.rules.loader import load_rules_file, parse_rules
from provider.rules.store import RuleStore
from provider.settings import Secret, Settings
from provider.variables import InputVariables

REPO = Path(__file__).resolve().parents[2]
WHO = {"actor": "tester@host", "command": "test"}
PW = "rules-evaluator-password"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@contextmanager
def count_statements(database: Database) -> Iterator[list[str]]:
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.strip().upper() != "BEGIN":  # SQLite's explicit transaction start
            statements.append(statement)

    event.listen(database.engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(database.engine, "before_cursor_execute", record)


def reloads() -> float:
    return REGISTRY.get_sample_value("st_provider_rules_reloads_total") or 0.0


def variables(*entries: str) -> InputVariables:
    return InputVariables.parse(entries)


RULE = "rules:\n  - {name: r, method: StartTicket, then: {set: {departmentName: '%s'}}}\n"


def test_changes_are_seen_after_the_refresh_interval_with_one_small_query(database: Database) -> None:
    store = RuleStore(database)
    store.import_rules(parse_rules(RULE % "first"), replace=True, **WHO)
    clock = Clock()
    evaluator = StoredRules(store, refresh_seconds=2.0, clock=clock)
    before = reloads()
    assert evaluator.evaluate(Operation.START_TICKET, variables(), None).variables == [
        ("departmentName", "first")
    ]
    assert reloads() == before + 1

    store.import_rules(parse_rules(RULE % "second"), replace=True, **WHO)
    with count_statements(database) as statements:
        clock.now += 1.9  # within the interval: no database access at all
        assert evaluator.evaluate(Operation.START_TICKET, variables(), None).variables[0][1] == "first"
    assert statements == []

    clock.now += 0.2
    with count_statements(database) as statements:
        assert evaluator.evaluate(Operation.START_TICKET, variables(), None).variables[0][1] == "second"
    assert "rule_set_version" in statements[0] and len(statements) > 1  # version, then the reload
    assert reloads() == before + 2

    clock.now += 2.5  # unchanged: exactly one tiny query, no reload
    with count_statements(database) as statements:
        evaluator.evaluate(Operation.START_TICKET, variables(), None)
    assert len(statements) == 1 and "rule_set_version" in statements[0]
    assert reloads() == before + 2


def test_enable_disable_reach_the_evaluator(database: Database) -> None:
    store = RuleStore(database)
    store.import_rules(parse_rules(RULE % "x"), replace=True, **WHO)
    clock = Clock()
    evaluator = StoredRules(store, refresh_seconds=1.0, clock=clock)
    assert evaluator.evaluate(Operation.START_TICKET, variables(), None).matched == ["r"]
    store.set_enabled("r", False, **WHO)
    clock.now += 1.0
    assert evaluator.evaluate(Operation.START_TICKET, variables(), None).matched == []


def test_an_outage_after_loading_keeps_the_cached_rules(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "rules.db"
    url = f"sqlite:///{path}"
    upgrade(url)
    database = Database(url)
    try:
        store = RuleStore(database)
        store.import_rules(parse_rules(RULE % "cached"), replace=True, **WHO)
        clock = Clock()
        evaluator = StoredRules(store, refresh_seconds=1.0, clock=clock)
        evaluator.evaluate(Operation.START_TICKET, variables(), None)
        database.dispose()
        path.unlink()  # the tables are gone: every query fails
        clock.now += 5
        caplog.clear()  # only what the failed refresh logs
        with caplog.at_level(logging.WARNING, logger="provider.rules"):
            decision = evaluator.evaluate(Operation.START_TICKET, variables(), None)
        assert decision.variables == [("departmentName", "cached")]
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert [r.event for r in warnings if getattr(r, "event", "").startswith("rules.")] == [
            "rules.refresh_failed"
        ]
    finally:
        database.dispose()


def test_the_first_load_failing_fails_the_call(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'unmigrated.db'}")
    try:
        evaluator = StoredRules(RuleStore(database), refresh_seconds=1.0)
        with pytest.raises(StorageError):
            evaluator.evaluate(Operation.START_TICKET, variables(), None)
    finally:
        database.dispose()


def call(provider: Provider, op: Operation, *entries: str) -> CallResult:
    return provider.call(CallRequest(op, InputVariables.parse([f"authPW={PW}", *entries])))


def test_sample_provider_behaviours_through_the_call_layer(database: Database) -> None:
    RuleStore(database).import_rules(
        load_rules_file(REPO / "rules" / "sample-provider.yaml"), replace=True, **WHO
    )
    settings = Settings.from_mapping({"web_service_password": PW})
    provider = Provider(Secret(PW), rules=build_evaluator(settings, database))

    # Allow tickets/chats to only certain customers
    known = call(
        provider, Operation.GET_CUSTOM_FIELD_OPTIONS, "loginUsername=myusername", "departmentName=Billing"
    )
    assert known.output.to_list()[:2] == ["CanStartTickets=True", "CanStartChats=True"]
    sales = call(
        provider, Operation.GET_CUSTOM_FIELD_OPTIONS, "loginUsername=bob", "departmentName=Sales Department"
    )
    assert sales.output.to_list() == ["CanStartTickets=False", "CanStartChats=True"]
    assert sales.message == "You are not currently permitted to contact that department."
    other = call(provider, Operation.GET_CUSTOM_FIELD_OPTIONS, "loginUsername=bob", "departmentName=Billing")
    assert other.output.to_list() == ["CanStartTickets=False", "CanStartChats=False"]

    # Account drop-down on the first step of the support department, then issue types
    support = call(
        provider,
        Operation.GET_CUSTOM_FIELD_OPTIONS,
        "loginUsername=myusername",
        "departmentName=Support Department",
        "location=PRE",
    )
    account, issue = support.custom_fields
    assert (account.name, account.list_options, account.change_required, account.new_required_value) == (
        "Account",
        ("abc.com", "def.com"),
        True,
        True,
    )
    assert not account.change_visible and not account.display_with_information_lookup
    assert issue.name == "Type of Issue" and issue.list_options[0] == "Web site issues"
    assert len(issue.list_options) == 6 and issue.new_required_value and issue.new_visible_value
    regular = call(
        provider,
        Operation.GET_CUSTOM_FIELD_OPTIONS,
        "loginUsername=myusername",
        "departmentName=Support Department",
    )
    assert [f.name for f in regular.custom_fields] == ["Type of Issue"]
    [sales_issue] = sales.custom_fields
    assert sales_issue.list_options == (
        "Change Plan",
        "Help with order",
        "Questions about plans",
        "Questions about features",
        "Help finding a product",
    )
    [hidden] = other.custom_fields
    assert hidden.change_list_options and hidden.list_options == ()
    assert (
        hidden.change_required,
        hidden.new_required_value,
        hidden.change_visible,
        hidden.new_visible_value,
    ) == (
        True,
        False,
        True,
        False,
    )

    # Set the customer's custom fields; reroute tickets
    ticket = call(provider, Operation.START_TICKET, "loginUsername=MyUserName", "subject=This is URGENT")
    assert ticket.output.to_list() == [
        "TicketCreation=TRUE",
        "cf_Billing ID=4126",
        "cf_Plan Type=ASP.NET Semi-dedicated",
        "departmentName=Critical Support",
    ]
    down = call(
        provider, Operation.START_TICKET, "loginUsername=bob", "subject=urgent", "cf_Issue Type=Server Down"
    )
    assert down.output.to_list() == ["TicketCreation=TRUE", "departmentName=Server Operations Department"]
    chat = call(provider, Operation.START_CHAT, "loginUsername=myusername")
    assert chat.output.to_list() == [
        "ChatCreation=TRUE",
        "cf_Billing ID=4126",
        "cf_Plan Type=ASP.NET Semi-dedicated",
    ]

    # No more tickets / chats
    empty = call(provider, Operation.START_TICKET, "loginUsername=bob", "cf_Tickets Remaining=0")
    assert empty.output.to_list() == ["TicketCreation=FALSE"]
    assert empty.message == "There are no more tickets in your account."
    no_chat = call(provider, Operation.START_CHAT, "loginUsername=bob", "cf_Chats Remaining= 0 ")
    assert (no_chat.output.to_list(), no_chat.message) == (
        ["ChatCreation=FALSE"],
        "There are no more chats in your account.",
    )

    # User information HTML
    info = call(provider, Operation.GET_USER_DETAILS, "username=myusername", "ticketNumber=1")
    assert info.user_info_html == "Account Number: 000-000000-0000<br />Partner: Yes"
    assert call(provider, Operation.GET_USER_DETAILS, "username=bob").user_info_html is None


def test_threads_evaluate_while_the_rules_change(database: Database) -> None:
    store = RuleStore(database)
    store.import_rules(parse_rules(RULE % "0"), replace=True, **WHO)
    evaluator = StoredRules(store, refresh_seconds=0.001)
    seen: list[str] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def work() -> None:
        try:
            while not stop.is_set():
                seen.append(evaluator.evaluate(Operation.START_TICKET, variables(), None).variables[0][1])
        except BaseException as exc:  # collected and re-raised by the test
            failures.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        for n in range(1, 6):
            store.import_rules(parse_rules(RULE % n), replace=True, **WHO)
            time.sleep(0.05)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert not failures
    assert set(seen) <= {str(n) for n in range(6)} and len(seen) > 20
    time.sleep(0.01)
    assert evaluator.evaluate(Operation.START_TICKET, variables(), None).variables == [
        ("departmentName", "5")
    ]
