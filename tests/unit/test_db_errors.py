"""Database errors leave provider.db with their cause and without passwords, SQL or values.

The driver errors below carry libpq's and SQLite's own message texts (the cases the
integration tests cannot provoke: the test PostgreSQL trusts every local user, and
the tests run as root, for whom every file is writable).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import event, select, text
from sqlalchemy.exc import IntegrityError, OperationalError

from provider.db.journal import CallJournalRecord
from provider.db.migrate import upgrade
from provider.db.session import (
    Database,
    create_db_engine,
    describe_url,
    parse_url,
    sqlite_file,
    storage_error,
)
from provider.errors import ConfigError, DatabaseMissing, StorageError

PG = "postgresql://st:Sup3r-secret@db.example.internal:5433/st_provider"


def pg_error(text: str) -> OperationalError:
    return OperationalError("SELECT 1", {}, psycopg.OperationalError(text))


@pytest.mark.parametrize(
    ("driver_text", "cause"),
    [
        (
            'connection failed: connection to server at "10.0.0.5", port 5433 failed: FATAL:  '
            'password authentication failed for user "st"',
            "authentication failed for user 'st' at db.example.internal:5433 (check the user and password)",
        ),
        (
            'connection failed: connection to server at "10.0.0.5", port 5433 failed: fe_sendauth: '
            "no password supplied",
            "authentication failed for user 'st'",
        ),
        ("connection failed: timeout expired", "no answer from db.example.internal:5433 within 10 s"),
        (
            'connection failed: FATAL:  no pg_hba.conf entry for host "10.0.0.9", user "st"',
            "refuses connections from this host",
        ),
        ("server closed the connection unexpectedly", "server closed the connection unexpectedly"),
        (
            "canceling statement due to lock timeout",
            "gave up waiting for a lock that another transaction at db.example.internal:5433 holds",
        ),
        (
            "canceling statement due to statement timeout",
            "a statement at db.example.internal:5433 ran past its deadline",
        ),
    ],
)
def test_postgresql_causes(driver_text: str, cause: str) -> None:
    error = storage_error(pg_error(driver_text), PG)
    assert type(error) is StorageError
    assert str(error).startswith("database error: ") and cause in str(error)
    assert "Sup3r-secret" not in str(error)


def test_a_driver_message_holding_the_password_is_scrubbed() -> None:
    error = storage_error(pg_error('invalid connection option near "Sup3r-secret"'), PG)
    assert "Sup3r-secret" not in str(error) and "***" in str(error)


def test_a_missing_database_is_database_missing() -> None:
    error = storage_error(pg_error('FATAL:  database "st_provider" does not exist'), PG, "migration failed")
    assert isinstance(error, DatabaseMissing)
    assert str(error) == (
        "migration failed: database 'st_provider' does not exist at db.example.internal:5433 "
        "(create it, then run `st-provider db upgrade`)"
    )
    unknown_user = storage_error(pg_error('FATAL:  role "st" does not exist'), PG)
    assert type(unknown_user) is StorageError


def test_sqlite_causes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}"

    def sqlite_error(text: str, at: str = url) -> StorageError:
        return storage_error(OperationalError("INSERT", {}, sqlite3.OperationalError(text)), at)

    assert str(sqlite_error("attempt to write a readonly database")) == (
        f"database error: the SQLite file {tmp_path / 'p.db'} (or its directory) is not writable by this user"
    )
    assert "stayed locked by another process for 30 s" in str(sqlite_error("database is locked"))
    missing = sqlite_error("unable to open database file", f"sqlite:///{tmp_path / 'gone' / 'p.db'}")
    assert isinstance(
        missing, DatabaseMissing
    ) and f"the directory {tmp_path / 'gone'} does not exist" in str(missing)


def test_other_errors_are_named_by_type_only() -> None:
    """Their text holds SQL and parameter values (a password hash, a user's data)."""
    error = storage_error(
        IntegrityError("INSERT INTO users VALUES (?)", ("secret-value",), Exception("UNIQUE failed")), PG
    )
    assert str(error) == "database error: IntegrityError"


def test_urls_for_people_hide_the_password_and_resolve_sqlite_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert describe_url(PG) == "postgresql+psycopg://st:***@db.example.internal:5433/st_provider"
    assert describe_url("sqlite:///st-provider.db") == f"sqlite:///{tmp_path / 'st-provider.db'}"
    assert sqlite_file("sqlite:///st-provider.db") == tmp_path / "st-provider.db"
    assert sqlite_file("sqlite://") is None and sqlite_file(PG) is None


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite://st.db", "is not a SQLite URL: use sqlite:///relative/path.db"),
        ("mysql://u:Sup3r-secret@h/db", "unsupported database 'mysql'"),
        ("not a url Sup3r-secret", "is not a database URL"),
    ],
)
def test_malformed_urls_are_config_errors_that_do_not_repeat_them(url: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_url(url)
    assert message in str(info.value) and "Sup3r-secret" not in str(info.value)


def test_a_sqlite_file_locked_by_another_process_is_a_storage_error_saying_so(tmp_path: Path) -> None:
    """``BEGIN IMMEDIATE`` (run on the driver's connection) that cannot get the write lock:
    a StorageError naming the lock, for Core transactions and ORM sessions alike."""
    path = tmp_path / "locked.db"
    upgrade(f"sqlite:///{path}")
    database = Database(f"sqlite:///{path}")
    # Wait 50 ms for the lock instead of the service's 30 s (after the provider's own PRAGMAs).
    for engine in (database.engine, database.write_engine):
        event.listen(engine, "connect", lambda conn, _record: conn.execute("PRAGMA busy_timeout=50"))
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        locked = "stayed locked by another process"
        with pytest.raises(StorageError, match=locked) as core, database.write_connection():
            pass
        with pytest.raises(StorageError, match=locked) as orm, database.session(immediate=True) as session:
            session.execute(text("SELECT 1"))
        with pytest.raises(StorageError, match=f"^journal write failed: .*{locked}") as alone:
            database.write_alone("DELETE FROM call_journal", (), "journal write failed")
        with (
            pytest.raises(StorageError, match=f"^database error: .*{locked}") as on_driver,
            database.driver_transaction(),
        ):
            pass
        for raised in (core.value, orm.value, alone.value, on_driver.value):
            assert isinstance(raised.__cause__, OperationalError)
            assert isinstance(raised.__cause__.orig, sqlite3.OperationalError)
        holder.execute("ROLLBACK")
        with database.write_connection() as connection:  # the lock is free again
            assert connection.execute(text("SELECT 1")).scalar() == 1
    finally:
        holder.close()
        database.dispose()


def test_sqlite_transactions_begin_on_the_driver_deferred_for_reads_and_immediate_for_writers(
    tmp_path: Path,
) -> None:
    """Every SQLite transaction is one driver transaction (reads see one snapshot), a writer's
    holds the write lock from its first statement on, and no connection event is registered
    (SQLAlchemy would then dispatch execution events around every statement)."""
    path = tmp_path / "begin.db"
    upgrade(f"sqlite:///{path}")
    database = Database(f"sqlite:///{path}")
    other = sqlite3.connect(path, isolation_level=None, timeout=0.05)
    try:
        with database.session() as session:
            session.execute(text("SELECT 1"))
            driver = session.connection().connection.driver_connection
            assert driver is not None and driver.in_transaction
            other.execute("BEGIN IMMEDIATE")  # a deferred reader does not hold the write lock
            other.execute("ROLLBACK")
        with database.write_connection(), pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
        with database.session(immediate=True) as session:
            session.execute(text("SELECT 1"))  # a session begins at its first statement
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
        other.execute("BEGIN IMMEDIATE")  # released at the end of each block
        other.execute("ROLLBACK")
        assert not database.engine._has_events and not database.write_engine._has_events
    finally:
        other.close()
        database.dispose()


def test_write_alone_commits_one_statement_and_leaves_no_transaction_open(tmp_path: Path) -> None:
    """SQLite's autocommit: the statement is stored when the call returns (another connection
    sees it), the pooled connection goes back outside any transaction; not for PostgreSQL."""
    path = tmp_path / "alone.db"
    upgrade(f"sqlite:///{path}")
    database = Database(f"sqlite:///{path}")
    other = sqlite3.connect(path, isolation_level=None, timeout=0.05)
    try:
        insert = (
            "INSERT INTO call_journal (at, operation, request_id, duration_ms, outcome, variables, matched) "
            "VALUES (?, ?, ?, ?, ?, '[]', '[]')"
        )
        database.write_alone(insert, ("2026-11-30 20:00:00.000000", "StartTicket", "alone-1", 1.0, "ok"))
        assert other.execute("SELECT request_id FROM call_journal").fetchall() == [("alone-1",)]
        other.execute("BEGIN IMMEDIATE")  # the write lock is free again
        other.execute("ROLLBACK")
        with database.write_engine.connect() as connection:  # the writers' pool, one connection
            driver = connection.connection.driver_connection
            assert driver is not None and not driver.in_transaction
        with pytest.raises(StorageError, match=r"^journal write failed: IntegrityError"):
            database.write_alone(insert, (None, None, None, None, None), "journal write failed")
    finally:
        other.close()
        database.dispose()
    with pytest.raises(TypeError):
        Database("postgresql+psycopg://postgres@127.0.0.1:5432/test").write_alone("SELECT 1", ())


def test_driver_transaction_holds_the_write_lock_commits_at_the_end_and_rolls_back_on_error(
    tmp_path: Path,
) -> None:
    """One ``BEGIN IMMEDIATE`` transaction on the driver: the write lock from the start, the
    statements stored together at the end, none of them when the block raises; the driver's
    errors as StorageError; the connection back in the pool outside any transaction."""
    path = tmp_path / "driver.db"
    upgrade(f"sqlite:///{path}")
    database = Database(f"sqlite:///{path}")
    other = sqlite3.connect(path, isolation_level=None, timeout=0.05)
    insert = (
        "INSERT INTO call_journal (at, operation, request_id, duration_ms, outcome, variables, matched) "
        "VALUES ('2026-11-30 20:00:00.000000', 'StartTicket', ?, 1.0, 'ok', '[]', '[]')"
    )
    try:
        with database.driver_transaction() as driver:
            driver.execute(insert, ("kept-1",))
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
            driver.execute(insert, ("kept-2",))
            assert other.execute("SELECT count(*) FROM call_journal").fetchone() == (0,)
        with pytest.raises(KeyError), database.driver_transaction() as driver:
            driver.execute(insert, ("gone",))
            raise KeyError("the caller's own error")
        with (
            pytest.raises(StorageError, match=r"^event write: IntegrityError"),
            database.driver_transaction("event write") as driver,
        ):
            driver.execute(insert, ("gone-too",))
            driver.execute(insert, (None,))  # request_id is NOT NULL
        rows = other.execute("SELECT request_id FROM call_journal ORDER BY id").fetchall()
        assert rows == [("kept-1",), ("kept-2",)]
        with database.write_engine.connect() as connection:
            driver = connection.connection.driver_connection
            assert driver is not None and not driver.in_transaction
    finally:
        other.close()
        database.dispose()
    with (
        pytest.raises(TypeError),
        Database("postgresql+psycopg://postgres@127.0.0.1:5432/test").driver_transaction(),
    ):
        pass


_JOURNAL_INSERT_PG = (
    "INSERT INTO call_journal (at, operation, request_id, duration_ms, outcome, variables, matched) "
    "VALUES (now(), 'StartTicket', %s, 1.0, 'ok', '[]', '[]')"
)


def _request_ids(database: Database) -> list[str]:
    with database.engine.connect() as connection:
        return list(connection.exec_driver_sql("SELECT request_id FROM call_journal ORDER BY id").scalars())


@pytest.mark.postgres
def test_pipeline_transaction_commits_at_the_end_and_rolls_back_on_error(postgres_url: str) -> None:
    """PostgreSQL's pipeline: the block's statements stored together when it ends, none of them
    when it raises; the driver's errors as StorageError; the connection back in the pool
    outside any transaction, out of pipeline mode and out of autocommit."""
    database = Database(postgres_url)
    try:
        assert database.supports_pipeline
        with database.pipeline_transaction() as driver:
            cursor = driver.cursor()
            cursor.execute(_JOURNAL_INSERT_PG, ("kept-1",))
            assert cursor.execute("SELECT count(*) FROM call_journal").fetchone() == (1,)  # its own view
            cursor.execute(_JOURNAL_INSERT_PG, ("kept-2",))
        with pytest.raises(KeyError), database.pipeline_transaction() as driver:
            driver.cursor().execute(_JOURNAL_INSERT_PG, ("gone",))
            raise KeyError("the caller's own error")
        with (
            pytest.raises(StorageError, match=r"^event write: IntegrityError"),
            database.pipeline_transaction("event write") as driver,
        ):
            driver.cursor().execute(_JOURNAL_INSERT_PG, ("gone-too",))
            driver.cursor().execute(_JOURNAL_INSERT_PG, (None,))  # request_id is NOT NULL
        assert _request_ids(database) == ["kept-1", "kept-2"]
        with database.engine.connect() as connection:
            pooled = connection.connection.driver_connection
            assert isinstance(pooled, psycopg.Connection)
            assert pooled.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
            assert pooled.info.pipeline_status == psycopg.pq.PipelineStatus.OFF
            assert pooled.autocommit is False  # as the pool handed it out (BEGIN was the block's own)
    finally:
        database.dispose()
    with pytest.raises(TypeError), Database("sqlite:///:memory:").pipeline_transaction():
        pass
    assert Database("sqlite:///:memory:").supports_pipeline is False


@pytest.mark.postgres
def test_a_pipeline_whose_connection_dies_is_a_storage_error_and_the_connection_is_dropped(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The server ends the connection during the block: StorageError, and the connection is
    dropped at once (the pool does not try to reset it, logging an error with a traceback) and
    never handed out again (the next transaction gets a working one)."""
    caplog.set_level(logging.DEBUG, logger="sqlalchemy.pool")
    database = Database(postgres_url)
    try:
        with (
            pytest.raises(StorageError, match=r"^event write: ") as raised,
            database.pipeline_transaction("event write") as driver,
        ):
            cursor = driver.cursor()
            cursor.execute(_JOURNAL_INSERT_PG, ("lost",))
            (backend,) = cursor.execute("SELECT pg_backend_pid()").fetchone() or (None,)
            with psycopg.connect(
                postgres_url.replace("postgresql+psycopg", "postgresql"), autocommit=True
            ) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (backend,))
            cursor.execute(_JOURNAL_INSERT_PG, ("after",)).fetchone()
        assert isinstance(getattr(raised.value.__cause__, "orig", None), psycopg.OperationalError)
        with database.pipeline_transaction() as driver:
            driver.cursor().execute(_JOURNAL_INSERT_PG, ("next",))
        assert _request_ids(database) == ["next"]
        assert [
            r.getMessage()
            for r in caplog.records
            if r.name.startswith("sqlalchemy.pool") and r.levelno >= logging.ERROR
        ] == []
    finally:
        database.dispose()


@pytest.mark.postgres
def test_a_pipeline_statement_waiting_past_its_deadline_is_a_storage_error(postgres_url: str) -> None:
    """A lock held by another transaction: the pipeline's statement gives up after its timeout
    (StorageError, nothing stored) instead of waiting for as long as the other holds it."""
    database = Database(postgres_url)
    try:
        with psycopg.connect(postgres_url) as holder:
            holder.execute("LOCK TABLE call_journal IN ACCESS EXCLUSIVE MODE")
            release = threading.Timer(10, holder.rollback)  # without a deadline: stored after 10 s
            release.start()
            started = time.monotonic()
            try:
                with (
                    pytest.raises(StorageError, match=r"^event write: ") as raised,
                    database.pipeline_transaction("event write", timeout_ms=200) as driver,
                ):
                    driver.cursor().execute(_JOURNAL_INSERT_PG, ("late",))
                waited = time.monotonic() - started
            finally:
                release.cancel()
                holder.rollback()
        assert isinstance(getattr(raised.value.__cause__, "orig", None), psycopg.errors.QueryCanceled)
        assert waited < 10  # the deadline, not the holder, ended the wait
        assert _request_ids(database) == []
        with database.pipeline_transaction() as driver:  # the next one has the default deadline
            driver.cursor().execute(_JOURNAL_INSERT_PG, ("next",))
            (timeout,) = driver.cursor().execute("SHOW statement_timeout").fetchone() or ("",)
        assert timeout == "30s"
    finally:
        database.dispose()


@pytest.mark.postgres
def test_a_statement_waiting_for_a_lock_gives_up_after_the_lock_timeout(postgres_url: str) -> None:
    """A lock held by a transaction that does not end: a writer and a locking read give up after
    the lock timeout (StorageError saying so, nothing stored), every session of the service has
    it, and a migration's engine too (default: 30 s, as SQLite's busy timeout)."""
    database = Database(postgres_url, lock_timeout_ms=200)
    try:
        with psycopg.connect(postgres_url) as holder:
            holder.execute("LOCK TABLE call_journal IN ACCESS EXCLUSIVE MODE")
            release = threading.Timer(10, holder.rollback)  # without a lock timeout: stored after 10 s
            release.start()
            started = time.monotonic()
            try:
                with (
                    pytest.raises(
                        StorageError, match=r"^journal write: gave up waiting for a lock"
                    ) as raised,
                    database.write_connection("journal write") as connection,
                ):
                    connection.exec_driver_sql(_JOURNAL_INSERT_PG, ("late",))
                with pytest.raises(StorageError, match="lock_timeout"), database.session() as session:
                    session.execute(select(CallJournalRecord.id).with_for_update()).all()
                waited = time.monotonic() - started
            finally:
                release.cancel()
                holder.rollback()
        assert isinstance(getattr(raised.value.__cause__, "orig", None), psycopg.errors.LockNotAvailable)
        assert waited < 10  # the lock timeout, not the holder, ended both waits
        assert _request_ids(database) == []
        with database.engine.connect() as connection:  # the pool's rollback kept the setting
            assert connection.exec_driver_sql("SHOW lock_timeout").scalar_one() == "200ms"
    finally:
        database.dispose()
    for engine in (Database(postgres_url).engine, create_db_engine(postgres_url)):
        try:
            with engine.connect() as connection:
                assert connection.exec_driver_sql("SHOW lock_timeout").scalar_one() == "30s"
        finally:
            engine.dispose()
