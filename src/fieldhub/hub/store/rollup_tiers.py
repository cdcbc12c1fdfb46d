"""The hour and day rollup tiers: their marks, their late hours, and the fold jobs.

Ingest writes the minute tier (``rollups``) in its own transaction; the coarser tiers are
folded afterwards by the roller (``hub/retention/roller.py``), so ingest never pays for them.
A fold *replaces* a period's row with the aggregate of the rows below it, never adds to it: a
period folded twice (a restart, a second hub, a late minute) is the same row, and nothing is
counted twice.

Late minutes: a minute rollup written for a minute before the hour tier's ``upto`` mark is
noted in ``rollup_late`` by a trigger on ``rollups`` (migration 0019), in ingest's own
transaction, so a device that sends a day of stored readings after an outage has its hours
folded again, also across a restart. On PostgreSQL the trigger takes a shared advisory lock
and :meth:`RollupTiers.advance` an exclusive one before moving the mark: a transaction that
read the old mark has committed before the fold reads the minutes, and one that starts after
sees the new mark.

Every fold job covers at most :data:`SERIES_PER_JOB` series-periods (a short transaction; on
SQLite one turn of the writer thread between ingest commits). Each series'
rows are found with one range of the primary key ``(series_id, start)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from sqlalchemy import bindparam, delete, func, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.elements import TextClause

from fieldhub.hub.store.schema import rollup_late, rollup_marks, series
from fieldhub.hub.store.writes import Writes

__all__ = [
    "DAY_MS",
    "HOUR_MS",
    "MARK_LOCK",
    "SERIES_PER_JOB",
    "Coverage",
    "Mark",
    "RollupTiers",
    "Tier",
    "coverage",
]

HOUR_MS: Final = 3_600_000
DAY_MS: Final = 86_400_000
SERIES_PER_JOB: Final = 500
"""Series-periods one fold job covers: an hour of 500 series is 30,000 minute rows, a few ms
(fewer series fold more periods at once)."""
MARK_LOCK: Final = (1919249516, 1)
"""The PostgreSQL advisory lock (two-key form) the late-minute trigger shares and the roller
takes alone while it moves the hour mark (see the module's text)."""

Tier = Literal["hour", "day"]

# What each tier is folded from: (source table, its start column, target table, target column).
_SOURCES: Final = {
    "hour": ("rollups", "minute", "rollups_hour", "hour"),
    "day": ("rollups_hour", "hour", "rollups_day", "day"),
}
_WIDTH: Final = {"hour": HOUR_MS, "day": DAY_MS}


def _fold(tier: Tier, *, listed: bool) -> TextClause:
    """The periods in ``[:p, :e)`` of some series (a range ``[:lo, :hi)`` of ids, or the list
    ``:only``), from the tier below, replacing what is there. The newest value is read with
    one more index seek per period: portable, where SQLite's bare column beside ``max()`` is
    not (the query has a ``min()`` too)."""
    source, at, target, start = _SOURCES[tier]
    width = f"CAST({_WIDTH[tier]} AS BIGINT)"
    chosen = "s.id IN :only" if listed else "s.id >= :lo AND s.id < :hi"
    statement = text(
        f"INSERT INTO {target} (series_id, {start}, count_num, sum_num, min_num, max_num,"
        " last_ts, last_num)"
        " SELECT g.sid, g.period, g.n, g.total, g.lo, g.hi, g.last_ts,"
        f" (SELECT n.last_num FROM {source} n WHERE n.series_id = g.sid"
        f" AND n.{at} >= g.period AND n.{at} < g.period + {width} AND n.last_ts = g.last_ts)"
        f" FROM (SELECT r.series_id AS sid, r.{at} - r.{at} % {width} AS period,"
        " sum(r.count_num) AS n, sum(r.sum_num) AS total, min(r.min_num) AS lo,"
        " max(r.max_num) AS hi, max(r.last_ts) AS last_ts"
        f" FROM series s JOIN {source} r ON r.series_id = s.id"
        f" AND r.{at} >= :p AND r.{at} < :e WHERE {chosen}"
        f" GROUP BY r.series_id, r.{at} - r.{at} % {width}) g"
        " WHERE true"  # SQLite: an upsert's SELECT needs a WHERE before ON CONFLICT
        f" ON CONFLICT (series_id, {start}) DO UPDATE SET count_num = excluded.count_num,"
        " sum_num = excluded.sum_num, min_num = excluded.min_num, max_num = excluded.max_num,"
        " last_ts = excluded.last_ts, last_num = excluded.last_num"
    )
    return statement.bindparams(bindparam("only", expanding=True)) if listed else statement


@dataclass(frozen=True, slots=True)
class Mark:
    """A tier's progress: every period before ``folded`` is in it; minutes written before
    ``upto`` are noted as late."""

    upto: int
    folded: int


@dataclass(frozen=True, slots=True)
class Coverage:
    """Up to where each tier holds every period (0: nothing folded yet)."""

    hour: int
    day: int


class RollupTiers:
    """Reads and fold jobs of the coarser tiers (see the module's text)."""

    def __init__(self, engine: AsyncEngine, writes: Writes) -> None:
        self._engine = engine
        self._writes = writes
        self._postgres = engine.dialect.name == "postgresql"

    async def mark(self, tier: Tier) -> Mark | None:
        """The tier's progress; None: never folded."""
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(rollup_marks.c.upto, rollup_marks.c.folded).where(
                        rollup_marks.c.tier == tier
                    )
                )
            ).first()
        return None if row is None else Mark(int(row.upto), int(row.folded))

    async def oldest(self, tier: Tier) -> int | None:
        """The start of the oldest row the tier is folded from (one index seek per series)."""
        source, at, _, _ = _SOURCES[tier]
        first = text(
            f"SELECT min(t.m) FROM (SELECT min({at}) AS m FROM {source} GROUP BY series_id) t"
        )
        async with self._engine.connect() as conn:
            oldest = (await conn.execute(first)).scalar()
        return None if oldest is None else int(oldest)

    async def series_bounds(self) -> tuple[int, int]:
        """The lowest series id and one past the highest ((0, 0): none)."""
        async with self._engine.connect() as conn:
            low, high = (
                await conn.execute(select(func.min(series.c.id), func.max(series.c.id)))
            ).one()
        return (0, 0) if low is None else (int(low), int(high) + 1)

    async def advance(self, tier: Tier, upto: int, *, folded: int | None = None) -> None:
        """Move the tier's ``upto`` mark (creating the row at ``folded`` if there is none):
        from now on, minutes before it are noted as late."""

        def job(conn: Connection) -> None:
            if self._postgres and tier == "hour":
                conn.execute(
                    text("SELECT pg_advisory_xact_lock(:a, :b)"),
                    {"a": MARK_LOCK[0], "b": MARK_LOCK[1]},
                )
            updated = conn.execute(
                rollup_marks.update().where(rollup_marks.c.tier == tier).values(upto=upto)
            )
            if updated.rowcount == 0:
                start = upto if folded is None else folded
                conn.execute(rollup_marks.insert().values(tier=tier, upto=upto, folded=start))

        await self._writes.run(job)

    async def fold(
        self, tier: Tier, span: tuple[int, int], low: int, high: int, *, done: bool
    ) -> None:
        """Fold the periods in ``span`` of the series ``[low, high)`` from the tier below;
        ``done``: these were the last series, the tier now holds every period up to its end."""
        statement = _fold(tier, listed=False)
        params = {"p": span[0], "e": span[1], "lo": low, "hi": high}

        def job(conn: Connection) -> None:
            conn.execute(statement, params)
            if done:
                conn.execute(
                    rollup_marks.update().where(rollup_marks.c.tier == tier).values(folded=span[1])
                )

        await self._writes.run(job)

    async def refold_late(self, keep_from: int, day_folded: int, limit: int) -> int:
        """Fold again up to ``limit`` hours that late minutes changed, and their days if the
        day tier holds them; how many. Hours before ``keep_from`` (whose minutes retention
        has begun to remove) are dropped from the list unfolded: their minutes are no longer
        all there, and a fold would replace the hour with a part of it."""
        pick = select(rollup_late.c.series_id, rollup_late.c.hour).limit(limit)
        hour_sql, day_sql = _fold("hour", listed=True), _fold("day", listed=True)

        def job(conn: Connection) -> int:
            late = [(int(r.series_id), int(r.hour)) for r in conn.execute(pick)]
            for series_id, hour in late:
                conn.execute(
                    delete(rollup_late).where(
                        rollup_late.c.series_id == series_id, rollup_late.c.hour == hour
                    )
                )
            by_hour: dict[int, list[int]] = {}
            for series_id, hour in late:
                if hour >= keep_from:
                    by_hour.setdefault(hour, []).append(series_id)
            by_day: dict[int, set[int]] = {}
            for hour, ids in sorted(by_hour.items()):
                conn.execute(hour_sql, {"p": hour, "e": hour + HOUR_MS, "only": ids})
                if hour < day_folded:
                    by_day.setdefault(hour - hour % DAY_MS, set()).update(ids)
            for day, day_ids in sorted(by_day.items()):
                conn.execute(day_sql, {"p": day, "e": day + DAY_MS, "only": sorted(day_ids)})
            return len(late)

        return await self._writes.run(job)


async def coverage(conn: AsyncConnection) -> Coverage:
    """Up to where the hour and day tiers hold every period, read on ``conn`` (the history
    query's own, so both see the same moment)."""
    rows = await conn.execute(select(rollup_marks.c.tier, rollup_marks.c.folded))
    folded = {str(r.tier): int(r.folded) for r in rows}
    return Coverage(folded.get("hour", 0), folded.get("day", 0))
