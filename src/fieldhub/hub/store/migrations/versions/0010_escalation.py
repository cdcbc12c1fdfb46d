"""Escalation: policies, the outbox rows of each alarm's escalation, used acknowledge links.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "escalation_policies",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("steps", sa.JSON, nullable=False),
        sa.Column("repeat_every_s", sa.Integer, nullable=True),
        sa.Column("repeat_limit", sa.Integer, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.Column("updated_by", sa.String(128), nullable=False),
    )
    op.create_table(
        "alarm_escalations",
        sa.Column("notification_id", sa.String(32), primary_key=True),
        sa.Column("alarm_id", sa.Integer, nullable=False),
    )
    op.create_index("ix_alarm_escalations_alarm", "alarm_escalations", ["alarm_id"])
    op.create_table(
        "ack_link_uses",
        sa.Column("nonce", sa.String(32), primary_key=True),
        sa.Column("alarm_id", sa.Integer, nullable=False),
        sa.Column("used_at", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("ack_link_uses")
    op.drop_table("alarm_escalations")
    op.drop_table("escalation_policies")
