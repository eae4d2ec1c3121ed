"""Rules: an optional on_error per rule ("deny" or "skip"; NULL = the default).

Revision ID: 0005_rules_on_error
Revises: 0004_usernames
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_rules_on_error"
down_revision = "0004_usernames"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("rules") as batch:
        batch.add_column(sa.Column("on_error", sa.String(length=10), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("rules") as batch:
        batch.drop_column("on_error")
