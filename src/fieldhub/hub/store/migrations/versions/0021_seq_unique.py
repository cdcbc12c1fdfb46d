"""Each device seq is stored once, also when several hubs ingest: ``received`` (issue 18).

``received`` holds the committed seqs of each device above its watermark (``devices.acked_seq``);
its primary key makes "stored at most once per (device, seq)" a fact the database enforces. The
seqs above the watermark, once a JSON list in ``devices.seq_above`` that one hub kept in memory,
are these rows now: ``seq_above`` goes.

Revision ID: 0021
Revises: 0020
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "received",
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("device_id", "seq", name="pk_received"),
        sqlite_with_rowid=False,
    )
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("seq_above")


def downgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.add_column(
            sa.Column("seq_above", sa.JSON, nullable=False, server_default="[]"),
        )
    op.drop_table("received")
