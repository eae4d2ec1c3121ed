"""Pending journal entries: the app hands the writer a call's raw values and the writer thread
builds the entry. Secrets handed over that way are removed before anything is stored and are not
kept after the flush; the cheaper per-call bookkeeping around the journal measures and logs the
same as before."""

from __future__ import annotations

import gc
import logging
import time
import uuid
import weakref
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select

from provider.app import build_application, new_request_id
from provider.calls import Provider
from provider.db.journal import CallJournalRecord
from provider.db.migrate import upgrade
from provider.db.session import Database
from provider.domain import CallRequest, CallResult, CallTrace, Decision, JournalEntry, Operation
from provider.journal.entry import PendingCall, journal_entry
from provider.journal.writer import JournalWriter
from provider.settings import Secret, Settings
from provider.variables import InputVariables, OutputVariables
from tests.fixtures.server import AUTH, soap_request, wsgi_call
from tests.support import WEB_SERVICE_PASSWORD

SECRETS = ("service-secret-8c1f", "login-secret-77aa", "custom-password-d3e9", "partner-token-51b0")


def _request() -> CallRequest:
    pairs = [
        ("authPW", SECRETS[0]),
        ("loginUsername", "ann"),
        ("LoginPassword", SECRETS[1]),
        ("cf_Password2", SECRETS[2]),
        ("args_jpToken", SECRETS[3]),
        ("subject", "Printer on fire"),
    ]
    return CallRequest(Operation.START_TICKET, InputVariables(pairs), client_address="10.1.2.3")


def _result() -> CallResult:
    output = OutputVariables([("TicketCreation", "TRUE"), ("apiToken", SECRETS[3])])
    return CallResult(success=True, output=output, trace=CallTrace(decision=Decision(matched=["tier"])))


def _pending(request: CallRequest | None, result: CallResult | None, *, denied: bool = False) -> PendingCall:
    return PendingCall(
        time.time(), "StartTicket", "success", None, denied, request, result, "req-1", "10.1.2.3", 0.0042
    )


def _stored(database: Database) -> list[CallJournalRecord]:
    with database.session() as session:
        return list(session.scalars(select(CallJournalRecord).order_by(CallJournalRecord.id)))


@pytest.fixture
def database(tmp_path: Path) -> Database:
    url = f"sqlite:///{tmp_path / 'provider.db'}"
    upgrade(url)
    return Database(url)


def test_a_pending_call_builds_the_same_entry_as_journal_entry() -> None:
    request, result = _request(), _result()
    pending = _pending(request, result)
    built = pending.build()
    direct = journal_entry(
        at=built.at,
        operation="StartTicket",
        transport_outcome="success",
        fault=None,
        permission_denied=False,
        request=request,
        result=result,
        request_id="req-1",
        client="10.1.2.3",
        duration_ms=4.2,
    )
    assert built == direct
    assert built.at.tzinfo is UTC and abs((datetime.now(UTC) - built.at).total_seconds()) < 60
    assert built.variables == (
        ("loginUsername", "ann"),
        ("cf_Password2", "[redacted]"),
        ("args_jpToken", "[redacted]"),
        ("subject", "Printer on fire"),
    )
    assert built.answer is not None and ["apiToken", "[redacted]"] in built.answer["output"]
    # a pending call never shows its secrets, even in a traceback or a log line
    assert not any(secret in repr(pending) or secret in str(pending) for secret in SECRETS)


def test_secrets_handed_over_lazily_are_redacted_before_storage_and_not_kept(database: Database) -> None:
    writer = JournalWriter(database, flush_seconds=3600)

    def hand_over() -> tuple[weakref.ref[CallRequest], weakref.ref[CallResult]]:
        request, result = _request(), _result()
        writer.record(_pending(request, result))
        writer.record(_pending(_request(), None, denied=True))
        return weakref.ref(request), weakref.ref(result)

    request_ref, result_ref = hand_over()
    gc.collect()
    assert request_ref() is not None  # queued: held until the writer takes it
    assert _stored(database) == []  # nothing stored before the flush
    assert writer.flush() == 2
    gc.collect()
    assert request_ref() is None and result_ref() is None  # the raw call is gone after the flush
    ok, refused = _stored(database)
    assert (ok.operation, ok.outcome, ok.username, ok.matched) == ("StartTicket", "ok", "ann", ["tier"])
    assert ["cf_Password2", "[redacted]"] in ok.variables and ["subject", "Printer on fire"] in ok.variables
    assert refused.outcome == "permission_denied"
    assert refused.variables == [[name, "[not stored]"] for name in ("loginUsername", "cf_Password2")] + [
        [name, "[not stored]"] for name in ("args_jpToken", "subject")
    ]
    with database.engine.connect() as connection:  # the raw stored text, every column
        rows = connection.exec_driver_sql("SELECT * FROM call_journal").fetchall()
    text = repr(rows)
    assert not any(secret in text for secret in SECRETS)
    assert "authPW" not in text and "LoginPassword" not in text
    writer.close()
    database.dispose()


class _Unbuildable:
    """A pending entry whose building fails (the writer must drop it alone, counted and logged)."""

    def build(self) -> JournalEntry:
        raise ValueError("cannot build this entry")


def test_an_entry_that_cannot_be_built_is_dropped_alone(
    database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    before = REGISTRY.get_sample_value("st_provider_journal_dropped_total", {"reason": "error"}) or 0.0
    writer = JournalWriter(database, flush_seconds=3600)
    writer.record(_pending(_request(), _result()))
    writer.record(_Unbuildable())
    writer.record(
        JournalEntry(
            at=datetime.now(UTC),
            operation="StartChat",
            request_id="r2",
            client=None,
            duration_ms=1.0,
            outcome="ok",
        )
    )
    with caplog.at_level(logging.ERROR, logger="provider.journal"):
        assert writer.flush() == 2
    after = REGISTRY.get_sample_value("st_provider_journal_dropped_total", {"reason": "error"}) or 0.0
    assert after - before == 1
    assert [getattr(r, "event", None) for r in caplog.records] == ["journal.entry_failed"]
    assert [row.operation for row in _stored(database)] == ["StartTicket", "StartChat"]
    writer.close()
    database.dispose()


def test_request_ids_are_version_4_uuids() -> None:
    ids = {new_request_id() for _ in range(200)}
    assert len(ids) == 200
    for request_id in ids:
        parsed = uuid.UUID(hex=request_id)
        assert (parsed.hex, parsed.version, parsed.variant) == (request_id, 4, uuid.RFC_4122)


def _calls(operation: str, outcome: str) -> float:
    labels = {"operation": operation, "outcome": outcome}
    return REGISTRY.get_sample_value("st_provider_soap_calls_total", labels) or 0.0


def _latency_count(operation: str) -> float:
    labels = {"operation": operation}
    return REGISTRY.get_sample_value("st_provider_soap_call_seconds_count", labels) or 0.0


def test_calls_are_counted_and_logged_alike_with_the_log_line_on_or_off(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings.from_mapping(
        {"web_service_password": WEB_SERVICE_PASSWORD, "database_url": f"sqlite:///{tmp_path / 'unused.db'}"}
    )
    app = build_application(settings, provider=Provider(Secret(WEB_SERVICE_PASSWORD)))
    body, headers = soap_request(Operation.START_CHAT, [AUTH])
    calls, latency = _calls("StartChat", "success"), _latency_count("StartChat")
    caplog.set_level(logging.WARNING, logger="provider.app")  # the soap.call line (INFO) is off
    wsgi_call(app, body=body, headers=headers)
    assert not [r for r in caplog.records if getattr(r, "event", None) == "soap.call"]
    caplog.set_level(logging.INFO, logger="provider.app")
    wsgi_call(app, body=body, headers=headers, remote_addr="::ffff:10.9.8.7")
    (line,) = [r for r in caplog.records if getattr(r, "event", None) == "soap.call"]
    assert (line.operation, line.outcome, line.client, line.status, line.soap_version) == (
        "StartChat",
        "success",
        "10.9.8.7",
        200,
        "1.1",
    )
    assert line.fast_path is True and len(line.request_id) == 32 and line.duration_ms >= 0
    assert (_calls("StartChat", "success") - calls, _latency_count("StartChat") - latency) == (2.0, 2.0)
