"""The call journal: every SOAP call recorded (secrets removed), queried, trimmed.

- :mod:`provider.journal.entry`: a call -> a :class:`~provider.domain.JournalEntry`;
- :mod:`provider.journal.writer`: the batching writer of each serving process;
- :mod:`provider.journal.queries`: ``calls list`` / ``calls show``;
- :mod:`provider.journal.retention`: the purge of old rows (journal, events, audit).

A serving process gets its writer from :func:`build_journal`.
"""

from __future__ import annotations

import logging

from sqlalchemy import inspect
from sqlalchemy.exc import SQLAlchemyError

from provider.db.journal import CallJournalRecord
from provider.db.session import Database
from provider.journal.writer import JournalWriter
from provider.settings import Settings

log = logging.getLogger("provider.journal")


def build_journal(settings: Settings, database: Database) -> JournalWriter | None:
    """The call journal of a serving process; ``None`` when ``ST_PROVIDER_JOURNAL`` is off or the
    database has no journal table (not migrated: the server refuses to start then anyway).

    A database that cannot be reached now still gets a writer: it drops entries until the
    database answers again.
    """
    if not settings.journal:
        return None
    try:
        exists = inspect(database.engine).has_table(CallJournalRecord.__tablename__)
    except SQLAlchemyError:
        exists = True
    if not exists:
        log.warning("no call journal table: calls are not journaled", extra={"event": "journal.no_table"})
        return None
    return JournalWriter(database)
