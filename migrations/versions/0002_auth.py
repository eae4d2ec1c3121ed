"""Local users and login throttling.

Revision ID: 0002_auth
Revises: 0001_rules
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from provider.db.base import UTCDateTime

revision = "0002_auth"
down_revision = "0001_rules"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "auth_local_users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username_key", sa.String(length=255), nullable=False),
        sa.Column("username", sa.String(length=255), nullable=False),
        sa.Column("password_hash", sa.String(length=512), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("display_name", sa.String(length=255), nullable=True),
        sa.Column("groups", sa.JSON(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("password_changed_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auth_local_users")),
        sa.UniqueConstraint("username_key", name=op.f("uq_auth_local_users_username_key")),
    )
    op.create_table(
        "auth_throttle",
        sa.Column("key", sa.String(length=300), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("window_start", UTCDateTime(), nullable=False),
        sa.Column("locked_until", UTCDateTime(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_auth_throttle")),
    )
    op.create_index(op.f("ix_auth_throttle_window_start"), "auth_throttle", ["window_start"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_auth_throttle_window_start"), table_name="auth_throttle")
    op.drop_table("auth_throttle")
    op.drop_table("auth_local_users")
