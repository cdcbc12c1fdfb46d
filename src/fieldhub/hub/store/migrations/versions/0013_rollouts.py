"""Signed bundles, their public keys, rollouts and each rollout's devices (issue 16).

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bundle_keys",
        sa.Column("key_id", sa.String(16), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("public_key", sa.String(64), nullable=False),
        sa.Column("added_at", sa.BigInteger, nullable=False),
        sa.Column("added_by", sa.String(128), nullable=False),
        sa.Column("revoked_at", sa.BigInteger, nullable=True),
    )
    op.create_table(
        "bundles",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("key_id", sa.String(16), nullable=False),
        sa.Column("manifest", sa.JSON, nullable=False),
        sa.Column("uploaded_at", sa.BigInteger, nullable=False),
        sa.Column("uploaded_by", sa.String(128), nullable=False),
        sa.UniqueConstraint("name", "version", name="uq_bundles_name_version"),
    )
    op.create_table(
        "rollouts",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("bundle_id", sa.String(64), nullable=False),
        sa.Column("plan", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("wave", sa.Integer, nullable=False),
        sa.Column("reason", sa.String(512), nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_rollouts_status", "rollouts", ["status"])
    op.create_table(
        "rollout_devices",
        sa.Column("rollout_id", sa.String(32), nullable=False),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("wave", sa.Integer, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("command_id", sa.String(32), nullable=True),
        sa.Column("deadline_at", sa.BigInteger, nullable=True),
        sa.Column("reason", sa.String(512), nullable=False),
        sa.Column("previous", sa.String(32), nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("rollout_id", "device_id", name="pk_rollout_devices"),
    )


def downgrade() -> None:
    op.drop_table("rollout_devices")
    op.drop_index("ix_rollouts_status", "rollouts")
    op.drop_table("rollouts")
    op.drop_table("bundles")
    op.drop_table("bundle_keys")
