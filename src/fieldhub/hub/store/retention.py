"""Retention's rows: the policy row, and the delete jobs the trimmer runs in small batches.

Every trim job removes at most ``limit`` rows and says how many it removed, so one job is one
short transaction (on SQLite one turn of the writer thread, between ingest commits) and the
caller repeats it until fewer come back. Batches are cut along the tables' own keys (samples
and rollups by ``(series_id, ts)``, events by ``ts``), so a batch finds its rows with one index
range instead of a scan, on both databases (neither takes ``DELETE ... LIMIT`` portably).
Cleared alarms go oldest first with their changes and escalation marks; an alarm that is not
cleared is never removed, however old.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any, Final, Literal

from sqlalchemy import Table, delete, func, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from fieldhub.hub.store.schema import (
    alarm_changes,
    alarm_escalations,
    alarms,
    events,
    retention_policy,
    rollups,
    rollups_day,
    rollups_hour,
    samples,
    series,
)
from fieldhub.hub.store.writes import Writes

__all__ = ["DatabaseSpace", "PolicyRow", "RetentionRows", "RollupTier", "SeriesRef"]

RollupTier = Literal["minute", "hour", "day"]
_TIERS: Final[dict[str, tuple[Table, Any]]] = {
    "minute": (rollups, rollups.c.minute),
    "hour": (rollups_hour, rollups_hour.c.hour),
    "day": (rollups_day, rollups_day.c.day),
}


@dataclass(frozen=True, slots=True)
class PolicyRow:
    """The stored policy (as JSON) and who set it when."""

    policy: dict[str, Any]
    updated_at: int
    updated_by: str


@dataclass(frozen=True, slots=True)
class DatabaseSpace:
    """Bytes the database uses, and bytes it holds free for new rows."""

    in_use: int
    reusable: int


@dataclass(frozen=True, slots=True)
class SeriesRef:
    """One series: whose, which key."""

    id: int
    device_id: str
    key: str


class RetentionRows:
    """Reads and writes of retention (see the module's text)."""

    def __init__(self, engine: AsyncEngine, writes: Writes) -> None:
        self._engine = engine
        self._writes = writes

    async def policy(self) -> PolicyRow | None:
        """The stored policy; None: none was ever set (the defaults hold)."""
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(retention_policy))).first()
        if row is None:
            return None
        return PolicyRow(dict(row.policy), row.updated_at, row.updated_by)

    async def set_policy(self, policy: dict[str, Any], *, at: int, by: str) -> None:
        """Replace the stored policy."""

        def job(conn: Connection) -> None:
            conn.execute(delete(retention_policy))
            conn.execute(
                retention_policy.insert().values(id=1, policy=policy, updated_at=at, updated_by=by)
            )

        await self._writes.run(job, urgent=True)

    async def series(self) -> list[SeriesRef]:
        """Every series, by id."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(series.c.id, series.c.device_id, series.c.key).order_by(series.c.id)
            )
            return [SeriesRef(r.id, r.device_id, r.key) for r in rows]

    async def oldest_sample(self) -> int | None:
        """The instant of the oldest raw sample (one index seek per series), None: none."""
        first = select(func.min(samples.c.ts).label("ts")).group_by(samples.c.series_id).subquery()
        async with self._engine.connect() as conn:
            oldest = (await conn.execute(select(func.min(first.c.ts)))).scalar()
        return None if oldest is None else int(oldest)

    async def trim_samples(self, series_id: int, before: int, limit: int) -> int:
        """Delete up to ``limit`` samples of ``series_id`` older than ``before``, oldest first."""
        return await self._trim_series(samples, samples.c.ts, series_id, before, limit)

    async def trim_rollups(self, tier: RollupTier, series_id: int, before: int, limit: int) -> int:
        """Delete up to ``limit`` rollups of ``tier`` of ``series_id`` that start before
        ``before``."""
        table, start = _TIERS[tier]
        return await self._trim_series(table, start, series_id, before, limit)

    async def trim_alarms(self, before: int, limit: int) -> int:
        """Delete up to ``limit`` alarms cleared before ``before``, oldest first, with their
        changes (and comments) and escalation marks."""
        chosen = (
            select(alarms.c.id)
            .where(alarms.c.state == "cleared", alarms.c.cleared_at < before)
            .order_by(alarms.c.cleared_at)
            .limit(limit)
        )

        def job(conn: Connection) -> int:
            ids = [row[0] for row in conn.execute(chosen)]
            if ids:
                conn.execute(delete(alarm_changes).where(alarm_changes.c.alarm_id.in_(ids)))
                conn.execute(delete(alarm_escalations).where(alarm_escalations.c.alarm_id.in_(ids)))
                conn.execute(delete(alarms).where(alarms.c.id.in_(ids)))
            return len(ids)

        return await self._writes.run(job)

    async def trim_events(
        self,
        before: int,
        limit: int,
        *,
        only: AbstractSet[str] | None = None,
        but: AbstractSet[str] = frozenset(),
    ) -> int:
        """Delete up to ``limit`` events older than ``before``, oldest first: of the types
        ``only`` if given, else of every type not in ``but``."""
        old = select(events.c.id).where(events.c.ts < before)
        if only is not None:
            old = old.where(events.c.type.in_(only))
        elif but:
            old = old.where(events.c.type.not_in(but))
        chosen = old.order_by(events.c.ts).limit(limit)

        def job(conn: Connection) -> int:
            ids = [row[0] for row in conn.execute(chosen)]
            if ids:
                conn.execute(delete(events).where(events.c.id.in_(ids)))
            return len(ids)

        return await self._writes.run(job)

    async def _trim_series(
        self, table: Any, ts: Any, series_id: int, before: int, limit: int
    ) -> int:
        # The batch's last instant, found on the primary key: the rows up to it are the batch.
        last = (
            select(ts)
            .where(table.c.series_id == series_id, ts < before)
            .order_by(ts)
            .offset(limit - 1)
            .limit(1)
        )

        def job(conn: Connection) -> int:
            edge = conn.execute(last).scalar()
            upto = ts <= edge if edge is not None else ts < before
            result = conn.execute(delete(table).where(table.c.series_id == series_id, upto))
            return int(result.rowcount or 0)

        return await self._writes.run(job)

    async def database_space(self) -> DatabaseSpace:
        """What the database holds: on SQLite its pages in use and its free pages (which new
        rows reuse: the file stops growing rather than shrinking); on PostgreSQL
        ``pg_database_size``, none counted reusable (the server's own vacuum reuses it)."""
        async with self._engine.connect() as conn:
            if self._engine.dialect.name != "sqlite":
                size = text("SELECT pg_database_size(current_database())")
                return DatabaseSpace(int((await conn.execute(size)).scalar_one()), 0)
            pages = (await conn.execute(text("PRAGMA page_count"))).scalar_one()
            free = (await conn.execute(text("PRAGMA freelist_count"))).scalar_one()
            page = (await conn.execute(text("PRAGMA page_size"))).scalar_one()
            return DatabaseSpace(int((pages - free) * page), int(free * page))
