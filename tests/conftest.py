"""Fixtures shared by every test: databases (SQLite and PostgreSQL), migrated and fresh."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from provider.db.migrate import upgrade
from provider.db.session import Database
from tests.support import create_pg_database, drop_pg_database, pg_url

pytest_plugins = ["tests.fixtures.server", "tests.fixtures.slapd", "tests.fixtures.emulators"]


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A PostgreSQL database migrated to head once per test session, cloned by `postgres_url`."""
    name = create_pg_database()
    upgrade(pg_url(name))
    yield name
    drop_pg_database(name)


@pytest.fixture
def postgres_url(pg_template: str) -> Iterator[str]:
    """A fresh PostgreSQL database at the newest migration, dropped after the test."""
    name = create_pg_database(template=pg_template)
    yield pg_url(name)
    drop_pg_database(name)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite file database at the newest migration."""
    url = f"sqlite:///{tmp_path / 'provider.db'}"
    upgrade(url)
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    """A fresh, migrated database: the test runs once on SQLite and once on PostgreSQL."""
    name = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    return str(request.getfixturevalue(name))


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    db = Database(database_url)
    yield db
    db.dispose()
