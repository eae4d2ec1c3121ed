"""Apply the Alembic migrations in ``migrations/`` programmatically."""

from __future__ import annotations

from collections.abc import Callable

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy.exc import SQLAlchemyError

from provider.db.session import create_db_engine, normalize_url, storage_error
from provider.errors import StorageError
from provider.resources import MIGRATIONS_DIR


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Alembic's Config uses ConfigParser interpolation: escape '%' in passwords.
    config.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at ``url`` to ``revision``. Safe to run repeatedly."""
    _migrate(command.upgrade, url, revision, "migration failed")


def downgrade(url: str, revision: str) -> None:
    """Take the database at ``url`` back to ``revision``."""
    _migrate(command.downgrade, url, revision, "downgrade failed")


def _migrate(step: Callable[[Config, str], None], url: str, revision: str, failed: str) -> None:
    """Run the Alembic ``step`` to ``revision``; its errors become StorageError(``failed``: ...)."""
    try:
        step(alembic_config(url), revision)
    except CommandError as exc:
        raise StorageError(f"{failed}: {exc}") from exc
    except SQLAlchemyError as exc:
        raise storage_error(exc, url, failed) from exc


def pending(url: str) -> bool:
    """Whether the database is behind the newest migration."""
    script = ScriptDirectory.from_config(alembic_config(url))
    engine = create_db_engine(url)
    try:
        with engine.connect() as conn:
            current = set(MigrationContext.configure(conn).get_current_heads())
    except SQLAlchemyError as exc:
        raise storage_error(exc, url) from exc
    finally:
        engine.dispose()
    return current != set(script.get_heads())
