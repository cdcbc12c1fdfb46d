"""Alarms: rules, alarms (one open per device and rule), their history, the rules' timers.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_OPEN = sa.text("state != 'cleared'")


def upgrade() -> None:
    op.create_table(
        "alarm_rules",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("definition", sa.JSON, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.Column("updated_by", sa.String(128), nullable=False),
    )
    op.create_table(
        "alarms",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("rule_id", sa.String(64), nullable=False),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("condition_active", sa.Boolean, nullable=False),
        sa.Column("raised_at", sa.BigInteger, nullable=False),
        sa.Column("value", sa.JSON, nullable=True),
        sa.Column("message", sa.String(1024), nullable=False),
        sa.Column("acknowledged_by", sa.String(128), nullable=True),
        sa.Column("acknowledged_at", sa.BigInteger, nullable=True),
        sa.Column("ack_comment", sa.String(1024), nullable=True),
        sa.Column("cleared_at", sa.BigInteger, nullable=True),
        sa.Column("cleared_by", sa.String(128), nullable=True),
        sa.Column("clear_reason", sa.String(1024), nullable=True),
        sa.Column("shelved_until", sa.BigInteger, nullable=True),
        sa.Column("assignee", sa.String(128), nullable=True),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    )
    op.create_index(
        "uq_alarms_open",
        "alarms",
        ["device_id", "rule_id"],
        unique=True,
        sqlite_where=_OPEN,
        postgresql_where=_OPEN,
    )
    op.create_index("ix_alarms_rule", "alarms", ["rule_id"])
    op.create_index("ix_alarms_device", "alarms", ["device_id"])
    op.create_table(
        "alarm_changes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("alarm_id", sa.Integer, nullable=False),
        sa.Column("at", sa.BigInteger, nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("from_state", sa.String(16), nullable=True),
        sa.Column("to_state", sa.String(16), nullable=False),
        sa.Column("comment", sa.String(1024), nullable=False),
    )
    op.create_index("ix_alarm_changes_alarm", "alarm_changes", ["alarm_id"])
    op.create_table(
        "alarm_rule_state",
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("rule_id", sa.String(64), nullable=False),
        sa.Column("pending_since", sa.BigInteger, nullable=True),
        sa.Column("gone_since", sa.BigInteger, nullable=True),
        sa.Column("value", sa.JSON, nullable=True),
        sa.Column("message", sa.String(1024), nullable=False),
        sa.PrimaryKeyConstraint("device_id", "rule_id", name="pk_alarm_rule_state"),
    )


def downgrade() -> None:
    op.drop_table("alarm_rule_state")
    op.drop_table("alarm_changes")
    op.drop_index("ix_alarms_device", "alarms")
    op.drop_index("ix_alarms_rule", "alarms")
    op.drop_index("uq_alarms_open", "alarms")
    op.drop_table("alarms")
    op.drop_table("alarm_rules")
