"""Samples keyed by (series_id, ts): one value per series and millisecond, last wins.

On SQLite the table is rebuilt WITHOUT ROWID (clustered on the key); on PostgreSQL the key
replaces the old index. Samples that share a series and millisecond keep the one stored last.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            "CREATE TABLE samples_keyed ("
            " series_id INTEGER NOT NULL, ts BIGINT NOT NULL, num FLOAT, txt VARCHAR(256),"
            " CONSTRAINT pk_samples PRIMARY KEY (series_id, ts)) WITHOUT ROWID"
        )
        op.execute(
            "INSERT OR REPLACE INTO samples_keyed (series_id, ts, num, txt)"
            " SELECT series_id, ts, num, txt FROM samples ORDER BY rowid"
        )
        op.execute("DROP TABLE samples")
        op.execute("ALTER TABLE samples_keyed RENAME TO samples")
        return
    # PostgreSQL: ctid order is insertion order for an append-only table.
    op.execute(
        "DELETE FROM samples s USING samples later"
        " WHERE s.series_id = later.series_id AND s.ts = later.ts AND s.ctid < later.ctid"
    )
    op.drop_index("ix_samples_series_ts", table_name="samples")
    op.create_primary_key("pk_samples", "samples", ["series_id", "ts"])


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            "CREATE TABLE samples_rowid ("
            " series_id INTEGER NOT NULL, ts BIGINT NOT NULL, num FLOAT, txt VARCHAR(256))"
        )
        op.execute("INSERT INTO samples_rowid SELECT series_id, ts, num, txt FROM samples")
        op.execute("DROP TABLE samples")
        op.execute("ALTER TABLE samples_rowid RENAME TO samples")
    else:
        op.drop_constraint("pk_samples", "samples", type_="primary")
    op.create_index("ix_samples_series_ts", "samples", ["series_id", "ts"])
