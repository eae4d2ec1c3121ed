"""Events, deliveries, attempts and channel state.

Revision ID: 0003_events
Revises: 0002_auth
"""

from __future__ import annotations

revision = "0003_events"
down_revision = "0002_auth"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
