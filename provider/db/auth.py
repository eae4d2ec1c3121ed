"""SQLAlchemy models for auth: local users and brute-force counters.

No business rules here: hashing lives in :mod:`provider.auth.local`, the counting
rules in :mod:`provider.auth.throttle`. No column ever holds a password.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from provider.db.base import Base, UTCDateTime, utcnow


class LocalUser(Base):
    """A user of the built-in authenticator (``ST_PROVIDER_AUTH=local``).

    ``username_key`` is the normalised username (unique; see
    :func:`provider.auth.usernames.username_key`); ``username`` keeps the spelling it
    was created with, in Unicode NFKC. ``password_hash`` is a self-describing scrypt hash.
    """

    __tablename__ = "auth_local_users"
    __table_args__ = (sa.UniqueConstraint("username_key"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    username_key: Mapped[str] = mapped_column(sa.String(255), nullable=False)
    username: Mapped[str] = mapped_column(sa.String(255), nullable=False)
    password_hash: Mapped[str] = mapped_column(sa.String(512), nullable=False)
    email: Mapped[str | None] = mapped_column(sa.String(320), nullable=True)
    display_name: Mapped[str | None] = mapped_column(sa.String(255), nullable=True)
    groups: Mapped[list[str]] = mapped_column(sa.JSON, nullable=False, default=list)
    enabled: Mapped[bool] = mapped_column(sa.Boolean, nullable=False, default=True)
    # "admin" or "viewer": may sign in to the console (migration 0008); NULL: may not.
    console_role: Mapped[str | None] = mapped_column(sa.String(20), nullable=True)
    # E.164 phone number (migration 0011): finds the user for a sign-in code sent by SMS.
    phone: Mapped[str | None] = mapped_column(sa.String(20), nullable=True, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    password_changed_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class LoginThrottle(Base):
    """Failed-login counters shared by every worker process.

    ``key`` is ``user:<normalised account>`` or ``addr:<client address>``;
    ``failures`` counts attempts since ``window_start`` (counted before the password
    is checked, given back on success); while ``locked_until`` is in the future,
    attempts for that key fail without reaching the directory. ``last_reason`` and
    ``last_failure_at`` record the latest counted refusal (a log-only reason such as
    ``bad_password``, never a password) for ``st-provider call --explain``.
    """

    __tablename__ = "auth_throttle"

    key: Mapped[str] = mapped_column(sa.String(300), primary_key=True)
    failures: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=0)
    window_start: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, index=True)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    last_reason: Mapped[str | None] = mapped_column(sa.String(40), nullable=True)
    last_failure_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
