"""The suppression list (opt-outs) and its audit.

* ``optouts``: an address (E.164 phone number or lower-cased e-mail address) opted
  out of everything (``scope`` ``all``), of one message kind (``kind:sms``,
  ``kind:email``) or of one event type (``event:N``); unique per address and scope.
* ``optout_audit``: every ``optout add``/``optout remove``, with its actor and command.

Deliveries gain no column: a suppressed one has ``status = 'suppressed'`` (a
``String(16)`` already).

Revision ID: 0010_optouts
Revises: 0009_templates
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_optouts"
down_revision = "0009_templates"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "optouts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("scope", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=True),
        sa.Column("event_type", sa.Integer(), nullable=True),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_optouts"),
        sa.UniqueConstraint("address", "scope", name="uq_optouts_address_scope"),
    )
    op.create_index("ix_optouts_address", "optouts", ["address"])
    op.create_table(
        "optout_audit",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("command", sa.String(length=500), nullable=False),
        sa.Column("action", sa.String(length=20), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("scope", sa.String(length=40), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_optout_audit"),
    )
    op.create_index("ix_optout_audit_created_at", "optout_audit", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_optout_audit_created_at", table_name="optout_audit")
    op.drop_table("optout_audit")
    op.drop_index("ix_optouts_address", table_name="optouts")
    op.drop_table("optouts")
