"""Initial schema: devices, series, samples, events.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "devices",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("labels", sa.JSON, nullable=False),
        sa.Column("attributes", sa.JSON, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.Column("acked_seq", sa.BigInteger, nullable=False),
        sa.Column("seq_above", sa.JSON, nullable=False),
        sa.Column("last_seen", sa.BigInteger, nullable=True),
        sa.Column("connected", sa.Boolean, nullable=True),
        sa.Column("presence", sa.String(16), nullable=False),
        sa.Column("presence_since", sa.BigInteger, nullable=True),
        sa.Column("presence_reason", sa.String(256), nullable=False),
        sa.Column("reported", sa.JSON, nullable=False),
        sa.Column("reported_ts", sa.BigInteger, nullable=True),
    )
    op.create_table(
        "series",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("last_ts", sa.BigInteger, nullable=True),
        sa.Column("last_num", sa.Float, nullable=True),
        sa.Column("last_txt", sa.String(256), nullable=True),
        sa.UniqueConstraint("device_id", "key", name="uq_series_device_key"),
    )
    op.create_table(
        "samples",
        sa.Column("series_id", sa.Integer, nullable=False),
        sa.Column("ts", sa.BigInteger, nullable=False),
        sa.Column("num", sa.Float, nullable=True),
        sa.Column("txt", sa.String(256), nullable=True),
    )
    op.create_index("ix_samples_series_ts", "samples", ["series_id", "ts"])
    op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=True),
        sa.Column("ts", sa.BigInteger, nullable=False),
        sa.Column("received_at", sa.BigInteger, nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("data", sa.JSON, nullable=False),
    )
    op.create_index("ix_events_device_ts", "events", ["device_id", "ts"])
    op.create_index("ix_events_ts", "events", ["ts"])


def downgrade() -> None:
    for table in ("events", "samples", "series", "devices"):
        op.drop_table(table)
