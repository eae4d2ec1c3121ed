"""Local users and login throttling.

Revision ID: 0002_auth
Revises: 0001_rules
"""

from __future__ import annotations

revision = "0002_auth"
down_revision = "0001_rules"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
