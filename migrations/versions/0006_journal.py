"""The call journal: one row per SOAP call (``call_journal``), trimmed by retention.

Revision ID: 0006_journal
Revises: 0005_rules_on_error
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_journal"
down_revision = "0005_rules_on_error"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "call_journal",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("operation", sa.String(length=40), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("client", sa.String(length=64), nullable=True),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("fault", sa.String(length=40), nullable=True),
        sa.Column("username", sa.String(length=320), nullable=True),
        sa.Column("variables", sa.JSON(), nullable=False),
        sa.Column("identity", sa.JSON(), nullable=True),
        sa.Column("matched", sa.JSON(), nullable=False),
        sa.Column("answer", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_call_journal")),
    )
    op.create_index(op.f("ix_call_journal_at"), "call_journal", ["at"], unique=False)
    op.create_index("ix_call_journal_operation_at", "call_journal", ["operation", "at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_call_journal_operation_at", table_name="call_journal")
    op.drop_index(op.f("ix_call_journal_at"), table_name="call_journal")
    op.drop_table("call_journal")
