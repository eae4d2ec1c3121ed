"""Every schema change is a migration: upgrade, compare with the models, downgrade, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from provider.db import metadata
from provider.db.migrate import downgrade, pending, upgrade
from provider.db.session import create_db_engine


def test_models_match_migrations(database_url: str) -> None:
    assert not pending(database_url)
    engine = create_db_engine(database_url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)
    finally:
        engine.dispose()
    assert diff == []


def test_downgrade_to_base_and_back(database_url: str) -> None:
    downgrade(database_url, "base")
    engine = create_db_engine(database_url)
    try:
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    finally:
        engine.dispose()
    upgrade(database_url)
    assert not pending(database_url)
    engine = create_db_engine(database_url)
    try:
        assert set(metadata.tables) <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_0004_normalises_local_usernames_and_disables_look_alike_duplicates(database_url: str) -> None:
    downgrade(database_url, "0003_events")
    users = sa.table(
        "auth_local_users",
        *(sa.column(name) for name in ("id", "username_key", "username", "password_hash", "enabled")),
        sa.column("groups", sa.JSON()),
        *(
            sa.column(name, sa.DateTime(timezone=True))
            for name in ("created_at", "updated_at", "password_changed_at")
        ),
    )
    now = datetime.now(UTC)
    fullwidth = "\uff41\uff4c\uff49\uff43\uff45"  # alice
    old_rows = [(1, "Alice"), (2, fullwidth), (3, "Bob"), (4, "\u24b7ob\u2003")]  # enclosed B, em space
    engine = create_db_engine(database_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.insert(users),
                [
                    {
                        "id": user_id,
                        "username_key": name.strip().casefold(),  # the key before 0004
                        "username": name,
                        "password_hash": "$scrypt$x",
                        "enabled": True,
                        "groups": [],
                        "created_at": now,
                        "updated_at": now,
                        "password_changed_at": now,
                    }
                    for user_id, name in old_rows
                ],
            )
        upgrade(database_url)
        with engine.connect() as conn:
            rows = conn.execute(
                sa.select(users.c.id, users.c.username, users.c.username_key, users.c.enabled).order_by(
                    users.c.id
                )
            ).all()
        assert [tuple(row) for row in rows] == [
            (1, "Alice", "alice", True),
            (2, "alice", "conflict:2:alice", False),
            (3, "Bob", "bob", True),
            (4, "Bob", "conflict:4:bob", False),
        ]
        downgrade(database_url, "0003_events")  # and back, without tripping the unique key
        upgrade(database_url)
    finally:
        engine.dispose()


def test_0007_keeps_versions_and_a_baseline_for_rule_sets_from_before(database_url: str) -> None:
    from provider.db.session import Database
    from provider.rules import versions
    from provider.rules.loader import parse_rules
    from provider.rules.store import RuleStore

    rules = parse_rules("rules:\n  - {name: only, method: StartChat, then: {allow: false}}\n")
    database = Database(database_url)
    try:
        RuleStore(database).import_rules(rules, replace=False, actor="ann", command="test")
        database.dispose()
        downgrade(database_url, "0006_journal")
        engine = create_db_engine(database_url)
        try:
            inspector = inspect(engine)
            assert "rule_set_snapshots" not in inspector.get_table_names()
            assert "rule_errors" not in {c["name"] for c in inspector.get_columns("events")}
        finally:
            engine.dispose()
        upgrade(database_url)
        # Version 1 was made before snapshots: the next change keeps it as the baseline.
        assert versions.list_versions(database) == []
        RuleStore(database).set_enabled("only", False, actor="bob", command="test")
        kept = versions.list_versions(database)
        assert [(v.version, v.action, v.actor) for v in kept] == [
            (2, "disable", "bob"),
            (1, "baseline", "(unknown)"),
        ]
        assert parse_rules(versions.content_of(database, 1)) == rules
    finally:
        database.dispose()


def test_0008_adds_console_roles_and_keeps_existing_users_out_of_the_console(database_url: str) -> None:
    downgrade(database_url, "0007_rule_versions")
    now = datetime.now(UTC)
    users = sa.table(
        "auth_local_users",
        *(sa.column(name) for name in ("id", "username_key", "username", "password_hash", "enabled")),
        sa.column("groups", sa.JSON()),
        *(
            sa.column(name, sa.DateTime(timezone=True))
            for name in ("created_at", "updated_at", "password_changed_at")
        ),
    )
    engine = create_db_engine(database_url)
    try:
        assert "console_role" not in {c["name"] for c in inspect(engine).get_columns("auth_local_users")}
        with engine.begin() as conn:
            conn.execute(
                users.insert().values(
                    id=1,
                    username_key="old",
                    username="old",
                    password_hash="x",
                    enabled=True,
                    groups=[],
                    created_at=now,
                    updated_at=now,
                    password_changed_at=now,
                )
            )
    finally:
        engine.dispose()
    upgrade(database_url)
    engine = create_db_engine(database_url)
    try:
        with engine.connect() as conn:
            role = conn.execute(
                sa.text("SELECT console_role FROM auth_local_users WHERE id = 1")
            ).scalar_one()
        assert role is None
    finally:
        engine.dispose()
    downgrade(database_url, "0007_rule_versions")
    engine = create_db_engine(database_url)
    try:
        assert "console_role" not in {c["name"] for c in inspect(engine).get_columns("auth_local_users")}
    finally:
        engine.dispose()
    upgrade(database_url)


def test_0009_adds_and_removes_the_template_and_variable_tables(database_url: str) -> None:
    downgrade(database_url, "0007_rule_versions")
    engine = create_db_engine(database_url)
    try:
        tables = set(inspect(engine).get_table_names())
        assert "rules" in tables
        assert not {"message_templates", "global_variables"} & tables
        upgrade(database_url)
        assert {"message_templates", "global_variables"} <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
