"""The call journal without a server: entries (secrets removed, outcomes), the app telling the
journal about every SOAP request, and the writer dropping (never blocking) when it cannot write."""

from __future__ import annotations

import logging
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select
from sqlalchemy.dialects import sqlite

from provider.app import build_application
from provider.calls import Provider
from provider.db.journal import CallJournalRecord
from provider.db.migrate import upgrade
from provider.db.session import Database
from provider.domain import CallRequest, Decision, Identity, JournalEntry, Operation
from provider.journal.entry import PendingCall, is_secret_name, kept_variables
from provider.journal.writer import BATCH_SIZE, MAX_CHUNK, JournalInsert, JournalWriter
from provider.settings import Secret, Settings
from provider.variables import InputVariables
from tests.fixtures.server import AUTH, soap_request, wsgi_call
from tests.plugins import DictAuthenticator, FixedRules, RecordingJournal
from tests.support import WEB_SERVICE_PASSWORD

ANN = Identity(username="ann", email="ann@example.org", groups=("Customers",), attributes={"dept": ["Sales"]})


def test_secret_variables_are_left_out_or_redacted() -> None:
    pairs = [
        ("authPW", "service-secret"),
        ("LOGINPASSWORD", "login-secret"),
        ("cf_Password2", "p"),
        ("args_jpToken", "t"),
        ("cf_api_key", "k"),
        ("clientSecret", "s"),
        ("subject", "Hello"),
    ]
    kept = kept_variables(pairs)
    assert kept == (
        ("cf_Password2", "[redacted]"),
        ("args_jpToken", "[redacted]"),
        ("cf_api_key", "[redacted]"),
        ("clientSecret", "[redacted]"),
        ("subject", "Hello"),
    )
    assert is_secret_name("authPW") and not is_secret_name("departmentName")


@pytest.mark.parametrize(
    ("pairs", "username"),
    [
        ((("authPW", "x"), ("LOGINUSERNAME", " jdoe "), ("email", "j@example.org")), "jdoe"),
        ((("loginUsername", "   "), ("Username", "ann"), ("emailFrom", "a@example.org")), "ann"),
        ((("EmailFrom", " from@example.org"), ("email", "to@example.org")), "from@example.org"),
        ((("email", "e" * 400),), "e" * 320),
        ((("subject", "no user here"), ("loginUsername", "")), None),
    ],
)
def test_entry_without_identity_names_the_first_user_variable(
    pairs: tuple[tuple[str, str], ...], username: str | None
) -> None:
    """No identity: the first of loginUsername, username, emailFrom, email (any case) with a
    value other than blanks, trimmed and cut to 320 characters; the secrets never kept."""
    request = CallRequest(Operation.NOTIFY_EVENT_FIRED, InputVariables(pairs))
    entry = PendingCall(
        time.time(), "NotifyEventFired", "ok", None, False, request, None, "r", None, 0.001
    ).build()
    assert entry.username == username
    assert entry.variables == tuple(pair for pair in pairs if pair[0] != "authPW")


def _app(tmp_path: Path, journal: RecordingJournal) -> object:
    settings = Settings.from_mapping(
        {"web_service_password": WEB_SERVICE_PASSWORD, "database_url": f"sqlite:///{tmp_path / 'unused.db'}"}
    )
    rules = FixedRules(
        {
            Operation.START_CHAT: Decision(allow=False, matched=["no-chats"]),
            Operation.AUTHENTICATE: Decision(variables=[("Tier", "gold")], matched=["tier"]),
        }
    )
    provider = Provider(
        Secret(WEB_SERVICE_PASSWORD),
        authenticator=DictAuthenticator({"ann": ("ann-pw-123", ANN)}),
        rules=rules,
    )
    app = build_application(settings, provider=provider)
    app.journal = journal
    return app


def _post(app: object, op: Operation, *entries: str) -> None:
    body, headers = soap_request(op, list(entries))
    wsgi_call(app, body=body, headers=headers)


def test_the_app_journals_every_soap_request(tmp_path: Path) -> None:
    journal = RecordingJournal()
    app = _app(tmp_path, journal)
    _post(app, Operation.AUTHENTICATE, AUTH, "loginUsername=ann", "loginPassword=ann-pw-123")
    _post(app, Operation.AUTHENTICATE, AUTH, "loginUsername=ann", "loginPassword=wrong-guess")
    _post(app, Operation.START_CHAT, AUTH, "loginUsername=ann")
    _post(
        app,
        Operation.START_TICKET,
        "authPW=wrong-service-password",
        "loginUsername=ann",
        "subject=" + "x" * 5000,
    )
    wsgi_call(app, body=b"<not-soap/>", headers={"Content-Type": "text/xml"})
    wsgi_call(app, method="GET", path="/healthz")  # not a SOAP call: not journaled
    ok, failed, chat, refused, fault = journal.entries
    assert (ok.operation, ok.outcome, ok.username, ok.matched) == ("Authenticate", "ok", "ann", ("tier",))
    assert ok.identity is not None and ok.identity["groups"] == ["Customers"]
    assert ok.identity["attributes"] == {"dept": ["Sales"]}
    assert ok.answer is not None and ["Tier", "gold"] in ok.answer["output"]
    assert (failed.outcome, failed.identity) == ("denied", None)
    assert (chat.outcome, chat.matched) == ("denied", ("no-chats",))
    # An unauthenticated caller's values are not stored (only its variables' names).
    assert refused.variables == (("loginUsername", "[not stored]"), ("subject", "[not stored]"))
    assert (refused.outcome, refused.answer and refused.answer["message"]) == (
        "permission_denied",
        "Permission Denied",
    )
    assert (fault.operation, fault.outcome, fault.variables, fault.answer) == ("unknown", "fault", (), None)
    assert fault.fault is not None
    text = repr(journal.entries)
    for secret in (WEB_SERVICE_PASSWORD, "ann-pw-123", "wrong-guess", "wrong-service-password"):
        assert secret not in text
    assert all(e.request_id and e.duration_ms >= 0 for e in journal.entries)


def _entry(i: int = 0) -> JournalEntry:
    return JournalEntry(
        at=datetime.now(UTC),
        operation="StartTicket",
        request_id=f"r{i}",
        client=None,
        duration_ms=1.0,
        outcome="ok",
    )


def _dropped(reason: str) -> float:
    return REGISTRY.get_sample_value("st_provider_journal_dropped_total", {"reason": reason}) or 0.0


def test_a_database_that_fails_drops_entries_counted_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    database = Database(f"sqlite:///{tmp_path / 'missing' / 'provider.db'}")  # cannot be opened
    writer = JournalWriter(database, flush_seconds=3600)
    before = _dropped("storage")
    started = time.perf_counter()
    for i in range(5):
        writer.record(_entry(i))
    assert time.perf_counter() - started < 1.0  # bounded: never waits for the database
    with caplog.at_level(logging.WARNING, logger="provider.journal"):
        assert writer.flush() == 0
        writer.record(_entry(5))
        assert writer.flush() == 0
    assert _dropped("storage") - before == 6
    assert [r.event for r in caplog.records if getattr(r, "event", None) == "journal.dropped"] == [
        "journal.dropped"
    ]
    writer.close()
    database.dispose()


def test_a_full_queue_drops_new_entries(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'missing' / 'provider.db'}")
    writer = JournalWriter(database, flush_seconds=3600, max_queue=3, batch_size=100)
    before = _dropped("queue_full")
    for i in range(5):
        writer.record(_entry(i))
    assert _dropped("queue_full") - before == 2
    writer.close()
    database.dispose()


def _stored_ids(database: Database) -> list[str]:
    with database.session() as session:
        return list(session.scalars(select(CallJournalRecord.request_id).order_by(CallJournalRecord.id)))


def test_woken_by_a_full_batch_the_writer_writes_whole_batches_and_the_timer_the_rest(
    tmp_path: Path,
) -> None:
    """Under a steady load every write carries a whole batch; what is left waits for the
    next batch or the next timed flush (``flush_seconds``), and is written then."""
    url = f"sqlite:///{tmp_path / 'provider.db'}"
    upgrade(url)
    database = Database(url)
    writer = JournalWriter(database, flush_seconds=3600, batch_size=10)
    writer._pid = os.getpid()  # this thread writes: the writer's own thread is not started
    writer._queue.extend(_entry(i) for i in range(25))
    assert writer.flush(whole_batches=True) == 20
    assert _stored_ids(database) == [f"r{i}" for i in range(20)]
    assert writer.flush() == 5
    assert _stored_ids(database) == [f"r{i}" for i in range(25)]
    timed = JournalWriter(database, flush_seconds=0.3, batch_size=10)
    for i in range(100, 113):  # the thread is woken at the 10th, the last 3 go with the timer
        timed.record(_entry(i))
    deadline = time.monotonic() + 5
    while len(_stored_ids(database)) < 38 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _stored_ids(database)[25:] == [f"r{i}" for i in range(100, 113)]
    timed.close()
    database.dispose()


def test_journal_off_builds_no_writer(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'provider.db'}"
    upgrade(url)
    values = {"web_service_password": WEB_SERVICE_PASSWORD, "database_url": url}
    off = Settings.from_mapping({**values, "journal": "off"})
    assert build_application(off, provider=Provider(Secret(WEB_SERVICE_PASSWORD))).journal is None
    on = build_application(Settings.from_mapping(values), provider=Provider(Secret(WEB_SERVICE_PASSWORD)))
    assert isinstance(on.journal, JournalWriter)


def test_no_journal_without_its_table(tmp_path: Path) -> None:
    settings = Settings.from_mapping(
        {"web_service_password": WEB_SERVICE_PASSWORD, "database_url": f"sqlite:///{tmp_path / 'empty.db'}"}
    )
    assert build_application(settings, provider=Provider(Secret(WEB_SERVICE_PASSWORD))).journal is None


@pytest.mark.parametrize("max_variables", [999, 32766, 12 * 50, 11])
def test_sqlite_chunks_are_powers_of_two_in_order(max_variables: int) -> None:
    """Any batch length is written in order, in chunks of a power of two of rows within the
    bound-parameter limit: a connection caches a few statements, not one per batch length."""
    insert = JournalInsert(sqlite.dialect(), max_variables=max_variables)
    assert insert.multi_row and insert.max_chunk * 12 <= max(max_variables, 12)
    assert insert.max_chunk <= MAX_CHUNK
    sizes: set[int] = set()
    for length in range(1, 600):
        rows = [(i, *("x",) * 11) for i in range(length)]
        chunks = list(insert.chunks(rows))
        assert [v for _, parameters, _ in chunks for v in parameters] == [v for row in rows for v in row]
        for sql, parameters, size in chunks:
            assert size & (size - 1) == 0 and size <= insert.max_chunk
            assert sql.count("?") == len(parameters) == 12 * size
            sizes.add(size)
    assert len(sizes) <= insert.max_chunk.bit_length()
    whole_batch = list(insert.chunks([(i, *("x",) * 11) for i in range(BATCH_SIZE)]))
    if max_variables >= 12 * BATCH_SIZE:  # a whole batch is one statement, one transaction
        assert [size for _, _, size in whole_batch] == [BATCH_SIZE]
