"""Migrations, and the check that none is pending, run in a forked child process.

``serve``'s supervisor and gunicorn's master migrate before the web workers start, and a
plain-gunicorn worker checks the schema when it loads the application; all of them would
otherwise import Alembic (and Mako) for good, and the master would hand them to every web
worker it forks. Here the work runs in a child of the caller that reports a
:class:`~provider.errors.ProviderError` back through a pipe, to be raised again in the
caller with the same class and message, and then leaves. A child that does not finish within
:data:`CHILD_TIMEOUT` is killed (a StorageError says so).
"""

from __future__ import annotations

import os
import select
import signal
from collections.abc import Callable
from typing import Final

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from provider import errors
from provider.db.session import create_db_engine, storage_error
from provider.errors import ConfigError, ProviderError, StorageError

# pg_advisory_lock key held while migrating ("st-provider migrate", as a bigint).
MIGRATION_LOCK_KEY: Final = 0x5354_5052_4D49_4752
MIGRATION_LOCK_TIMEOUT: Final = "120s"
#: How long the child running the migrations (or their check) may take in all.
CHILD_TIMEOUT: Final = 600.0


def apply_migrations(database_url: str) -> None:
    """Bring the database to the newest migration, once, safely across instances.

    The migration runs in a forked child (:func:`_in_child`): this process -- the
    supervisor, or gunicorn's master, whose modules every web worker inherits -- never
    imports Alembic. Raises StorageError when the database cannot be reached or the
    upgrade fails (the child's error, of the same class and with the same message).
    """
    _in_child(_migrate, database_url)


def require_migrated(database_url: str) -> None:
    """Raise ConfigError when the database is behind the newest migration (checked in a forked
    child, like :func:`apply_migrations`, so the caller never imports Alembic)."""
    _in_child(_check_migrated, database_url)


def _check_migrated(database_url: str) -> None:
    from provider.db.migrate import pending  # Alembic: only in the checking child

    if pending(database_url):
        raise ConfigError("the database is not at the newest migration: run `st-provider db upgrade`")


def _migrate(database_url: str) -> None:
    """The migration itself: on PostgreSQL under an advisory lock."""
    from provider.db.migrate import upgrade  # Alembic: only in the migrating child

    engine = create_db_engine(database_url)
    try:
        if engine.dialect.name != "postgresql":
            upgrade(database_url)
            return
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f"SET lock_timeout = '{MIGRATION_LOCK_TIMEOUT}'"))
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            try:
                upgrade(database_url)
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
    except SQLAlchemyError as exc:
        raise storage_error(exc, database_url, "cannot migrate the database") from exc
    finally:
        engine.dispose()


def _in_child(func: Callable[[str], None], *args: str) -> None:
    """Run ``func(*args)`` in a forked child and wait for it; a ProviderError it raises is raised
    here again (same class, same message), anything else as a StorageError naming its type.

    The child leaves with ``os._exit`` (no exit handlers, no buffers of this process flushed).
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, then leave without running this process's exit handlers
        os.close(read_end)
        status = 0
        try:
            func(*args)
        except ProviderError as exc:
            os.write(write_end, f"{type(exc).__name__}\n{exc}".encode())
            status = 1
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises it
            os.write(
                write_end, f"StorageError\ndatabase migration check failed: {type(exc).__name__}".encode()
            )
            status = 1
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        ready, _, _ = select.select([pipe], [], [], CHILD_TIMEOUT)
        report = pipe.read().decode(errors="replace") if ready else None
    if report is None:  # the child hangs: it must not hold the server's start for ever
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise StorageError(f"database migration did not finish within {CHILD_TIMEOUT:.0f} s")
    _, status = os.waitpid(pid, 0)
    if not report and os.waitstatus_to_exitcode(status) == 0:
        return
    name, _, message = report.partition("\n")
    error = getattr(errors, name, None)
    if not (isinstance(error, type) and issubclass(error, ProviderError)):
        error, message = StorageError, message or f"database migration check failed: exit status {status}"
    raise error(message)
