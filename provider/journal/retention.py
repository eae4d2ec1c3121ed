"""Retention: the database must not grow without bound.

:func:`purge` removes, in small batches (one short transaction each):

* call journal rows older than ``journal_days``, then the oldest beyond ``journal_max_rows``;
* events older than ``events_days`` with their de-duplication window, deliveries and
  delivery attempts; an event with a delivery still ``pending`` or ``sending`` is kept;
* rules audit entries older than ``audit_days``;
* expired sign-in codes, once scrubbed from their deliveries
  (:func:`provider.comms.signin_scrub.purge_expired`; not counted in the report).

The delivery worker runs it at most once every :data:`PURGE_INTERVAL_SECONDS` with a
bounded number of batches (:class:`PurgeSchedule`); ``st-provider db purge [--dry-run]``
runs it by hand until nothing is left to remove (``--dry-run`` counts, removes nothing).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, delete, func, select
from sqlalchemy.orm import Session

from provider.comms.signin_scrub import purge_expired
from provider.db.events import DeliveryAttempt, DeliveryRecord, EventDedup, EventRecord
from provider.db.journal import CallJournalRecord
from provider.db.rules import RuleAudit
from provider.db.session import Database
from provider.errors import ProviderError
from provider.metrics import PURGED_ROWS
from provider.settings import RetentionSettings

log = logging.getLogger("provider.retention")

BATCH_SIZE = 1000
PURGE_INTERVAL_SECONDS = 60.0
#: batches per table and run when the worker purges (the CLI runs until done)
WORKER_MAX_BATCHES = 20
UNFINISHED = ("pending", "sending")
TABLES = ("call_journal", "events", "event_dedup", "deliveries", "delivery_attempts", "rule_audit")


@dataclass
class PurgeReport:
    """Rows removed (or, for a dry run, that would be removed) per table."""

    dry_run: bool = False
    removed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TABLES, 0))

    @property
    def total(self) -> int:
        return sum(self.removed.values())


def purge(
    database: Database,
    retention: RetentionSettings,
    *,
    now: datetime,
    dry_run: bool = False,
    batch_size: int = BATCH_SIZE,
    max_batches: int | None = None,
) -> PurgeReport:
    """Remove what ``retention`` no longer keeps (see the module docstring). Raises StorageError."""
    report = PurgeReport(dry_run=dry_run)
    journal_cutoff = now - timedelta(days=retention.journal_days)
    events_cutoff = now - timedelta(days=retention.events_days)
    audit_cutoff = now - timedelta(days=retention.audit_days)
    if dry_run:
        _count_all(
            database,
            retention,
            report,
            journal_cutoff=journal_cutoff,
            events_cutoff=events_cutoff,
            audit_cutoff=audit_cutoff,
        )
        return report
    limit = max_batches if max_batches is not None else 1_000_000_000

    def batches(step: Callable[[], int]) -> None:
        for _ in range(limit):
            if step() < batch_size:
                return

    batches(
        lambda: _delete_ids(database, report, CallJournalRecord, _old_journal(journal_cutoff, batch_size))
    )
    batches(lambda: _delete_excess_journal(database, report, retention.journal_max_rows, batch_size))
    batches(lambda: _delete_events(database, report, events_cutoff, batch_size))
    batches(lambda: _delete_ids(database, report, RuleAudit, _old_audit(audit_cutoff, batch_size)))
    batches(lambda: purge_expired(database, now, batch=batch_size))
    for table, count in report.removed.items():
        if count:
            PURGED_ROWS.labels(table).inc(count)
    if report.total:
        log.info("old rows purged", extra={"event": "retention.purged", **report.removed})
    return report


def _old_journal(cutoff: datetime, limit: int) -> Any:
    return (
        select(CallJournalRecord.id)
        .where(CallJournalRecord.at < cutoff)
        .order_by(CallJournalRecord.id)
        .limit(limit)
    )


def _old_audit(cutoff: datetime, limit: int) -> Any:
    return select(RuleAudit.id).where(RuleAudit.created_at < cutoff).order_by(RuleAudit.id).limit(limit)


def _old_events(cutoff: datetime) -> Any:
    unfinished = select(DeliveryRecord.id).where(
        DeliveryRecord.event_id == EventRecord.id, DeliveryRecord.status.in_(UNFINISHED)
    )
    return select(EventRecord.id).where(EventRecord.received_at < cutoff, ~unfinished.exists())


def _delete_ids(database: Database, report: PurgeReport, model: Any, ids_query: Any) -> int:
    with database.session() as session:
        ids = list(session.scalars(ids_query).all())
        if ids:
            session.execute(
                delete(model).where(model.id.in_(ids)).execution_options(synchronize_session=False)
            )
    report.removed[model.__tablename__] += len(ids)
    return len(ids)


def _delete_excess_journal(database: Database, report: PurgeReport, max_rows: int, batch_size: int) -> int:
    with database.session() as session:
        excess = int(session.scalar(select(func.count()).select_from(CallJournalRecord)) or 0) - max_rows
    if excess <= 0:
        return 0
    query = select(CallJournalRecord.id).order_by(CallJournalRecord.at, CallJournalRecord.id)
    removed = _delete_ids(database, report, CallJournalRecord, query.limit(min(excess, batch_size)))
    # a full batch asks for another one (while rows beyond the maximum remain)
    return batch_size if removed == batch_size and excess > batch_size else 0


def _deleted(session: Session, statement: Any) -> int:
    result = cast(CursorResult[Any], session.execute(statement.execution_options(synchronize_session=False)))
    return int(result.rowcount or 0)


def _delete_events(database: Database, report: PurgeReport, cutoff: datetime, batch_size: int) -> int:
    with database.session() as session:
        ids = list(session.scalars(_old_events(cutoff).order_by(EventRecord.id).limit(batch_size)).all())
        if not ids:
            return 0
        deliveries = select(DeliveryRecord.id).where(DeliveryRecord.event_id.in_(ids))
        counts = {
            "delivery_attempts": _deleted(
                session, delete(DeliveryAttempt).where(DeliveryAttempt.delivery_id.in_(deliveries))
            ),
            "deliveries": _deleted(session, delete(DeliveryRecord).where(DeliveryRecord.event_id.in_(ids))),
            "event_dedup": _deleted(session, delete(EventDedup).where(EventDedup.event_id.in_(ids))),
            "events": _deleted(session, delete(EventRecord).where(EventRecord.id.in_(ids))),
        }
    for table, count in counts.items():
        report.removed[table] += count
    return len(ids)


def _count_all(
    database: Database,
    retention: RetentionSettings,
    report: PurgeReport,
    *,
    journal_cutoff: datetime,
    events_cutoff: datetime,
    audit_cutoff: datetime,
) -> None:
    def count(query: Any) -> int:
        return int(session.scalar(select(func.count()).select_from(query.subquery())) or 0)

    with database.session() as session:
        old = count(select(CallJournalRecord.id).where(CallJournalRecord.at < journal_cutoff))
        total = count(select(CallJournalRecord.id))
        report.removed["call_journal"] = old + max(0, total - old - retention.journal_max_rows)
        events = _old_events(events_cutoff)
        deliveries = select(DeliveryRecord.id).where(DeliveryRecord.event_id.in_(events))
        report.removed["events"] = count(events)
        report.removed["deliveries"] = count(deliveries)
        report.removed["delivery_attempts"] = count(
            select(DeliveryAttempt.id).where(DeliveryAttempt.delivery_id.in_(deliveries))
        )
        report.removed["event_dedup"] = count(
            select(EventDedup.fingerprint).where(EventDedup.event_id.in_(events))
        )
        report.removed["rule_audit"] = count(select(RuleAudit.id).where(RuleAudit.created_at < audit_cutoff))


class PurgeSchedule:
    """Runs a bounded :func:`purge` at most once every ``interval`` seconds (for the delivery worker).

    Never raises: a database error is logged (event ``retention.failed``) and retried
    at the next interval.
    """

    def __init__(
        self,
        database: Database,
        retention: RetentionSettings,
        *,
        interval: float = PURGE_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = database
        self._retention = retention
        self._interval = interval
        self._clock = clock
        self._next = clock()

    def run_if_due(self, now: datetime) -> PurgeReport | None:
        """Purge when the interval has passed; the report, or ``None`` when not due or failed."""
        if self._clock() < self._next:
            return None
        self._next = self._clock() + self._interval
        try:
            return purge(self._db, self._retention, now=now, max_batches=WORKER_MAX_BATCHES)
        except ProviderError as exc:
            log.warning("retention purge failed", extra={"event": "retention.failed", "error": str(exc)})
            return None
