"""SQLAlchemy models for communication preferences: the suppression list and its audit.

- :class:`OptOut` (``optouts``): one address (E.164 phone number or lower-cased
  e-mail address) opted out of all notifications (``scope`` ``all``), of one message
  kind (``kind:sms``, ``kind:email``) or of one event type (``event:N``). ``scope`` is
  derived from ``kind``/``event_type`` and unique per address, so the same opt-out
  cannot be stored twice.
- :class:`OptOutAudit` (``optout_audit``): who added or removed an opt-out, when, and
  with which command.

No business rules here; see :mod:`provider.comms.optouts`.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from provider.db.base import Base, UTCDateTime, utcnow


class OptOut(Base):
    __tablename__ = "optouts"
    __table_args__ = (sa.UniqueConstraint("address", "scope", name="uq_optouts_address_scope"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    address: Mapped[str] = mapped_column(sa.String(320), nullable=False, index=True)
    scope: Mapped[str] = mapped_column(sa.String(40), nullable=False)
    kind: Mapped[str | None] = mapped_column(sa.String(20), nullable=True)
    event_type: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    reason: Mapped[str | None] = mapped_column(sa.String(500), nullable=True)
    actor: Mapped[str] = mapped_column(sa.String(200), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class OptOutAudit(Base):
    __tablename__ = "optout_audit"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(sa.String(200), nullable=False)
    command: Mapped[str] = mapped_column(sa.String(500), nullable=False)
    action: Mapped[str] = mapped_column(sa.String(20), nullable=False)
    address: Mapped[str] = mapped_column(sa.String(320), nullable=False)
    scope: Mapped[str] = mapped_column(sa.String(40), nullable=False)
    reason: Mapped[str | None] = mapped_column(sa.String(500), nullable=True)
