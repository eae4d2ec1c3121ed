"""SQLAlchemy models for one-time sign-in codes.

- :class:`SignInCode` (``signin_codes``): one code sent to an address (E.164 phone
  number or lower-cased e-mail address), kept only as ``code_hash`` (HMAC-SHA256 keyed
  by the row's random ``salt``), with whom it signs in (``username``, ``email``,
  ``display_name``, as found when it was requested) and its life: ``expires_at``,
  ``used_at`` (redeemed) or ``replaced_at`` (a later request invalidated it).
- :class:`SignInRequest` (``signin_requests``): every request of the public page, known
  address or not, with the client address: what the per-address and per-client
  limits count.

No business rules here; see :mod:`provider.comms.signin_codes`.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from provider.db.base import Base, UTCDateTime, utcnow


class SignInCode(Base):
    __tablename__ = "signin_codes"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    address: Mapped[str] = mapped_column(sa.String(320), nullable=False, index=True)
    kind: Mapped[str] = mapped_column(sa.String(10), nullable=False)
    salt: Mapped[str] = mapped_column(sa.String(64), nullable=False)
    code_hash: Mapped[str] = mapped_column(sa.String(64), nullable=False)
    username: Mapped[str] = mapped_column(sa.String(320), nullable=False)
    email: Mapped[str | None] = mapped_column(sa.String(320), nullable=True)
    display_name: Mapped[str | None] = mapped_column(sa.String(255), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, index=True)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    replaced_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class SignInRequest(Base):
    __tablename__ = "signin_requests"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    address: Mapped[str] = mapped_column(sa.String(320), nullable=False, index=True)
    client: Mapped[str | None] = mapped_column(sa.String(280), nullable=True, index=True)
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, index=True)
