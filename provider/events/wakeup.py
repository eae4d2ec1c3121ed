"""Waking idle delivery workers when deliveries are stored, instead of at their next poll.

A wake-up is only a **hint**: the claim (:mod:`provider.events.leases`) stays the only
source of truth about what is due, and every worker still polls every
``ST_PROVIDER_WORKER_POLL_INTERVAL`` seconds, so a lost hint delays a delivery by at most
one poll and never loses it.

- **PostgreSQL**: whoever makes a delivery due (:class:`~provider.events.outbox.Outbox`,
  ``events replay``, ``deliveries retry``, a worker handing deliveries back) calls
  :func:`notify_workers` inside its transaction: ``pg_notify`` is delivered when the
  transaction commits, and never if it rolls back. Each worker runs a
  :class:`PostgresListener` thread with its own connection (psycopg 3, autocommit) that
  ``LISTEN``\\s on :data:`CHANNEL`, waiting at most a second at a time so it can stop,
  checking the connection every :data:`HEALTH_CHECK_SECONDS`, and reconnecting with
  exponential backoff (0.5 s doubling up to :data:`MAX_BACKOFF_SECONDS`, with jitter)
  when the connection is lost. Every (re)connection wakes the worker once (reason
  ``listening``) for what was stored while nobody listened.
- **SQLite** has no notifications between processes: a :class:`SqliteWatcher` thread
  asks the database file every :data:`SQLITE_CHECK_SECONDS` whether another connection
  committed since it last looked (``PRAGMA data_version``, which reads no table), and
  wakes the worker when one did (reason ``change``; ``watching`` once at the start).
- **Pauses** (PostgreSQL): a worker pausing a channel after a 429/503 notifies
  ``paused:NAME`` in the same transaction; the other workers then look at that channel's
  pause before their next send to it, instead of within a quarter of a second.
  The worker then claims, which
  finds out whether anything is due. The SOAP side does nothing extra.

A waker calls ``wake(reason)``; the worker logs the reason of each wake-up (debug level)
in the ``wake`` field of its ``worker.wake`` log record.
"""

from __future__ import annotations

import logging
import random
import sqlite3
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import Connection, text
from sqlalchemy.orm import Session

from provider.db.session import Database, sqlite_file

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger("provider.events.worker")

#: the PostgreSQL notification channel
CHANNEL = "st_provider_deliveries"
SQLITE_CHECK_SECONDS = 0.05
LISTEN_WAIT_SECONDS = 1.0
HEALTH_CHECK_SECONDS = 30.0
FIRST_BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 30.0

Wake = Callable[[str], None]


#: the payload prefix of a notification that a channel was paused (followed by its name)
PAUSED = "paused:"


def notify_on_driver(cursor: psycopg.Cursor[Any], payload: str = "") -> None:
    """:func:`notify_workers` on psycopg's cursor, in its connection's transaction (the
    outbox's pipeline: the wake-up goes with the statements before the ``COMMIT``)."""
    cursor.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))


def notify_workers(session: Session | Connection, payload: str = "") -> None:
    """Wake the listening workers when ``session``'s transaction commits (PostgreSQL; else nothing).

    ``session`` is an ORM session or a Core connection in a transaction.

    ``payload`` empty: deliveries may be due; :data:`PAUSED` and a channel name: that
    channel was paused (workers look at its pause at once instead of within
    :data:`~provider.events.leases.PAUSE_CHECK_SECONDS`).
    """
    dialect = session.dialect if isinstance(session, Connection) else session.get_bind().dialect
    if dialect.name == "postgresql":
        session.execute(
            text("SELECT pg_notify(:channel, :payload)"), {"channel": CHANNEL, "payload": payload}
        )


class Waker(Protocol):
    """A source of wake-ups running beside a worker until closed."""

    def close(self) -> None: ...


class _Thread:
    """A daemon thread running ``self._loop`` until :meth:`close`."""

    name = "waker"

    def __init__(self, wake: Wake) -> None:
        self._wake = wake
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._main, name=self.name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _main(self) -> None:
        try:
            self._loop()
        except Exception:  # a broken waker leaves polling, never the worker
            log.exception("worker wake-ups stopped; polling only", extra={"event": "worker.waker_failed"})

    def _loop(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._closing.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=LISTEN_WAIT_SECONDS + 5)


class PostgresListener(_Thread):
    """``LISTEN`` on :data:`CHANNEL` with reconnection (see module docstring)."""

    name = "delivery-listener"

    def __init__(self, database: Database, wake: Wake, *, worker: str) -> None:
        super().__init__(wake)
        url = database.engine.url.set(drivername="postgresql")
        self._conninfo = url.render_as_string(hide_password=False)
        self._worker = worker
        self.connected = threading.Event()

    def _loop(self) -> None:
        import psycopg  # the PostgreSQL driver; only a PostgreSQL worker gets here

        backoff = FIRST_BACKOFF_SECONDS
        while not self._closing.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=10) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.connected.set()
                    backoff = FIRST_BACKOFF_SECONDS
                    log.info(
                        "listening for new deliveries",
                        extra={"event": "worker.listening", "worker": self._worker},
                    )
                    self._wake("listening")
                    self._listen(conn)
            except psycopg.Error as exc:
                log.warning(
                    "lost the notification connection; polling until it is back",
                    extra={
                        "event": "worker.listen_lost",
                        "worker": self._worker,
                        "error": type(exc).__name__,
                    },
                )
            self.connected.clear()
            self._closing.wait(backoff * (0.5 + random.random()))  # noqa: S311 - jitter
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)

    def _listen(self, conn: object) -> None:
        import psycopg

        assert isinstance(conn, psycopg.Connection)
        quiet = 0.0
        while not self._closing.is_set():
            payloads = [n.payload for n in conn.notifies(timeout=LISTEN_WAIT_SECONDS, stop_after=1)]
            if payloads:
                quiet = 0.0
                for payload in dict.fromkeys(payloads):
                    self._wake(payload if payload.startswith(PAUSED) else "notify")
                continue
            quiet += LISTEN_WAIT_SECONDS
            if quiet >= HEALTH_CHECK_SECONDS:  # a connection that died silently raises here
                conn.execute("SELECT 1")
                quiet = 0.0


class SqliteWatcher(_Thread):
    """Wakes the worker when another connection committed to the SQLite file."""

    name = "delivery-watcher"

    def __init__(self, path: str, wake: Wake) -> None:
        super().__init__(wake)
        self._path = path

    def _loop(self) -> None:
        conn = sqlite3.connect(self._path, timeout=5, isolation_level=None)
        try:
            last = _data_version(conn)
            self._wake("watching")  # for what was stored before the first look
            while not self._closing.wait(SQLITE_CHECK_SECONDS):
                version = _data_version(conn)
                if version != last:
                    last = version
                    self._wake("change")
        finally:
            conn.close()


def _data_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA data_version").fetchone()[0])


def start_waker(database: Database, wake: Wake, *, worker: str, listen: bool) -> Waker | None:
    """The waker for ``database`` (started), or ``None`` when wake-ups are off or impossible."""
    if not listen:
        return None
    waker: PostgresListener | SqliteWatcher
    if database.is_postgresql:
        waker = PostgresListener(database, wake, worker=worker)
    else:
        path = sqlite_file(database.url)
        if path is None:  # an in-memory database has no other process to hear from
            return None
        waker = SqliteWatcher(str(path), wake)
    waker.start()
    return waker
