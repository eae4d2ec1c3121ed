"""The journal writer with a real database (SQLite and PostgreSQL), in a process of its own:
a killed process loses only the entries of its last flush window; a normal exit loses none."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest
from sqlalchemy import select

from provider.db.journal import CallJournalRecord
from provider.db.session import Database
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
