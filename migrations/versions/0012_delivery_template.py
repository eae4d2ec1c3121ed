"""Deliveries record their template; manual retries and re-sends are audited.

* ``deliveries.template``: the message template a notify entry used (``template:``),
  NULL for inline entries and for deliveries made before this revision
  (``deliveries list --template``, ``deliveries summary --by template``).
* ``delivery_audit``: every manual ``retry`` and ``resend`` of a delivery (CLI or
  console), with its actor, command, the delivery and the new one a re-send made.

Revision ID: 0012_delivery_template
Revises: 0011_signin_codes
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_delivery_template"
down_revision = "0011_signin_codes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("template", sa.String(length=200), nullable=True))
        batch.create_index("ix_deliveries_template", ["template"])
    op.create_table(
        "delivery_audit",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("command", sa.String(length=500), nullable=False),
        sa.Column("action", sa.String(length=20), nullable=False),
        sa.Column("delivery_id", sa.Integer(), nullable=False),
        sa.Column("new_delivery_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_delivery_audit"),
    )
    op.create_index("ix_delivery_audit_created_at", "delivery_audit", ["created_at"])
    op.create_index("ix_delivery_audit_delivery_id", "delivery_audit", ["delivery_id"])


def downgrade() -> None:
    op.drop_index("ix_delivery_audit_delivery_id", table_name="delivery_audit")
    op.drop_index("ix_delivery_audit_created_at", table_name="delivery_audit")
    op.drop_table("delivery_audit")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_index("ix_deliveries_template")
        batch.drop_column("template")
