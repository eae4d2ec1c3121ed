"""The call journal's writer: a bounded queue per process, flushed in batches by a daemon thread.

:meth:`JournalWriter.record` never blocks and never raises: it puts the entry on a
bounded in-memory queue and returns. A daemon thread writes what is queued every
``flush_seconds`` (default 1 s), or sooner once ``batch_size`` entries wait, in batches
(a batch is one transaction on PostgreSQL and a few multi-row INSERTs of their own on
SQLite: :class:`JournalInsert`). When the database is slow the queue fills and further
entries are dropped; when a write fails its entries are dropped. Drops are counted in
``st_provider_journal_dropped_total{reason}`` and logged (event ``journal.dropped``)
at most once a minute. Calls are never slowed down or failed by the journal.

Flush window: entries are held in memory until the next flush, so a process that is
killed (SIGKILL, out of memory) loses the entries of the calls it completed within
the last ``flush_seconds`` (plus a batch being written at that moment). A process
that exits normally writes what is queued first (for up to ``close_seconds``).

Pending entries: the request thread only queues the call's raw values
(:class:`~provider.journal.entry.PendingCall`); this thread builds each entry (secrets
removed, see :mod:`provider.journal.entry`) when it takes it off the queue, before the
batch is written, and drops the raw call then. Secrets are thus held in memory only until
the writer takes the call off the queue (the next flush, or later while a slow database
holds the writer up), and never written.

Forks: the thread starts on the first entry in each process (a gunicorn worker, never
the master); a forked child starts with an empty queue and its own thread.
"""

from __future__ import annotations

import atexit
import json
import json.encoder
import logging
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

from sqlalchemy import Dialect, Table

from provider.db.driver_rows import to_driver
from provider.db.journal import CallJournalRecord
from provider.db.session import Database
from provider.domain import JournalEntry, PendingEntry
from provider.errors import ProviderError
from provider.metrics import JOURNAL_DROPPED, JOURNAL_WRITTEN

log = logging.getLogger("provider.journal")

_TABLE = cast(Table, CallJournalRecord.__table__)

FLUSH_SECONDS = 1.0
BATCH_SIZE = 256  # a multiple of MAX_CHUNK: whole multi-row INSERTs on SQLite (see JournalInsert)
#: the most rows in one multi-row INSERT on SQLite (a power of two): a whole default batch
MAX_CHUNK = 256
MAX_QUEUE = 10_000
CLOSE_SECONDS = 2.0
DROP_LOG_SECONDS = 60.0


#: the stored columns in insert order (``id`` is the database's)
_COLUMNS = (
    "at",
    "operation",
    "request_id",
    "client",
    "duration_ms",
    "outcome",
    "fault",
    "username",
    "variables",
    "identity",
    "matched",
    "answer",
)
_JSON_COLUMNS = frozenset({"variables", "identity", "matched", "answer"})


def _json_encoder() -> Callable[[Any], str]:
    """``json.dumps`` with its default options, the C encoder built once (not per call).

    Same text as ``json.dumps`` (the serialiser SQLAlchemy's JSON type uses), ``None`` as
    ``null`` as that type stores it; no check for circular structures (an entry holds plain,
    freshly built data). Falls back to ``json.dumps`` without the C accelerator.
    """
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - CPython always has it
        return json.dumps
    defaults = json.JSONEncoder()
    encoder = make(
        None,  # markers: no circular check
        defaults.default,
        json.encoder.encode_basestring_ascii,  # ensure_ascii=True, as json.dumps
        None,  # indent
        defaults.key_separator,
        defaults.item_separator,
        False,  # sort_keys
        False,  # skipkeys
        True,  # allow_nan
    )
    return lambda value: "".join(encoder(value, 0))


_to_json = _json_encoder()


def sqlite_max_variables() -> int:
    """The most bound parameters one statement may have in this process's SQLite library
    (32766 by default since SQLite 3.32, 999 before)."""
    probe = sqlite3.connect(":memory:")
    try:
        return probe.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    finally:
        probe.close()


class JournalInsert:
    """The journal's INSERT for one database dialect, run on the DB-API without SQLAlchemy's
    per-row parameter processing.

    Each entry becomes a tuple of driver values here: ``at`` through the column type's own
    conversion for the dialect, the four JSON columns serialised as SQLAlchemy's JSON type
    stores them (``json.dumps``' text, ``None`` as ``null``; cast to ``json`` on PostgreSQL).
    The same rows as a Core insert of the table.

    On PostgreSQL a batch is one ``executemany`` of :attr:`sql` in a transaction (psycopg
    pipelines it). On SQLite it is multi-row ``INSERT ... VALUES (...), (...)`` statements
    (:meth:`chunks`), each run as its own transaction
    (:meth:`~provider.db.session.Database.write_alone`): the ``sqlite3`` module lets other
    threads run around every statement and between the rows of an ``executemany``, and behind
    busy request threads each of those costs the journal's thread a wait for the interpreter,
    with the write lock held. A whole batch of the default :data:`BATCH_SIZE` is ONE statement
    (:data:`MAX_CHUNK` rows, 3,072 parameters, where SQLite allows them: 3.32 and newer), one
    transaction and one wait: against four statements of 64 rows, the journal's cost beside
    six calls is about 30% lower (``benchmarks/journal_cost.py``) and SQLite's write lock is
    taken once for ~2 ms instead of four times for ~0.6 ms. A remainder (a timed flush) is
    written in chunks of a power of two of rows, so the writers' connection caches nine of
    these statements at most, not one per batch length (about 0.8 MB of SQLite's memory in
    all, most of it the statement of 256 rows; those of 64 rows and less, 0.2 MB).
    """

    def __init__(self, dialect: Dialect, *, max_variables: int | None = None) -> None:
        mark = "?" if dialect.paramstyle == "qmark" else "%s"
        json_mark = f"CAST({mark} AS JSON)" if dialect.name == "postgresql" else mark
        self._values = (
            "(" + ", ".join(json_mark if name in _JSON_COLUMNS else mark for name in _COLUMNS) + ")"
        )
        # Only constants go into this text (the table's and columns' names, placeholders).
        self._head = f"INSERT INTO {_TABLE.name} ({', '.join(_COLUMNS)}) VALUES "  # noqa: S608
        self.sql = self._head + self._values
        #: SQLite: the batch in multi-row statements of their own (:meth:`chunks`)
        self.multi_row = dialect.name == "sqlite"
        if self.multi_row and max_variables is None:
            max_variables = sqlite_max_variables()
        fits = max(1, min(MAX_CHUNK, (max_variables or 0) // len(_COLUMNS)))
        #: the most rows in one multi-row INSERT: the largest power of two that fits
        self.max_chunk = 1 << (fits.bit_length() - 1)
        self._chunk_sql: dict[int, str] = {}
        self._at = to_driver(_TABLE.c.at, dialect)

    def row(self, entry: JournalEntry) -> tuple[Any, ...]:
        """``entry`` as the statement's parameters (ValueError, TypeError: not storable)."""
        to_json = _to_json
        return (
            self._at(entry.at),
            entry.operation,
            entry.request_id,
            entry.client,
            entry.duration_ms,
            entry.outcome,
            entry.fault,
            entry.username,
            to_json(entry.variables),  # JSON writes tuples as lists: no copies needed
            to_json(entry.identity),
            to_json(entry.matched),
            to_json(entry.answer),
        )

    def chunks(self, rows: Sequence[tuple[Any, ...]]) -> Iterator[tuple[str, tuple[Any, ...], int]]:
        """SQLite: ``rows`` in order as multi-row INSERTs (SQL, flat parameters, row count),
        each of a power of two of rows, at most :attr:`max_chunk`."""
        start = 0
        while start < len(rows):
            size = min(self.max_chunk, 1 << ((len(rows) - start).bit_length() - 1))
            chunk = rows[start : start + size]
            start += size
            sql = self._chunk_sql.get(size)
            if sql is None:
                sql = self._chunk_sql[size] = self._head + ", ".join([self._values] * size)
            yield sql, tuple(value for row in chunk for value in row), size


class JournalWriter:
    """A :class:`~provider.domain.CallObserver` writing to the ``call_journal`` table."""

    def __init__(
        self,
        database: Database,
        *,
        flush_seconds: float = FLUSH_SECONDS,
        batch_size: int = BATCH_SIZE,
        max_queue: int = MAX_QUEUE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = database
        self._insert = JournalInsert(database.engine.dialect)
        self.flush_seconds = flush_seconds
        self._batch_size = batch_size
        self._max_queue = max_queue
        self._clock = clock
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._queue: deque[JournalEntry | PendingEntry] = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._dropped_since_log = 0
        self._last_drop_log = float("-inf")
        atexit.register(self.close)

    # --- the request side -------------------------------------------------------------

    def record(self, entry: JournalEntry | PendingEntry) -> None:
        """Queue ``entry`` for the next flush; drop it (counted) when the queue is full.

        A :class:`~provider.domain.PendingEntry` (the app hands over a
        :class:`~provider.journal.entry.PendingCall`) is built in the writer thread at the
        flush, before anything of it is stored (see :meth:`_take_rows`)."""
        try:
            self._ensure_started()
            queued = len(self._queue)
            if queued >= self._max_queue:
                self._dropped("queue_full", 1)
                return
            self._queue.append(entry)  # deque.append is atomic: no lock on the request path
        except Exception:  # noqa: BLE001 - the journal must never fail a call
            self._dropped("error", 1)
            return
        if queued + 1 == self._batch_size:
            self._wake.set()

    def _ensure_started(self) -> None:
        pid = os.getpid()
        if self._pid == pid:
            return
        with self._lock:
            if self._pid == pid:
                return
            # A new process (first entry, or a forked child): its own queue and thread.
            self._queue = deque()
            self._wake = threading.Event()
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._run, name="st-provider-journal", daemon=True)
            self._thread.start()
            self._pid = pid

    # --- the writing side --------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            woken = self._wake.wait(self.flush_seconds)
            self._wake.clear()
            if woken and not self._stop.is_set():
                self.flush(whole_batches=True)
            else:
                self.flush()
        self.flush()

    def flush(self, *, whole_batches: bool = False) -> int:
        """Write what is queued now, in batches; the number of entries written.

        ``whole_batches``: only while a whole batch waits (woken by a full batch, the writer
        leaves the few entries queued meanwhile for the next batch or the next timed flush,
        within ``flush_seconds``, instead of writing a small batch at once: under a steady
        load every transaction then carries ``batch_size`` entries)."""
        written = 0
        while not whole_batches or len(self._queue) >= self._batch_size:
            rows = self._take_rows(self._batch_size)
            if rows is None:
                return written
            if rows:
                written += self._write(rows)
        return written

    def _take_rows(self, limit: int) -> list[tuple[Any, ...]] | None:
        """Up to ``limit`` queued entries as rows of the insert, ``None`` when nothing is queued.

        A pending entry is built here, in the writer thread (its secrets removed), and
        dropped at once: the rows hold no secret, and the raw call is not kept while the
        database is written. An entry that cannot be built or stored (serialised) is logged
        (``journal.entry_failed``) and counted as dropped (``error``), alone.
        """
        rows: list[tuple[Any, ...]] = []
        taken = 0
        queue = self._queue
        row = self._insert.row
        while taken < limit:
            try:
                item = queue.popleft()
            except IndexError:
                break
            taken += 1
            try:
                rows.append(row(item if isinstance(item, JournalEntry) else item.build()))
            except Exception:
                log.exception("call journal entry failed", extra={"event": "journal.entry_failed"})
                JOURNAL_DROPPED.labels("error").inc()
            del item
        return rows if taken else None

    def _write(self, rows: Sequence[tuple[Any, ...]]) -> int:
        """Store ``rows``; the number stored (what fails is counted and logged as dropped)."""
        if not self._insert.multi_row:
            return self._attempt(len(rows), self._write_many, rows)
        written = 0
        for sql, parameters, count in self._insert.chunks(rows):
            written += self._attempt(count, self._write_alone, sql, parameters)
        return written

    def _write_many(self, rows: Sequence[tuple[Any, ...]]) -> None:
        with self._db.write_connection("journal write failed") as connection:
            connection.exec_driver_sql(self._insert.sql, list(rows))  # one DB-API executemany

    def _write_alone(self, sql: str, parameters: tuple[Any, ...]) -> None:
        self._db.write_alone(sql, parameters, "journal write failed")

    def _attempt(self, count: int, write: Callable[..., None], *args: Any) -> int:
        try:
            write(*args)
        except ProviderError as exc:
            self._dropped("storage", count, error=type(exc).__name__)
            return 0
        except Exception:
            log.exception("call journal write failed", extra={"event": "journal.write_failed"})
            self._dropped("error", count)
            return 0
        JOURNAL_WRITTEN.inc(count)
        return count

    def _dropped(self, reason: str, count: int, *, error: str | None = None) -> None:
        JOURNAL_DROPPED.labels(reason).inc(count)
        with self._lock:
            self._dropped_since_log += count
            now = self._clock()
            if now - self._last_drop_log < DROP_LOG_SECONDS:
                return
            dropped, self._dropped_since_log = self._dropped_since_log, 0
            self._last_drop_log = now
        log.warning(
            "call journal entries dropped",
            extra={"event": "journal.dropped", "reason": reason, "dropped": dropped, "error": error},
        )

    def close(self, timeout: float = CLOSE_SECONDS) -> None:
        """Write what is queued and stop the thread (waits up to ``timeout`` s). Idempotent."""
        thread = self._thread
        if self._pid != os.getpid() or thread is None or not thread.is_alive():
            return
        self._stop.set()
        self._wake.set()
        thread.join(timeout)
