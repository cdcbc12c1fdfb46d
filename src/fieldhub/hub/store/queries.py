"""Read side of the store: latest values, downsampled history, the event log."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import (
    Float,
    Select,
    and_,
    case,
    func,
    literal_column,
    or_,
    select,
    text,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from fieldhub.hub.store.schema import events, rollups, samples, series

Aggregate = Literal["avg", "min", "max", "last", "count"]
WireValue = bool | float | str | None
MINUTE_MS = 60_000
"""Width of a rollup: buckets that are a whole number of minutes are answered from rollups."""


def render_value(kind: str, num: float | None, txt: str | None) -> WireValue:
    """Turn stored columns back into the value a device sent."""
    if txt is not None:
        return txt
    if num is None:
        return None
    if kind == "bool":
        return num != 0
    return int(num) if num.is_integer() and abs(num) < 2**53 else num


@dataclass(frozen=True, slots=True)
class LatestValue:
    """The newest value of one key of a device."""

    key: str
    ts: int
    value: WireValue


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One stored event."""

    id: int
    device_id: str
    seq: int | None
    ts: int
    received_at: int
    type: str
    severity: str
    message: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class EventPage:
    """A page of events, newest first, and the cursor of the next (older) page."""

    events: list[EventRecord]
    next_cursor: str | None


class Queries:
    """Read-only queries the API serves."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._dialect = engine.dialect.name

    async def latest(self, device_id: str) -> list[LatestValue]:
        """Newest value of every key the device has sent."""
        query = (
            select(
                series.c.key, series.c.kind, series.c.last_ts, series.c.last_num, series.c.last_txt
            )
            .where(series.c.device_id == device_id, series.c.last_ts.is_not(None))
            .order_by(series.c.key)
        )
        async with self._engine.connect() as conn:
            rows = await conn.execute(query)
            return [
                LatestValue(r.key, r.last_ts, render_value(r.kind, r.last_num, r.last_txt))
                for r in rows
            ]

    async def keys(self, device_id: str) -> dict[str, tuple[int, str]]:
        """Series id and kind of every key of the device."""
        query = select(series.c.key, series.c.id, series.c.kind).where(
            series.c.device_id == device_id
        )
        async with self._engine.connect() as conn:
            return {r.key: (r.id, r.kind) for r in await conn.execute(query)}

    async def history(
        self,
        *,
        series_id: int,
        kind: str,
        start: int,
        end: int,
        bucket_ms: int | None,
        agg: Aggregate,
        limit: int,
        from_samples: bool = False,
    ) -> list[tuple[int, WireValue]]:
        """Points of one series in ``[start, end)``: raw, or one per bucket aggregated by ``agg``.

        Buckets are aligned to multiples of ``bucket_ms`` since the epoch and labelled by their
        start, so the same bucket has the same label whatever range is asked for.

        Buckets of whole minutes are aggregated from the per-minute rollups (``schema.rollups``)
        of the whole minutes inside the range, plus the raw samples of the partial minutes at
        its edges (``start`` or ``end`` inside a minute), so a bucket cut by an edge counts only
        what lies in the range, as aggregating the raw samples would. The answers are those
        of the raw aggregation (a test compares both), except that ``avg`` adds the same values
        in another order and may differ from it in the last bits of the float.
        ``from_samples`` aggregates the raw samples anyway (to check the rollups, or to time
        the difference).
        """
        window = and_(samples.c.series_id == series_id, samples.c.ts >= start, samples.c.ts < end)
        async with self._engine.connect() as conn:
            if bucket_ms is None:
                raw = (
                    select(samples.c.ts, samples.c.num, samples.c.txt)
                    .where(window)
                    .order_by(samples.c.ts)
                    .limit(limit)
                )
                rows = await conn.execute(raw)
                return [(r.ts, render_value(kind, r.num, r.txt)) for r in rows]
            first_minute = -(-start // MINUTE_MS) * MINUTE_MS
            last_minute = end // MINUTE_MS * MINUTE_MS
            if not from_samples and bucket_ms % MINUTE_MS == 0 and first_minute < last_minute:
                query = self._rolled_up(
                    series_id, (start, end), (first_minute, last_minute), bucket_ms, agg
                )
            else:
                query = self._bucketed(window, bucket_ms, agg)
            rows = await conn.execute(query.limit(limit))
            if agg == "count":
                return [(r.bucket, int(r.value)) for r in rows]
            if agg in ("avg",) or kind != "bool":
                return [(r.bucket, render_value("number", r.value, None)) for r in rows]
            return [(r.bucket, render_value(kind, r.value, None)) for r in rows]

    def _bucketed(self, window: Any, bucket_ms: int, agg: Aggregate) -> Select[Any]:
        bucket = ((samples.c.ts // bucket_ms) * bucket_ms).label("bucket")
        value: Any
        if agg == "last":
            if self._dialect == "sqlite":
                # SQLite: a bare column next to max() takes its value from the max row.
                value = samples.c.num.label("value")
                extra = [func.max(samples.c.ts)]
                return (
                    select(bucket, value, *extra)
                    .where(window)
                    .group_by(literal_column("bucket"))
                    .order_by(literal_column("bucket"))
                )
            value = text("(array_agg(samples.num ORDER BY samples.ts DESC))[1] AS value")
        else:
            value = getattr(func, agg)(samples.c.num).label("value")
        return (
            select(bucket, value)
            .where(window)
            .group_by(literal_column("bucket"))
            .order_by(literal_column("bucket"))
        )

    def _rolled_up(
        self,
        series_id: int,
        span: tuple[int, int],
        minutes: tuple[int, int],
        bucket_ms: int,
        agg: Aggregate,
    ) -> Select[Any]:
        """``_bucketed`` from the rollups of the whole minutes ``minutes`` of ``span``, and
        the raw samples of the partial minutes before and after them, each sample taken as a
        rollup of its own."""
        (start, end), (first, last) = span, minutes
        whole = select(
            rollups.c.minute.label("at"),
            rollups.c.count_num.label("n"),
            rollups.c.sum_num.label("total"),
            rollups.c.min_num.label("lo"),
            rollups.c.max_num.label("hi"),
            rollups.c.last_ts.label("last_ts"),
            rollups.c.last_num.label("last_num"),
        ).where(
            rollups.c.series_id == series_id, rollups.c.minute >= first, rollups.c.minute < last
        )

        def raw(low: int, high: int) -> Select[Any]:
            return select(
                samples.c.ts,
                case((samples.c.num.is_(None), 0), else_=1),
                func.coalesce(samples.c.num, 0.0),
                samples.c.num,
                samples.c.num,
                samples.c.ts,
                samples.c.num,
            ).where(samples.c.series_id == series_id, samples.c.ts >= low, samples.c.ts < high)

        parts = union_all(whole, raw(start, first), raw(last, end)).subquery("parts")
        bucket = ((parts.c.at // bucket_ms) * bucket_ms).label("bucket")
        value: Any
        if agg == "last":
            if self._dialect == "sqlite":
                # The only max() of the query: the bare column comes from its row (as above).
                return (
                    select(bucket, parts.c.last_num.label("value"), func.max(parts.c.last_ts))
                    .group_by(literal_column("bucket"))
                    .order_by(literal_column("bucket"))
                )
            value = text("(array_agg(parts.last_num ORDER BY parts.last_ts DESC))[1] AS value")
        elif agg == "avg":
            # Null when the bucket holds no number (text only), as avg() gives; no division by 0.
            count = func.nullif(func.sum(parts.c.n), 0)
            value = func.sum(parts.c.total).op("/", return_type=Float)(count).label("value")
        else:
            column = {"count": parts.c.n, "min": parts.c.lo, "max": parts.c.hi}[agg]
            value = getattr(func, "sum" if agg == "count" else agg)(column).label("value")
        return (
            select(bucket, value)
            .group_by(literal_column("bucket"))
            .order_by(literal_column("bucket"))
        )

    async def events(
        self,
        *,
        device_ids: list[str] | None = None,
        types: list[str] | None = None,
        severities: list[str] | None = None,
        start: int | None = None,
        end: int | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> EventPage:
        """Events matching every given filter, newest first, ``limit`` per page.

        A type ending in ``.*`` matches a family (``door.*``).

        Raises:
            ValueError: the cursor is not one this function returned.
        """
        query = select(events)
        if device_ids is not None:
            query = query.where(events.c.device_id.in_(device_ids))
        if types:
            exact = [t for t in types if not t.endswith(".*")]
            prefixes = [t[:-1] for t in types if t.endswith(".*")]
            # autoescape: '_' and '%' in a family are literal characters, not LIKE wildcards.
            families = (events.c.type.startswith(p, autoescape=True) for p in prefixes)
            query = query.where(or_(events.c.type.in_(exact), *families))
        if severities:
            query = query.where(events.c.severity.in_(severities))
        if start is not None:
            query = query.where(events.c.ts >= start)
        if end is not None:
            query = query.where(events.c.ts < end)
        if cursor:
            ts, event_id = _parse_cursor(cursor)
            query = query.where(
                or_(events.c.ts < ts, and_(events.c.ts == ts, events.c.id < event_id))
            )
        query = query.order_by(events.c.ts.desc(), events.c.id.desc()).limit(limit + 1)
        async with self._engine.connect() as conn:
            rows = list(await conn.execute(query))
        page = [
            EventRecord(
                r.id,
                r.device_id,
                r.seq,
                r.ts,
                r.received_at,
                r.type,
                r.severity,
                r.message,
                dict(r.data or {}),
            )
            for r in rows[:limit]
        ]
        next_cursor = f"{page[-1].ts}:{page[-1].id}" if len(rows) > limit else None
        return EventPage(page, next_cursor)


def _parse_cursor(cursor: str) -> tuple[int, int]:
    try:
        ts, event_id = cursor.split(":")
        return int(ts), int(event_id)
    except ValueError:
        raise ValueError(f"cursor {cursor!r} is not valid; use the next_cursor of a page") from None
