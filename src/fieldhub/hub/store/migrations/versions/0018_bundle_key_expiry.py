"""Bundle keys may expire: ``bundle_keys.expires_at`` (issue 16).

Revision ID: 0018
Revises: 0017
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("bundle_keys") as batch:
        batch.add_column(sa.Column("expires_at", sa.BigInteger, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("bundle_keys") as batch:
        batch.drop_column("expires_at")
