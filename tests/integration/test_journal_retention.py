"""Retention on SQLite and PostgreSQL: old rows go in batches, recent and unfinished work stays,
``db purge --dry-run`` changes nothing, the delivery worker purges on its own."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select

from provider.db.events import DeliveryAttempt, DeliveryRecord, EventDedup, EventRecord
from provider.db.journal import CallJournalRecord
from provider.db.rules import RuleAudit
from provider.db.session import Database
from provider.events.worker import Worker
from provider.journal.retention import purge
from provider.settings import RetentionSettings, Settings
from tests.support import base_env, run_cli

NOW = datetime.now(UTC)
RETENTION = RetentionSettings(journal_days=7, journal_max_rows=1000, events_days=90, audit_days=365)


def _journal_rows(database: Database, count: int, age: timedelta) -> None:
    row = {
        "operation": "StartTicket",
        "request_id": "r",
        "client": "127.0.0.1",
        "duration_ms": 1.0,
        "outcome": "ok",
        "variables": [],
        "matched": [],
        "at": NOW - age,
    }
    with database.session() as session:
        session.execute(insert(CallJournalRecord), [row] * count)


def _event(database: Database, age: timedelta, status: str, key: str) -> None:
    at = NOW - age
    with database.session() as session:
        event = EventRecord(
            event_type=502000, arguments={}, variables=[], fingerprint=key, received_at=at, repeats=0
        )
        session.add(event)
        session.flush()
        session.add(EventDedup(fingerprint=key, event_id=event.id, expires_at=at))
        delivery = DeliveryRecord(
            event_id=event.id,
            rule="r",
            channel="c",
            params={},
            key=key,
            status=status,
            attempts=1,
            next_attempt_at=at,
            age_from=at,
            created_at=at,
            updated_at=at,
        )
        session.add(delivery)
        session.flush()
        session.add(
            DeliveryAttempt(delivery_id=delivery.id, number=1, started_at=at, duration=0.1, outcome="retry")
        )


def _audit(database: Database, age: timedelta) -> None:
    with database.session() as session:
        session.add(
            RuleAudit(
                created_at=NOW - age,
                actor="a",
                command="c",
                action="create",
                kind="rule",
                subject="s",
                version=1,
            )
        )


def _counts(database: Database) -> dict[str, int]:
    models: dict[str, Any] = {
        "call_journal": CallJournalRecord,
        "events": EventRecord,
        "deliveries": DeliveryRecord,
        "delivery_attempts": DeliveryAttempt,
        "event_dedup": EventDedup,
        "rule_audit": RuleAudit,
    }
    with database.session() as session:
        return {
            name: int(session.scalar(select(func.count()).select_from(m)) or 0) for name, m in models.items()
        }


def _fill(database: Database) -> None:
    _journal_rows(database, 25, timedelta(days=8))
    _journal_rows(database, 5, timedelta(hours=1))
    _event(database, timedelta(days=91), "delivered", "old-done")
    _event(database, timedelta(days=91), "pending", "old-pending")
    _event(database, timedelta(days=1), "delivered", "recent")
    _audit(database, timedelta(days=366))
    _audit(database, timedelta(days=1))


def test_purge_removes_old_rows_in_batches(database: Database) -> None:
    _fill(database)
    first = purge(database, RETENTION, now=NOW, batch_size=10, max_batches=1)
    assert first.removed["call_journal"] == 10  # one batch of ten
    assert _counts(database)["call_journal"] == 20
    rest = purge(database, RETENTION, now=NOW, batch_size=10)
    assert rest.removed["call_journal"] == 15
    removed = {t: first.removed[t] + rest.removed[t] for t in first.removed}
    assert removed == {
        "call_journal": 25,
        "events": 1,
        "event_dedup": 1,
        "deliveries": 1,
        "delivery_attempts": 1,
        "rule_audit": 1,
    }
    assert _counts(database) == {
        "call_journal": 5,
        "events": 2,  # the recent one, and the old one whose delivery is still pending
        "deliveries": 2,
        "delivery_attempts": 2,
        "event_dedup": 2,
        "rule_audit": 1,
    }
    assert purge(database, RETENTION, now=NOW).total == 0


def test_journal_max_rows_keeps_the_newest(database: Database) -> None:
    _journal_rows(database, 12, timedelta(hours=2))
    _journal_rows(database, 3, timedelta(minutes=1))
    report = purge(database, RetentionSettings(journal_max_rows=3), now=NOW, batch_size=5)
    assert report.removed["call_journal"] == 12
    with database.session() as session:
        ages = session.scalars(select(CallJournalRecord.at)).all()
    assert len(ages) == 3 and all(NOW - at < timedelta(minutes=2) for at in ages)


def test_db_purge_dry_run_changes_nothing_then_purge_removes(database: Database, database_url: str) -> None:
    _fill(database)
    before = _counts(database)
    env = base_env(database_url)
    dry = run_cli(["db", "purge", "--dry-run"], env)
    assert dry.returncode == 0, dry.stderr
    assert "would remove 30 rows" in dry.stdout and "call_journal: 25" in dry.stdout
    assert _counts(database) == before
    done = run_cli(["db", "purge"], env)
    assert done.returncode == 0, done.stderr
    assert "removed 30 rows" in done.stdout
    assert _counts(database)["call_journal"] == 5


def test_the_delivery_worker_purges(database: Database, database_url: str) -> None:
    _fill(database)
    settings = Settings.from_mapping({"database_url": database_url, "journal_days": "7"})
    worker = Worker(settings, database, clock=lambda: NOW)
    worker.run_once()
    assert _counts(database)["call_journal"] == 5
    worker.close()
