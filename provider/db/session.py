"""Engine and session handling: SQLite (embedded default) and PostgreSQL.

:class:`Database` is created once per process (lazily after a gunicorn fork) and
hands out sessions whose transaction commits when the block ends and rolls back on
error. SQLAlchemy errors leave this module as :class:`~provider.errors.StorageError`
(see :func:`storage_error`): a failed connection says why (refused, authentication,
database or file missing, file not writable), never with a password or SQL.
A malformed URL is a :class:`~provider.errors.ConfigError` that does not repeat it.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import URL, Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError, StatementError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import PoolProxiedConnection

from provider.db import write_gate
from provider.errors import ConfigError, DatabaseMissing, StorageError

if TYPE_CHECKING:
    import psycopg
    from sqlalchemy.dialects import postgresql
    from sqlalchemy.dialects import sqlite as sqlite_dialect

log = logging.getLogger("provider.db")

SQLITE_BUSY_TIMEOUT_MS = 30_000
POSTGRES_CONNECT_TIMEOUT_S = 10
#: how long a statement of :meth:`Database.pipeline_transaction` may run (a lock it waits for
#: included): as long as a SQLite writer waits for the write lock
PIPELINE_STATEMENT_TIMEOUT_MS = SQLITE_BUSY_TIMEOUT_MS
#: PostgreSQL: how long any statement of the service's sessions waits for a lock another
#: transaction holds (``lock_timeout``): as long as a SQLite statement waits for the write lock
POSTGRES_LOCK_TIMEOUT_MS = SQLITE_BUSY_TIMEOUT_MS


def normalize_url(url: str) -> str:
    """Use psycopg 3 for PostgreSQL URLs written without a driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


SQLITE_FORMS = (
    "sqlite:///relative/path.db (three slashes: relative to the working directory) or "
    "sqlite:////absolute/path.db (four slashes)"
)


def parse_url(url: str) -> URL:
    """The parsed database URL; ConfigError (without the URL, which may hold a password) if malformed."""
    try:
        parsed = make_url(normalize_url(url))
    except Exception as exc:  # sqlalchemy raises ArgumentError and ValueError subclasses
        raise ConfigError(
            "ST_PROVIDER_DATABASE_URL is not a database URL: expected "
            "postgresql://USER:PASSWORD@HOST:PORT/DATABASE or " + SQLITE_FORMS
        ) from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite" and (parsed.host or parsed.port or parsed.username):
        # sqlite://st.db: the file name landed in the host part.
        raise ConfigError(f"ST_PROVIDER_DATABASE_URL is not a SQLite URL: use {SQLITE_FORMS}")
    if backend not in ("sqlite", "postgresql"):
        raise ConfigError(
            f"ST_PROVIDER_DATABASE_URL: unsupported database {backend!r} (use sqlite or postgresql)"
        )
    return parsed


def sqlite_file(url: str) -> Path | None:
    """The absolute path of a SQLite database file (as this process resolves it); ``None``
    for an in-memory database or another backend."""
    parsed = parse_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(os.path.abspath(str(parsed.database)))


def describe_url(url: str) -> str:
    """The database for people: the password hidden, a SQLite path made absolute."""
    path = sqlite_file(url)
    if path is not None:
        return f"sqlite:///{path}"
    return parse_url(url).render_as_string(hide_password=True)


def require_existing(url: str) -> None:
    """Raise :class:`~provider.errors.DatabaseMissing` when ``url`` is a SQLite file that does not exist."""
    path = sqlite_file(url)
    if path is not None and not path.exists():
        raise DatabaseMissing(
            f"the database file {path} does not exist. The service uses ST_PROVIDER_DATABASE_URL "
            "(default sqlite:///st-provider.db, relative to the working directory): run this command "
            "with the same setting and directory, or pass --create to start a new, empty database there"
        )


def storage_error(exc: SQLAlchemyError, url: str, action: str = "database error") -> StorageError:
    """``exc`` as a StorageError whose message says the cause, e.g.
    ``"cannot connect to the database at 127.0.0.1:5433: connection refused ..."``.

    Only connection-level errors (OperationalError, InterfaceError, DatabaseError from the
    driver) are explained; any other error is named by type, as its text can hold SQL and
    values. No message contains the password.
    """
    cause = _cause(exc, url)
    message = f"{action}: {cause}" if cause else f"{action}: {type(exc).__name__}"
    missing = cause is not None and _MISSING.search(cause) is not None
    return (DatabaseMissing if missing else StorageError)(message)


# The causes that mean "there is no such database" (DatabaseMissing).
_MISSING = re.compile(r"^database '[^']*' does not exist|: the directory .* does not exist$")


def _cause(exc: SQLAlchemyError, url: str) -> str | None:
    if not isinstance(exc, DBAPIError) or type(exc).__name__ not in (
        "OperationalError",
        "InterfaceError",
        "DatabaseError",
    ):
        return None
    original = str(exc.orig) if exc.orig is not None else str(exc)
    try:
        parsed = parse_url(url)
    except ConfigError:
        return None
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_cause(original, sqlite_file(url))
    return _postgres_cause(original, parsed)


def _postgres_cause(original: str, url: URL) -> str:
    lowered = original.lower()
    where = f"{url.host or 'localhost'}:{url.port or 5432}"
    if "connection refused" in lowered:
        return f"connection refused by {where} (is PostgreSQL running there and listening on TCP?)"
    if "password authentication failed" in lowered or "no password supplied" in lowered:
        return f"authentication failed for user {url.username!r} at {where} (check the user and password)"
    if "role" in lowered and "does not exist" in lowered:
        return f"authentication failed: user {url.username!r} does not exist at {where}"
    if "database" in lowered and "does not exist" in lowered:
        return (
            f"database {url.database!r} does not exist at {where} "
            "(create it, then run `st-provider db upgrade`)"
        )
    if "resolve host" in lowered or "translate host name" in lowered or "name or service" in lowered:
        return f"host {url.host!r} not found"
    if "timeout expired" in lowered or "timed out" in lowered:
        return f"no answer from {where} within {POSTGRES_CONNECT_TIMEOUT_S} s"
    if "pg_hba.conf" in lowered:
        return f"{where} refuses connections from this host for this user and database (pg_hba.conf)"
    if "lock timeout" in lowered:
        return f"gave up waiting for a lock that another transaction at {where} holds (lock_timeout)"
    if "statement timeout" in lowered:
        return f"a statement at {where} ran past its deadline (statement_timeout)"
    return _first_line(original, url.password)


def _sqlite_cause(original: str, path: Path | None) -> str:
    lowered = original.lower()
    if path is None:
        return _first_line(original, None)
    if "unable to open database file" in lowered:
        if path.is_dir():
            return f"{path} is a directory, not a SQLite file"
        if not path.parent.is_dir():
            return f"cannot open the SQLite file {path}: the directory {path.parent} does not exist"
        if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.R_OK)):
            return f"cannot open the SQLite file {path}: not readable or writable by this user"
        return f"cannot open the SQLite file {path}"
    if "readonly" in lowered or "read-only" in lowered:
        return f"the SQLite file {path} (or its directory) is not writable by this user"
    if "not a database" in lowered:
        return f"{path} is not a SQLite database"
    if "locked" in lowered:
        return (
            f"the SQLite file {path} stayed locked by another process for {SQLITE_BUSY_TIMEOUT_MS // 1000} s"
        )
    return f"{path}: {_first_line(original, None)}"


def _first_line(text: str, password: str | None) -> str:
    line = text.strip().splitlines()[0] if text.strip() else "unknown error"
    if password:
        line = line.replace(password, "***")
    return line[:300]


def create_db_engine(
    url: str, *, immediate: bool = False, lock_timeout_ms: int = POSTGRES_LOCK_TIMEOUT_MS
) -> Engine:
    """An engine with safe defaults: timeouts, WAL and foreign keys on SQLite, pre-ping on PostgreSQL.

    On SQLite every transaction starts with ``BEGIN``, or with ``BEGIN IMMEDIATE`` (the write
    lock taken at once) when ``immediate`` is true; ``immediate`` changes nothing on PostgreSQL.
    A statement waits for another transaction's lock at most 30 s: SQLite's busy timeout, and on
    PostgreSQL ``lock_timeout_ms`` set for every session of the engine (:func:`_configure_postgresql`;
    migrations included: one queued behind a long transaction fails with a clear error instead
    of holding every other statement of the table behind its own lock request).
    Raises ConfigError for a malformed or unsupported URL (see :func:`parse_url`).
    """
    parsed = parse_url(url)
    url = normalize_url(url)
    try:
        if parsed.get_backend_name() == "sqlite":
            engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
            _configure_sqlite(engine, "BEGIN IMMEDIATE" if immediate else "BEGIN")
            return engine
        engine = create_engine(
            url,
            pool_pre_ping=True,
            pool_size=5,
            max_overflow=10,
            pool_timeout=10,
            connect_args={"connect_timeout": POSTGRES_CONNECT_TIMEOUT_S},
        )
        _configure_postgresql(engine, lock_timeout_ms)
        return engine
    except (ArgumentError, ImportError, ValueError, TypeError) as exc:
        raise ConfigError(
            f"ST_PROVIDER_DATABASE_URL ({describe_url(url)}) is not usable: {type(exc).__name__}"
        ) from exc


def conflict_insert(dialect_name: str, table: Any) -> postgresql.Insert | sqlite_dialect.Insert:
    """``INSERT INTO table`` with the dialect's ``ON CONFLICT`` clauses (PostgreSQL's, else
    SQLite's). The dialect's module is imported on first use: a SQLite deployment's serving
    processes never load PostgreSQL's (~2 MB a process)."""
    if dialect_name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as postgresql_insert

        return postgresql_insert(table)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table)


@contextmanager
def _gate_turn(gate: write_gate.WriteGate, url: str) -> Iterator[None]:
    try:
        with gate.held(SQLITE_BUSY_TIMEOUT_MS / 1000):
            yield
    except write_gate.GateTimeout as exc:
        raise StorageError(
            f"database error: {_sqlite_cause('database is locked', sqlite_file(url))}"
        ) from exc


def _as_sqlalchemy(exc: Exception, driver_error: type[Exception]) -> StatementError:
    """A driver's error wrapped as SQLAlchemy wraps it (the class :func:`storage_error` reads)."""
    wrapped = DBAPIError.instance(None, None, exc, driver_error)
    wrapped.__cause__ = exc
    return wrapped


def _hand_back(connection: PoolProxiedConnection, driver: psycopg.Connection[Any], autocommit: bool) -> None:
    """After a pipeline: the connection as the pool handed it out (no transaction open, its
    ``autocommit`` as it was), or dropped when it cannot be (broken) so the pool never hands it
    out again (and does not log a failed reset)."""
    import psycopg

    try:
        if driver.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            driver.rollback()
        driver.autocommit = autocommit
    except psycopg.Error:
        connection.invalidate()


def _configure_postgresql(engine: Engine, lock_timeout_ms: int) -> None:
    """Every new connection of ``engine`` waits at most ``lock_timeout_ms`` for a lock.

    Without it a row or table lock held by a transaction that never ends (a stuck client, an
    operator's open ``psql`` session) holds every statement that needs it for as long: a SOAP
    thread on the login throttle's row, the delivery worker's lease, a journal batch. With it
    the statement fails (``LockNotAvailable``, a StorageError saying so) and the caller answers
    as for any database failure. Set at the session level on connect, in autocommit so that
    the pool's rollback on check-in does not undo it (SQLAlchemy's recipe for session settings);
    a value through the bound parameter of ``set_config``, no SQL text built from it.
    """

    @event.listens_for(engine, "connect")  # a pool event: no cost per statement
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        autocommit = dbapi_connection.autocommit
        dbapi_connection.autocommit = True
        try:
            dbapi_connection.execute("SELECT set_config('lock_timeout', %s, false)", (str(lock_timeout_ms),))
        finally:
            dbapi_connection.autocommit = autocommit


def _configure_sqlite(engine: Engine, begin: str) -> None:
    """Take over transaction control so ``BEGIN IMMEDIATE`` is possible.

    SQLAlchemy's recipe for pysqlite (the driver's own transaction handling off, our ``BEGIN``
    at the start of each transaction), with the ``BEGIN`` issued by this engine's dialect
    instead of a ``begin`` connection event: any connection event makes SQLAlchemy dispatch
    the (empty) execution events around every statement, ~15 us a statement. The dialect
    instance is this engine's own (``create_engine`` builds one per engine), so an engine
    for ``BEGIN IMMEDIATE`` is a second engine, not an execution option.
    """

    @event.listens_for(engine, "connect")  # a pool event: no cost per statement
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        if engine.url.database not in (None, "", ":memory:"):
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    def _do_begin(dbapi_connection: Any) -> None:
        # On the driver's connection (a statement through SQLAlchemy costs ~20 us); its error
        # (SQLITE_BUSY after the busy timeout) is wrapped by SQLAlchemy's Connection as a
        # DBAPIError, as for any statement.
        dbapi_connection.driver_connection.execute(begin)

    engine.dialect.do_begin = _do_begin  # type: ignore[method-assign]


class Database:
    """One process's connection to the provider's database.

    Usable as a context manager (``with Database(url) as database:``): disposed at the end.
    """

    def __init__(self, url: str, *, lock_timeout_ms: int = POSTGRES_LOCK_TIMEOUT_MS) -> None:
        """``lock_timeout_ms``: PostgreSQL, how long a statement waits for another transaction's
        lock (see :func:`create_db_engine`)."""
        self.url = normalize_url(url)
        self.engine = create_db_engine(self.url, lock_timeout_ms=lock_timeout_ms)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._sqlite = self.engine.dialect.name == "sqlite"
        # SQLite: a second engine (its own pool) whose transactions begin IMMEDIATE.
        self._immediate_engine = create_db_engine(self.url, immediate=True) if self._sqlite else self.engine
        self._immediate = sessionmaker(self._immediate_engine, expire_on_commit=False)
        file = sqlite_file(self.url) if self._sqlite else None
        self._gate_path: str | None = (
            write_gate.gate_path(str(file) if file else None) if self._sqlite else None
        )

    @property
    def is_sqlite(self) -> bool:
        return self._sqlite

    @property
    def write_engine(self) -> Engine:
        """The engine of writing transactions (on SQLite a second one, each transaction begun
        ``IMMEDIATE``; otherwise :attr:`engine`). Writers use :meth:`session` with
        ``immediate=True`` or :meth:`write_connection`, which also take the write gate's turn."""
        return self._immediate_engine

    @property
    def is_postgresql(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    @contextmanager
    def session(self, *, immediate: bool = False) -> Iterator[Session]:
        """A session in one transaction: committed at the end of the block, rolled back on error.

        ``immediate=True`` takes SQLite's write lock at the start (for claim-style
        read-then-write work and every transaction that writes), queueing for it behind
        this project's other writers (:mod:`provider.db.write_gate`); it changes nothing
        on PostgreSQL.
        """
        maker = self._immediate if immediate and self.is_sqlite else self._sessions
        try:
            with self._write_turn(immediate), maker() as session, session.begin():
                yield session
        except SQLAlchemyError as exc:
            raise storage_error(exc, self.url) from exc

    @contextmanager
    def write_connection(self, action: str = "database error") -> Iterator[Connection]:
        """A Core connection in one writing transaction (``BEGIN IMMEDIATE`` on SQLite, in
        its turn), committed at the end of the block; StorageError (its message starting
        with ``action``) if the database fails."""
        try:
            with self._write_turn(True), self._immediate_engine.begin() as connection:
                yield connection
        except SQLAlchemyError as exc:
            raise storage_error(exc, self.url, action) from exc

    def write_alone(
        self, sql: str, parameters: Sequence[Any], action: str = "database error"
    ) -> list[tuple[Any, ...]]:
        """SQLite: run ONE writing statement as its own transaction, in this process's turn at
        the write gate, and return the rows it returned (``RETURNING``; none otherwise);
        StorageError (its message starting with ``action``) if it fails.

        The statement runs on the driver in autocommit mode: SQLite takes the write lock and
        commits within the one call, during which the driver lets other threads run, so the
        lock is never held while this thread waits to run Python again (a ``BEGIN``, the
        statements and ``COMMIT`` are several such waits behind busy request threads). Only
        constants may go into ``sql``; values go in ``parameters``. Other databases: use
        :meth:`write_connection`.
        """
        with self._driver(action) as driver:
            return driver.execute(sql, parameters).fetchall()

    @contextmanager
    def driver_transaction(self, action: str = "database error") -> Iterator[sqlite3.Connection]:
        """SQLite: the driver's connection in one writing transaction (``BEGIN IMMEDIATE``, in
        this process's turn at the write gate), committed at the end of the block and rolled
        back if it raises; StorageError (its message starting with ``action``) if the
        database fails.

        For the few writes on a SOAP call's path (the event outbox), where SQLAlchemy's cost
        per statement (~20 us) is most of the call's database time. The statements take
        driver values (see :func:`provider.db.driver_rows.DriverInsert`); only constants go
        into their text. Other databases: use :meth:`write_connection`.
        """
        with self._driver(action) as driver:
            driver.execute("BEGIN IMMEDIATE")
            try:
                yield driver
            except BaseException:
                driver.rollback()
                raise
            driver.commit()

    @contextmanager
    def pipeline_transaction(
        self, action: str = "database error", *, timeout_ms: int = PIPELINE_STATEMENT_TIMEOUT_MS
    ) -> Iterator[psycopg.Connection[Any]]:
        """PostgreSQL: the driver's connection (psycopg) in pipeline mode, in one transaction
        committed at the end of the block and rolled back if it raises; StorageError (its
        message starting with ``action``) if the database fails or a statement runs longer
        than ``timeout_ms`` (waiting for a lock another transaction holds, say).

        In pipeline mode statements are sent without waiting for their results: a round trip
        is paid only where a result is read (``fetchone``) and at the ``COMMIT``, which goes
        with the statements queued before it. For the outbox on a SOAP call's path, where each
        round trip to a database on another host is time SmarterTrack waits. The connection is
        the pool's (pre-pinged at checkout); statements take driver values (see
        :class:`provider.db.driver_rows.DriverInsert`) and only constants go into their text.
        Check :attr:`supports_pipeline` first; SQLite: use :meth:`driver_transaction`.
        """
        if not self.is_postgresql:
            raise TypeError("pipeline mode is PostgreSQL's; use driver_transaction on SQLite")
        import psycopg  # a PostgreSQL deployment's module only

        try:
            connection = self.engine.raw_connection()
            try:
                driver = cast("psycopg.Connection[Any]", connection.driver_connection)
                if driver.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    driver.rollback()  # never after the pool's reset: do not join one
                # BEGIN and COMMIT as this block's own statements: psycopg waits for the server
                # after each of those it sends itself (a round trip each).
                autocommit, driver.autocommit = driver.autocommit, True
                try:
                    with driver.pipeline():
                        driver.execute("BEGIN")
                        # This transaction's deadline (SET takes no parameters; set_config does).
                        driver.execute("SELECT set_config('statement_timeout', %s, true)", (str(timeout_ms),))
                        yield driver
                        driver.execute("COMMIT")  # sent with the statements still queued
                finally:
                    _hand_back(connection, driver, autocommit)  # rolled back if the block failed
            finally:
                connection.close()  # back to the pool (or discarded when invalidated)
        except psycopg.Error as exc:
            wrapped = _as_sqlalchemy(exc, psycopg.Error)
            raise storage_error(wrapped, self.url, action) from wrapped
        except SQLAlchemyError as exc:  # checking a connection out of the pool
            raise storage_error(exc, self.url, action) from exc

    @property
    def supports_pipeline(self) -> bool:
        """Whether :meth:`pipeline_transaction` can run here: PostgreSQL through a libpq with
        pipeline mode (14 or newer; psycopg's binary package brings one)."""
        if not self.is_postgresql:
            return False
        import psycopg

        return bool(psycopg.Pipeline.is_supported())

    @contextmanager
    def _driver(self, action: str) -> Iterator[sqlite3.Connection]:
        """SQLite: a connection of the writers' pool, as the driver's object, with no
        transaction open, in this process's turn at the write gate; the driver's and the
        pool's errors as StorageError."""
        if not self._sqlite:
            raise TypeError("the SQLite driver's connection is for SQLite; use write_connection")
        try:
            with self._write_turn(True):
                # The writers' pool: one connection in turn (the gate), one statement cache.
                connection = self._immediate_engine.raw_connection()
                try:
                    driver = cast(sqlite3.Connection, connection.driver_connection)
                    if driver.in_transaction:  # never after the pool's reset: do not join one
                        driver.rollback()
                    yield driver
                finally:
                    connection.close()  # back to the pool
        except sqlite3.Error as exc:
            wrapped = _as_sqlalchemy(exc, sqlite3.Error)
            raise storage_error(wrapped, self.url, action) from wrapped
        except SQLAlchemyError as exc:  # checking a connection out of the pool
            raise storage_error(exc, self.url, action) from exc

    def _write_turn(self, immediate: bool) -> AbstractContextManager[None]:
        """SQLite: this process's turn at the write lock (see :mod:`provider.db.write_gate`)."""
        if not immediate or self._gate_path is None:
            return nullcontext()
        return _gate_turn(write_gate.gate_for(self._gate_path), self.url)

    def ping(self) -> bool:
        """Whether the database answers a trivial query (for /readyz)."""
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            log.warning(
                "database ping failed", extra={"event": "db.ping_failed", "error": type(exc).__name__}
            )
            return False
        return True

    def dispose(self) -> None:
        self.engine.dispose()
        self._immediate_engine.dispose()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.dispose()
