"""DriverInsert: an INSERT's text and its driver values, as SQLAlchemy's types convert them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import cast

import pytest
from sqlalchemy import Table
from sqlalchemy.dialects import sqlite

from provider.db.driver_rows import DriverInsert
from provider.db.events import EventDedup

TABLE = cast(Table, EventDedup.__table__)
COLUMNS = ("fingerprint", "event_id", "expires_at")


def test_row_converts_each_value_by_its_column_type_and_the_text_binds_them_all() -> None:
    insert = DriverInsert(TABLE, COLUMNS, sqlite.dialect(), returning="event_id")
    assert insert.sql == (
        "INSERT INTO event_dedup (fingerprint, event_id, expires_at) VALUES (?, ?, ?) RETURNING event_id"
    )
    when = datetime(2026, 11, 30, 23, 0, 1, 250, tzinfo=UTC)
    row = insert.row({"expires_at": when, "event_id": 7, "fingerprint": "f"})
    assert row == ("f", 7, "2026-11-30 23:00:01.000250")


def test_row_refuses_a_missing_or_an_extra_column() -> None:
    insert = DriverInsert(TABLE, COLUMNS, sqlite.dialect())
    when = datetime(2026, 11, 30, tzinfo=UTC)
    with pytest.raises(KeyError):
        insert.row({"fingerprint": "f", "event_id": 7})
    with pytest.raises(KeyError, match="repeats"):
        insert.row({"fingerprint": "f", "event_id": 7, "expires_at": when, "repeats": 1})
    with pytest.raises(KeyError):
        DriverInsert(TABLE, ("fingerprint", "no_such_column"), sqlite.dialect())
