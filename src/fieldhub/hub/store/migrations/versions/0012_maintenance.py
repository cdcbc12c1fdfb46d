"""Maintenance windows, flapping state, and the alarms' marks for both (issue 13).

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "maintenance_windows",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("scope", sa.JSON, nullable=False),
        sa.Column("schedule", sa.JSON, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.Column("updated_by", sa.String(128), nullable=False),
    )
    op.create_table(
        "alarm_flapping",
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("rule_id", sa.String(64), nullable=False),
        sa.Column("changes", sa.JSON, nullable=False),
        sa.Column("flapping_since", sa.BigInteger, nullable=True),
        sa.PrimaryKeyConstraint("device_id", "rule_id", name="pk_alarm_flapping"),
    )
    op.create_index("ix_alarm_flapping_since", "alarm_flapping", ["flapping_since"])
    with op.batch_alter_table("alarms") as batch:
        batch.add_column(
            sa.Column("in_maintenance", sa.Boolean, nullable=False, server_default=sa.false())
        )
        batch.add_column(
            sa.Column("flapping", sa.Boolean, nullable=False, server_default=sa.false())
        )
    op.create_index("ix_alarms_shelved_until", "alarms", ["shelved_until"])
    op.create_index("ix_alarms_in_maintenance", "alarms", ["in_maintenance"])


def downgrade() -> None:
    op.drop_index("ix_alarms_in_maintenance", "alarms")
    op.drop_index("ix_alarms_shelved_until", "alarms")
    with op.batch_alter_table("alarms") as batch:
        batch.drop_column("flapping")
        batch.drop_column("in_maintenance")
    op.drop_table("alarm_flapping")
    op.drop_table("maintenance_windows")
