"""Console roles of local users.

``auth_local_users.console_role``: ``admin`` (may sign in to the console at ``/admin/`` and
change things), ``viewer`` (may sign in, read-only) or NULL (no console access; every
existing user). Set with ``st-provider users add NAME --admin`` / ``--viewer``.

Revision ID: 0008_console_roles
Revises: 0007_rule_versions
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_console_roles"
down_revision = "0007_rule_versions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("auth_local_users") as batch:
        batch.add_column(sa.Column("console_role", sa.String(length=20), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("auth_local_users") as batch:
        batch.drop_column("console_role")
