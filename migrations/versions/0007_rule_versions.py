"""Rule-set versions kept whole, and the rule errors of an event.

* ``rule_set_snapshots``: one row per rule-set version (its ``rules export`` YAML,
  who made it, how, and a one-line summary), for ``st-provider rules versions``,
  ``rules diff`` and ``rules rollback``. Versions made before this migration have no
  snapshot; the first change after it records the state it started from as a
  ``baseline``.
* ``events.rule_errors``: the rules that raised while an event was evaluated
  (``[{"rule": name, "error": type}]``, NULL when none), for ``events list
  --has-errors`` and ``events replay``.

Revision ID: 0007_rule_versions
Revises: 0006_journal
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_rule_versions"
down_revision = "0006_journal"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rule_set_snapshots",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("action", sa.String(length=20), nullable=False),
        sa.Column("summary", sa.String(length=500), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("version"),
    )
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("rule_errors", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.drop_column("rule_errors")
    op.drop_table("rule_set_snapshots")
