"""Reading the call journal: the newest calls matching a filter, and one call in full."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, select

from provider.db.journal import CallJournalRecord
from provider.db.session import Database
from provider.errors import CallNotFound


@dataclass(frozen=True)
class CallFilter:
    """Which calls to list; ``None`` means any. ``user`` matches case-insensitively."""

    operation: str | None = None
    outcome: str | None = None
    user: str | None = None
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True)
class CallRow:
    """One journaled call, as ``calls list`` shows it."""

    id: int
    at: datetime
    operation: str
    outcome: str
    user: str | None
    client: str | None
    duration_ms: float
    message: str | None
    matched: list[str]
    request_id: str


@dataclass(frozen=True)
class CallDetail:
    """One journaled call in full (``calls show``)."""

    call: CallRow
    fault: str | None
    variables: list[list[str]]
    identity: dict[str, Any] | None
    answer: dict[str, Any] | None


def _row(record: CallJournalRecord) -> CallRow:
    answer = record.answer or {}
    return CallRow(
        id=record.id,
        at=record.at,
        operation=record.operation,
        outcome=record.outcome,
        user=record.username,
        client=record.client,
        duration_ms=record.duration_ms,
        message=answer.get("message"),
        matched=list(record.matched or []),
        request_id=record.request_id,
    )


def calls_query(filters: CallFilter) -> Any:
    """The SELECT of the journal records matching ``filters``, newest first."""
    query = select(CallJournalRecord).order_by(CallJournalRecord.at.desc(), CallJournalRecord.id.desc())
    if filters.operation:
        query = query.where(func.lower(CallJournalRecord.operation) == filters.operation.lower())
    if filters.outcome:
        query = query.where(CallJournalRecord.outcome == filters.outcome)
    if filters.user:
        query = query.where(func.lower(CallJournalRecord.username) == filters.user.strip().lower())
    if filters.since is not None:
        query = query.where(CallJournalRecord.at >= filters.since)
    if filters.until is not None:
        query = query.where(CallJournalRecord.at < filters.until)
    return query


def list_calls(database: Database, filters: CallFilter, *, limit: int = 100) -> list[CallRow]:
    """The newest ``limit`` calls matching ``filters``. Raises StorageError."""
    with database.session() as session:
        return [_row(r) for r in session.scalars(calls_query(filters).limit(limit)).all()]


def get_call(database: Database, call_id: int) -> CallDetail:
    """One call in full. Raises NotFound, StorageError."""
    with database.session() as session:
        record = session.get(CallJournalRecord, call_id)
        if record is None:
            raise CallNotFound(f"no journaled call {call_id}")
        return CallDetail(
            call=_row(record),
            fault=record.fault,
            variables=[list(p) for p in record.variables or []],
            identity=record.identity,
            answer=record.answer,
        )


#: journal outcomes that are failures of the call (not a refusal the rules decided: ``denied``)
FAILED_OUTCOMES = ("permission_denied", "fault", "error")


@dataclass(frozen=True)
class OperationCount:
    """Journaled calls of one operation in a period: all of them, and the failed ones."""

    operation: str
    calls: int
    failures: int


def calls_per_operation(database: Database, *, since: datetime) -> list[OperationCount]:
    """Calls per operation at or after ``since`` (by name), with failures. Raises StorageError."""
    failed = func.sum(case((CallJournalRecord.outcome.in_(FAILED_OUTCOMES), 1), else_=0))
    query = (
        select(CallJournalRecord.operation, func.count(), failed)
        .where(CallJournalRecord.at >= since)
        .group_by(CallJournalRecord.operation)
        .order_by(CallJournalRecord.operation)
    )
    with database.session() as session:
        return [
            OperationCount(operation=str(op), calls=int(calls), failures=int(failures or 0))
            for op, calls, failed_count in session.execute(query)
            for failures in (failed_count,)
        ]
