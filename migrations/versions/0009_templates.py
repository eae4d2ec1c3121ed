"""Message templates and editable global variables (the rules file's ``templates:`` and ``variables:``).

* ``message_templates``: one row per template (name, kind, description, tags, the
  channel type's parameters as Jinja2 text, file order).
* ``global_variables``: one row per editable variable (name, value, file order).

Both change with the rules, in the same transaction, bumping the rule-set version.

Revision ID: 0009_templates
Revises: 0008_console_roles
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_templates"
down_revision = "0008_console_roles"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "message_templates",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=50), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "global_variables",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("global_variables")
    op.drop_table("message_templates")
