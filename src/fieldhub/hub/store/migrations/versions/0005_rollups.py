"""Per-minute rollups of samples, for history in buckets of whole minutes.

Creates ``rollups`` (see ``store/schema.py``) and fills it from the samples already stored,
with the same aggregates ingest keeps from now on.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_COLUMNS = "series_id, minute, count_num, sum_num, min_num, max_num, last_ts, last_num"
# The newest value of a minute is read by its key (one seek per minute); on PostgreSQL it is
# taken in the aggregate itself.
_SQLITE_BACKFILL = (
    f"INSERT INTO rollups ({_COLUMNS})"
    " SELECT g.series_id, g.minute, g.n, g.total, g.lo, g.hi, g.last_ts,"
    " (SELECT s.num FROM samples s WHERE s.series_id = g.series_id AND s.ts = g.last_ts)"
    " FROM (SELECT series_id, ts / 60000 * 60000 AS minute, count(num) AS n,"
    " total(num) AS total, min(num) AS lo, max(num) AS hi, max(ts) AS last_ts"
    " FROM samples GROUP BY series_id, ts / 60000) g"
)
_PG_BACKFILL = (
    f"INSERT INTO rollups ({_COLUMNS})"
    " SELECT series_id, ts / 60000 * 60000, count(num), coalesce(sum(num), 0), min(num),"
    " max(num), max(ts), (array_agg(num ORDER BY ts DESC))[1]"
    " FROM samples GROUP BY series_id, ts / 60000 * 60000"
)


def upgrade() -> None:
    op.create_table(
        "rollups",
        sa.Column("series_id", sa.Integer, nullable=False),
        sa.Column("minute", sa.BigInteger, nullable=False),
        sa.Column("count_num", sa.Integer, nullable=False),
        sa.Column("sum_num", sa.Float, nullable=False),
        sa.Column("min_num", sa.Float, nullable=True),
        sa.Column("max_num", sa.Float, nullable=True),
        sa.Column("last_ts", sa.BigInteger, nullable=False),
        sa.Column("last_num", sa.Float, nullable=True),
        sa.PrimaryKeyConstraint("series_id", "minute", name="pk_rollups"),
        sqlite_with_rowid=False,
    )
    sqlite = op.get_bind().dialect.name == "sqlite"
    op.execute(_SQLITE_BACKFILL if sqlite else _PG_BACKFILL)


def downgrade() -> None:
    op.drop_table("rollups")
