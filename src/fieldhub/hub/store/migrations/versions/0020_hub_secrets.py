"""Hub secrets: what the hubs of a cluster must share, such as the link key (issue 18).

Revision ID: 0020
Revises: 0019
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020"
# The brief's "0018": chained after 0020 on this branch so that it has one head (the lead
# re-chains the migrations of this session's branches at merge).
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hub_secrets",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(256), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("hub_secrets")
