"""Alarms: the windows of N-of-M counts (``hub/alarms/counting.py``), kept over restarts.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alarm_count_windows",
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("rule_id", sa.String(64), nullable=False),
        sa.Column("window", sa.JSON, nullable=False),
        sa.PrimaryKeyConstraint("device_id", "rule_id", name="pk_alarm_count_windows"),
    )


def downgrade() -> None:
    op.drop_table("alarm_count_windows")
