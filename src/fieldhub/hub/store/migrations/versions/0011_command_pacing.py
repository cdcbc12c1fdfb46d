"""Group commands: pacing and an abort threshold per batch, a send time per command.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("command_batches") as batches:
        batches.add_column(sa.Column("per_second", sa.Float, nullable=True))
        batches.add_column(sa.Column("abort_failure_ratio", sa.Float, nullable=True))
    with op.batch_alter_table("commands") as commands:
        commands.add_column(sa.Column("not_before", sa.BigInteger, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("commands") as commands:
        commands.drop_column("not_before")
    with op.batch_alter_table("command_batches") as batches:
        batches.drop_column("abort_failure_ratio")
        batches.drop_column("per_second")
