"""Children behind a gateway: a device's parent (issue 14).

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("parent_id", sa.String(64), nullable=True))
    op.create_index("ix_devices_parent", "devices", ["parent_id"])


def downgrade() -> None:
    op.drop_index("ix_devices_parent", table_name="devices")
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("parent_id")
