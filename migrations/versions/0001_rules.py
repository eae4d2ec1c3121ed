"""Rules, channels and their audit trail.

Revision ID: 0001_rules
Revises: 
"""

from __future__ import annotations

revision = "0001_rules"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
