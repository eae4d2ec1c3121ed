"""``deliveries summary``: deliveries counted by channel, template, status or day, with failure rates.

One query streams ``(channel, status, created_at, template)`` of the deliveries created since a
time and counts them here, so the grouping by UTC day is the same on SQLite and
PostgreSQL. ``failure_rate`` is ``failed / (delivered + failed)``: of the deliveries
that finished by trying, the share that failed (suppressed ones were never tried;
``None`` when none finished). Grouping by template is not offered yet: deliveries do
not record one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select

from provider.db.events import DELIVERED, FAILED, PENDING, SENDING, SUPPRESSED, DeliveryRecord
from provider.db.session import Database
from provider.errors import ProviderError

GROUPINGS = ("channel", "template", "status", "day")
NO_TEMPLATE = "(none)"
_STREAM_ROWS = 5_000


@dataclass(frozen=True)
class SummaryRow:
    group: str
    total: int
    delivered: int
    failed: int
    suppressed: int
    pending: int
    failure_rate: float | None


def _day(value: datetime) -> str:
    aware = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return aware.date().isoformat()


def _key(by: str, channel: str, status: str, created_at: datetime, template: str | None) -> str:
    if by == "channel":
        return channel
    if by == "template":
        return template or NO_TEMPLATE
    return status if by == "status" else _day(created_at)


def count(rows: Iterable[tuple[str, str, datetime, str | None]], by: str) -> list[SummaryRow]:
    """``(channel, status, created_at, template)`` rows counted per group, groups in order."""
    if by not in GROUPINGS:
        raise ProviderError(f"unknown grouping {by!r} (known: {', '.join(GROUPINGS)})")
    groups: dict[str, dict[str, int]] = {}
    for channel, status, created_at, template in rows:
        key = _key(by, channel, status, created_at, template)
        counts = groups.setdefault(key, {})
        counts[status] = counts.get(status, 0) + 1
    result = []
    for key in sorted(groups):
        counts = groups[key]
        delivered, failed = counts.get(DELIVERED, 0), counts.get(FAILED, 0)
        tried = delivered + failed
        result.append(
            SummaryRow(
                group=key,
                total=sum(counts.values()),
                delivered=delivered,
                failed=failed,
                suppressed=counts.get(SUPPRESSED, 0),
                pending=counts.get(PENDING, 0) + counts.get(SENDING, 0),
                failure_rate=round(failed / tried, 4) if tried else None,
            )
        )
    return result


def summarise(database: Database, *, by: str = "channel", since: datetime | None = None) -> list[SummaryRow]:
    """Deliveries created at or after ``since`` (all when ``None``), counted by ``by``."""
    query = select(
        DeliveryRecord.channel, DeliveryRecord.status, DeliveryRecord.created_at, DeliveryRecord.template
    )
    if since is not None:
        query = query.where(DeliveryRecord.created_at >= since)
    with database.session() as session:
        stream = session.execute(query.execution_options(yield_per=_STREAM_ROWS))
        return count(((c, s, t, m) for c, s, t, m in stream), by)
