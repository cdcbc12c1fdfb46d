"""Rollup tiers: hour and day rollups, the roller's marks, late hours (issue 18).

A trigger on ``rollups`` notes the hour of every minute rollup written before the hour tier's
``upto`` mark (a device's late readings), in ingest's own transaction: the roller folds that
hour again (``store/rollup_tiers.py``). Only late rows write anything: a minute of the present
is past the mark, and the trigger's test is one lookup in a one-row table.

Revision ID: 0019
Revises: 0018
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

_LATE_HOUR = "NEW.minute - NEW.minute % 3600000"
_SQLITE_TRIGGER = (
    "CREATE TRIGGER rollups_late_{event} AFTER {event} ON rollups"
    " WHEN NEW.minute < (SELECT upto FROM rollup_marks WHERE tier = 'hour')"
    # Not INSERT OR IGNORE: the upsert that fires the trigger would override its IGNORE.
    f" BEGIN INSERT INTO rollup_late (series_id, hour) SELECT NEW.series_id, {_LATE_HOUR}"
    " WHERE NOT EXISTS (SELECT 1 FROM rollup_late WHERE series_id = NEW.series_id"
    f" AND hour = {_LATE_HOUR}); END"
)
# The shared advisory lock is the one store/rollup_tiers.py's MARK_LOCK names: the roller
# takes it alone while it moves the mark.
_PG_FUNCTION = f"""
CREATE FUNCTION rollups_note_late() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE mark bigint;
BEGIN
  PERFORM pg_advisory_xact_lock_shared(1919249516, 1);
  SELECT upto INTO mark FROM rollup_marks WHERE tier = 'hour';
  IF NEW.minute < mark THEN
    INSERT INTO rollup_late (series_id, hour) VALUES (NEW.series_id, {_LATE_HOUR})
    ON CONFLICT DO NOTHING;
  END IF;
  RETURN NULL;
END $$
"""
_PG_TRIGGER = (
    "CREATE TRIGGER rollups_late AFTER INSERT OR UPDATE ON rollups"
    " FOR EACH ROW EXECUTE FUNCTION rollups_note_late()"
)


def _tier(name: str, start: str) -> None:
    op.create_table(
        name,
        sa.Column("series_id", sa.Integer, nullable=False),
        sa.Column(start, sa.BigInteger, nullable=False),
        sa.Column("count_num", sa.Integer, nullable=False),
        sa.Column("sum_num", sa.Float, nullable=False),
        sa.Column("min_num", sa.Float, nullable=True),
        sa.Column("max_num", sa.Float, nullable=True),
        sa.Column("last_ts", sa.BigInteger, nullable=False),
        sa.Column("last_num", sa.Float, nullable=True),
        sa.PrimaryKeyConstraint("series_id", start, name=f"pk_{name}"),
        sqlite_with_rowid=False,
    )


def upgrade() -> None:
    _tier("rollups_hour", "hour")
    _tier("rollups_day", "day")
    op.create_table(
        "rollup_marks",
        sa.Column("tier", sa.String(8), primary_key=True),
        sa.Column("upto", sa.BigInteger, nullable=False),
        sa.Column("folded", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "rollup_late",
        sa.Column("series_id", sa.Integer, nullable=False),
        sa.Column("hour", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("series_id", "hour", name="pk_rollup_late"),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_FUNCTION)
        op.execute(_PG_TRIGGER)
    else:
        op.execute(_SQLITE_TRIGGER.format(event="INSERT"))
        op.execute(_SQLITE_TRIGGER.format(event="UPDATE"))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER rollups_late ON rollups")
        op.execute("DROP FUNCTION rollups_note_late()")
    else:
        op.execute("DROP TRIGGER rollups_late_INSERT")
        op.execute("DROP TRIGGER rollups_late_UPDATE")
    for table in ("rollup_late", "rollup_marks", "rollups_day", "rollups_hour"):
        op.drop_table(table)
