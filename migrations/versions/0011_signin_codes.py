"""One-time sign-in codes, their requests, and a phone number for local users.

* ``signin_codes``: a code sent to an address, stored only as an HMAC-SHA256 hash with
  a per-row salt, with whom it signs in and when it expires, was used or was replaced;
* ``signin_requests``: every request of ``/signin-code`` (for the per-address and
  per-client limits);
* ``auth_local_users.phone``: an optional E.164 phone number (NULL for every existing user).

Revision ID: 0011_signin_codes
Revises: 0010_optouts
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_signin_codes"
down_revision = "0010_optouts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "signin_codes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("salt", sa.String(length=64), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("username", sa.String(length=320), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("display_name", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("replaced_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_signin_codes"),
    )
    op.create_index("ix_signin_codes_address", "signin_codes", ["address"])
    op.create_index("ix_signin_codes_expires_at", "signin_codes", ["expires_at"])
    op.create_table(
        "signin_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("client", sa.String(length=280), nullable=True),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_signin_requests"),
    )
    op.create_index("ix_signin_requests_address", "signin_requests", ["address"])
    op.create_index("ix_signin_requests_client", "signin_requests", ["client"])
    op.create_index("ix_signin_requests_requested_at", "signin_requests", ["requested_at"])
    with op.batch_alter_table("auth_local_users") as batch:
        batch.add_column(sa.Column("phone", sa.String(length=20), nullable=True))
        batch.create_index("ix_auth_local_users_phone", ["phone"])


def downgrade() -> None:
    with op.batch_alter_table("auth_local_users") as batch:
        batch.drop_index("ix_auth_local_users_phone")
        batch.drop_column("phone")
    op.drop_index("ix_signin_requests_requested_at", table_name="signin_requests")
    op.drop_index("ix_signin_requests_client", table_name="signin_requests")
    op.drop_index("ix_signin_requests_address", table_name="signin_requests")
    op.drop_table("signin_requests")
    op.drop_index("ix_signin_codes_expires_at", table_name="signin_codes")
    op.drop_index("ix_signin_codes_address", table_name="signin_codes")
    op.drop_table("signin_codes")
