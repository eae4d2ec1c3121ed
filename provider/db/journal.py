"""SQLAlchemy model of the call journal (``call_journal``): one row per SOAP call.

Written in batches by :mod:`provider.journal.writer`, read by
:mod:`provider.journal.queries`, trimmed by :mod:`provider.journal.retention`.
``variables`` never hold ``authPW`` or ``loginPassword``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Float, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from provider.db.base import Base, UTCDateTime


class CallJournalRecord(Base):
    """One SOAP call: what came in (secrets removed), what the rules saw, what was answered."""

    __tablename__ = "call_journal"
    __table_args__ = (Index("ix_call_journal_operation_at", "operation", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    operation: Mapped[str] = mapped_column(String(40))
    request_id: Mapped[str] = mapped_column(String(64))
    client: Mapped[str | None] = mapped_column(String(64))
    duration_ms: Mapped[float] = mapped_column(Float)
    outcome: Mapped[str] = mapped_column(String(20))
    fault: Mapped[str | None] = mapped_column(String(40))
    username: Mapped[str | None] = mapped_column(String(320))
    variables: Mapped[list[Any]] = mapped_column(JSON)
    identity: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    matched: Mapped[list[Any]] = mapped_column(JSON)
    answer: Mapped[dict[str, Any] | None] = mapped_column(JSON)
