"""Events, deliveries, attempts and channel state.

Revision ID: 0003_events
Revises: 0002_auth
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_events"
down_revision = "0002_auth"
branch_labels = None
depends_on = None


def _ts(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("event_type", sa.Integer(), nullable=True),
        sa.Column("event_name", sa.String(length=200), nullable=True),
        sa.Column("arguments", sa.JSON(), nullable=False),
        sa.Column("variables", sa.JSON(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        _ts("received_at"),
        sa.Column("repeats", sa.Integer(), server_default=sa.text("0"), nullable=False),
        _ts("last_repeated_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
    )
    op.create_index("ix_events_event_type", "events", ["event_type"])
    op.create_index("ix_events_fingerprint", "events", ["fingerprint"])
    op.create_index("ix_events_received_at", "events", ["received_at"])

    op.create_table(
        "event_dedup",
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("event_id", sa.Integer(), nullable=False),
        _ts("expires_at"),
        sa.ForeignKeyConstraint(
            ["event_id"], ["events.id"], name="fk_event_dedup_event_id_events", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("fingerprint", name="pk_event_dedup"),
    )
    op.create_index("ix_event_dedup_expires_at", "event_dedup", ["expires_at"])

    op.create_table(
        "deliveries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.Column("rule", sa.String(length=200), nullable=False),
        sa.Column("channel", sa.String(length=200), nullable=False),
        sa.Column("recipient", sa.String(length=320), nullable=True),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        _ts("next_attempt_at"),
        _ts("age_from"),
        _ts("created_at"),
        _ts("updated_at"),
        _ts("finished_at", nullable=True),
        sa.Column("lease_owner", sa.String(length=100), nullable=True),
        _ts("lease_expires_at", nullable=True),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("partner_id", sa.String(length=200), nullable=True),
        sa.Column("documents", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["event_id"], ["events.id"], name="fk_deliveries_event_id_events", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_deliveries"),
        sa.UniqueConstraint("key", name="uq_deliveries_key"),
    )
    op.create_index("ix_deliveries_due", "deliveries", ["status", "next_attempt_at"])
    op.create_index("ix_deliveries_event_id", "deliveries", ["event_id"])
    op.create_index("ix_deliveries_channel", "deliveries", ["channel"])
    op.create_index("ix_deliveries_recipient", "deliveries", ["recipient"])

    op.create_table(
        "delivery_attempts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("delivery_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        _ts("started_at"),
        sa.Column("duration", sa.Float(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("partner_id", sa.String(length=200), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("worker", sa.String(length=100), nullable=True),
        _ts("next_attempt_at", nullable=True),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["deliveries.id"],
            name="fk_delivery_attempts_delivery_id_deliveries",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_delivery_attempts"),
    )
    op.create_index("ix_delivery_attempts_delivery_id", "delivery_attempts", ["delivery_id"])

    op.create_table(
        "channel_state",
        sa.Column("channel", sa.String(length=200), nullable=False),
        _ts("paused_until", nullable=True),
        sa.Column("pause_reason", sa.String(length=200), nullable=True),
        _ts("window_started_at", nullable=True),
        sa.Column("window_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("channel", name="pk_channel_state"),
    )


def downgrade() -> None:
    op.drop_table("channel_state")
    op.drop_index("ix_delivery_attempts_delivery_id", table_name="delivery_attempts")
    op.drop_table("delivery_attempts")
    op.drop_index("ix_deliveries_recipient", table_name="deliveries")
    op.drop_index("ix_deliveries_channel", table_name="deliveries")
    op.drop_index("ix_deliveries_event_id", table_name="deliveries")
    op.drop_index("ix_deliveries_due", table_name="deliveries")
    op.drop_table("deliveries")
    op.drop_index("ix_event_dedup_expires_at", table_name="event_dedup")
    op.drop_table("event_dedup")
    op.drop_index("ix_events_received_at", table_name="events")
    op.drop_index("ix_events_fingerprint", table_name="events")
    op.drop_index("ix_events_event_type", table_name="events")
    op.drop_table("events")
