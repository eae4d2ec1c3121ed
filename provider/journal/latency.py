"""Latency of journaled calls: the 95th percentile of ``duration_ms`` per operation.

Computed in the database with window functions that SQLite (3.25+) and PostgreSQL
both have, the same SQL on both: within each operation the calls are numbered by
duration (``ROW_NUMBER``) and counted (``COUNT``), and the p95 is the smallest duration
whose rank ``r`` satisfies ``100 * r >= 95 * n`` (the nearest-rank definition: the
value at rank ``ceil(0.95 * n)``), in whole numbers so no rounding can move it.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select

from provider.db.journal import CallJournalRecord
from provider.db.session import Database

PERCENT = 95


def p95_per_operation(database: Database, *, since: datetime) -> dict[str, float]:
    """``{operation: p95 duration in ms}`` of the calls journaled at or after ``since``.

    Operations without calls are absent. Raises StorageError.
    """
    ranked = (
        select(
            CallJournalRecord.operation.label("operation"),
            CallJournalRecord.duration_ms.label("duration_ms"),
            func.row_number()
            .over(partition_by=CallJournalRecord.operation, order_by=CallJournalRecord.duration_ms)
            .label("rank"),
            func.count().over(partition_by=CallJournalRecord.operation).label("total"),
        )
        .where(CallJournalRecord.at >= since)
        .subquery()
    )
    query = (
        select(ranked.c.operation, func.min(ranked.c.duration_ms))
        .where(100 * ranked.c.rank >= PERCENT * ranked.c.total)
        .group_by(ranked.c.operation)
    )
    with database.session() as session:
        return {str(operation): float(value) for operation, value in session.execute(query)}
