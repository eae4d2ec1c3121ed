"""The call journal: every SOAP call recorded (secrets removed), queried, trimmed.

- :mod:`provider.journal.entry`: a call -> a :class:`~provider.domain.JournalEntry`;
- :mod:`provider.journal.writer`: the batching writer of each serving process;
- :mod:`provider.journal.queries`: ``calls list`` / ``calls show``;
- :mod:`provider.journal.retention`: the purge of old rows (journal, events, audit).

A serving process gets its writer from :func:`build_journal`.
"""

from __future__ import annotations

from provider.db.session import Database
from provider.journal.writer import JournalWriter
from provider.settings import Settings


def build_journal(settings: Settings, database: Database) -> JournalWriter | None:
    """The call journal of a serving process; ``None`` when ``ST_PROVIDER_JOURNAL`` is off."""
    return JournalWriter(database) if settings.journal else None
