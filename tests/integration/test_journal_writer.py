"""The journal writer with a real database (SQLite and PostgreSQL), in a process of its own:
a killed process loses only the entries of its last flush window; a normal exit loses none."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from typing import cast

import pytest
from sqlalchemy import Table, select

from provider.db.journal import CallJournalRecord
from provider.db.session import Database
from provider.domain import JournalEntry
from provider.journal.writer import JournalInsert, JournalWriter
from tests.support import REPO

FLUSH_SECONDS = 0.5

SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, time
    from datetime import UTC, datetime
    from provider.db.session import Database
    from provider.domain import JournalEntry
    from provider.journal.writer import JournalWriter

    url, flush, ending = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    writer = JournalWriter(Database(url), flush_seconds=flush)

    def entry(i):
        return JournalEntry(at=datetime.now(UTC), operation="StartTicket", request_id=f"r{i}",
                            client=None, duration_ms=1.0, outcome="ok")

    for i in range(40):
        writer.record(entry(i))
    time.sleep(flush * 4)  # well past the flush window: these 40 are written
    for i in range(40, 50):
        writer.record(entry(i))
    if ending == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    sys.exit(0)
    """
)


def _run(url: str, ending: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, url, str(FLUSH_SECONDS), ending],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.returncode


def _request_ids(database: Database) -> set[str]:
    with database.session() as session:
        return set(session.scalars(select(CallJournalRecord.request_id)).all())


@pytest.mark.parametrize("ending", ["kill", "exit"])
def test_a_process_loses_at_most_its_flush_window(database: Database, database_url: str, ending: str) -> None:
    status = _run(database_url, ending)
    ids = _request_ids(database)
    earlier = {f"r{i}" for i in range(40)}
    if ending == "kill":
        assert status == -signal.SIGKILL
        # Entries older than the flush window are stored; only the last window's may be lost.
        assert earlier <= ids <= earlier | {f"r{i}" for i in range(40, 50)}
    else:
        assert status == 0
        assert ids == {f"r{i}" for i in range(50)}  # a normal exit writes what is queued


def _stored(database: Database, request_id: str) -> tuple[object, ...]:
    """The row as the driver returns it (no SQLAlchemy type processing), without its id."""
    with database.engine.connect() as connection:
        sql = (
            "SELECT at, operation, request_id, client, duration_ms, outcome, fault, username, "
            "CAST(variables AS TEXT), CAST(identity AS TEXT), CAST(matched AS TEXT), CAST(answer AS TEXT) "
            "FROM call_journal WHERE request_id = " + ("?" if database.is_sqlite else "%s")
        )
        row = connection.exec_driver_sql(sql, (request_id,)).one()
    return tuple(row)


@pytest.mark.parametrize(
    "identity", [None, {"username": "jdoe", "groups": ["Customers"], "name": "\u00e9t\u00e9"}]
)
def test_the_writer_stores_what_a_core_insert_of_the_table_stores(
    database: Database, identity: object
) -> None:
    """The DB-API insert (:class:`JournalInsert`) writes the same values as SQLAlchemy's own
    insert of the model's table: the timestamp's form, JSON text, ``None`` as JSON ``null``."""
    fields = {
        "at": datetime(2026, 3, 4, 5, 6, 7, 890, tzinfo=UTC),
        "operation": "GetCustomFieldOptions",
        "client": "192.0.2.7",
        "duration_ms": 1.25,
        "outcome": "denied",
        "fault": None,
        "username": "jdoe",
        "variables": (("cf_Product", "Mail & Web <Pro> = \u00e9t\u00e9"), ("location", "REGULAR")),
        "identity": identity,
        "matched": ("rule-a", "rule-b"),
        "answer": {"success": False, "message": "no", "fields": [{"list_options": ["a"], "n": 1.5}]},
    }
    ours = JournalEntry(request_id="ours", **fields)  # type: ignore[arg-type]
    writer = JournalWriter(database)
    assert writer._write([JournalInsert(database.engine.dialect).row(ours)]) == 1
    with database.engine.begin() as connection:
        connection.execute(
            cast(Table, CallJournalRecord.__table__).insert(), [{"request_id": "core", **fields}]
        )
    mine, theirs = _stored(database, "ours"), _stored(database, "core")
    assert mine[2] == "ours" and theirs[2] == "core"
    assert mine[:2] + mine[3:] == theirs[:2] + theirs[3:]


def test_a_batch_longer_than_one_insert_is_stored_whole_and_in_order(database: Database) -> None:
    """On SQLite a batch goes in several multi-row INSERTs of their own (one ``executemany``
    on PostgreSQL): every entry stored once with its own values, ids in the order queued."""
    count = 167  # 5 x 32 + 4 + 2 + 1 rows with at most 50 rows' parameters per statement
    # One batch of all, written by this thread: the writer's own thread is never woken.
    writer = JournalWriter(database, batch_size=count + 1, flush_seconds=3600)
    writer._insert = JournalInsert(database.engine.dialect, max_variables=12 * 50)
    for i in range(count):
        writer.record(
            JournalEntry(
                at=datetime(2026, 3, 4, 5, 6, i % 60, tzinfo=UTC),
                operation="StartTicket",
                request_id=f"b{i}",
                client=None,
                duration_ms=float(i),
                outcome="ok",
                variables=(("n", str(i)),),
            )
        )
    assert writer.flush() == count
    with database.session() as session:
        rows = session.execute(
            select(
                CallJournalRecord.request_id, CallJournalRecord.duration_ms, CallJournalRecord.variables
            ).order_by(CallJournalRecord.id)
        ).all()
    assert [tuple(row) for row in rows] == [(f"b{i}", float(i), [["n", str(i)]]) for i in range(count)]
