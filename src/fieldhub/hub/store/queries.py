"""Read side of the store: latest values, downsampled history, the event log."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import groupby, islice
from operator import itemgetter
from typing import Any, Literal

from sqlalchemy import (
    BigInteger,
    Float,
    Integer,
    Row,
    Select,
    Table,
    and_,
    bindparam,
    case,
    func,
    literal_column,
    or_,
    select,
    text,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.elements import BindParameter

from fieldhub.hub.errors import Invalid, NotFound
from fieldhub.hub.store.media import media_of_events
from fieldhub.hub.store.rollup_tiers import DAY_MS, HOUR_MS, Coverage, coverage
from fieldhub.hub.store.schema import events, rollups, rollups_day, rollups_hour, samples, series

Aggregate = Literal["avg", "min", "max", "last", "count"]
WireValue = bool | float | str | None
MINUTE_MS = 60_000
"""Width of a rollup: buckets that are a whole number of minutes are answered from rollups."""
HISTORY_CONCURRENCY = 4
"""Connections one history request reads a long range on, at most (see ``split_after_ms``)."""


def tier_spans(start: int, end: int, bucket_ms: int, covered: Coverage | None) -> dict[str, int]:
    """Where each tier answers a history of ``[start, end)`` in buckets of ``bucket_ms`` (whole
    minutes; ``covered``: the tiers' coverage, None when the bucket is not whole hours): raw
    samples before ``first`` and from ``last``; minutes in ``[first, hour_first)`` and
    ``[hour_last, last)``; hours in ``[hour_first, day_first)`` and ``[day_last, hour_last)``;
    days in ``[day_first, day_last)``. A tier serves only buckets it cannot cut (hours need a
    bucket of whole hours, days of whole days; both are aligned on the epoch, as buckets are)
    and only the periods it holds; an unused tier has an empty span."""
    first = -(-start // MINUTE_MS) * MINUTE_MS
    last = end // MINUTE_MS * MINUTE_MS
    hour_first = hour_last = day_first = day_last = first
    if covered is not None:
        low, high = -(-start // HOUR_MS) * HOUR_MS, min(end // HOUR_MS * HOUR_MS, covered.hour)
        if low < high:
            hour_first, hour_last = low, high
            day_first = day_last = low
            if bucket_ms % DAY_MS == 0:
                low, high = -(-start // DAY_MS) * DAY_MS, min(end // DAY_MS * DAY_MS, covered.day)
                if low < high:
                    day_first, day_last = low, high
    return {
        "start": start,
        "end": end,
        "first": first,
        "last": last,
        "hour_first": hour_first,
        "hour_last": hour_last,
        "day_first": day_first,
        "day_last": day_last,
    }


def render_value(kind: str, num: float | None, txt: str | None) -> WireValue:
    """Turn stored columns back into the value a device sent."""
    if txt is not None:
        return txt
    if num is None:
        return None
    if kind == "bool":
        return num != 0
    return int(num) if num.is_integer() and abs(num) < 2**53 else num


class UnknownKeys(NotFound):
    """A history asked for keys the device has never sent."""


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
    media: tuple[dict[str, Any], ...] = ()  # the announced objects' views (store/media.py)

    @classmethod
    def from_row(
        cls, row: Any, media: Mapping[tuple[str, int], list[dict[str, Any]]] | None = None
    ) -> EventRecord:
        """The event of a row of ``schema.events``, with its media found in ``media``."""
        announced = media.get((row.device_id, row.seq), ()) if media and row.seq else ()
        return cls(
            row.id,
            row.device_id,
            row.seq,
            row.ts,
            row.received_at,
            row.type,
            row.severity,
            row.message,
            dict(row.data or {}),
            tuple(announced),
        )

    def view(self) -> dict[str, Any]:
        """The event as every answer shows it: ``GET /api/events`` (``api.models.EventOut``,
        the same fields) and the live WebSocket's ``event`` frames."""
        return {
            "id": self.id,
            "device_id": self.device_id,
            "seq": self.seq,
            "ts": self.ts,
            "received_at": self.received_at,
            "type": self.type,
            "severity": self.severity,
            "message": self.message,
            "data": self.data,
            "media": list(self.media),
        }


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
        self._statements: dict[str, Select[Any]] = {}  # history's, by path and aggregate
        self.split_after_ms = 3 * 86_400_000
        """Histories of longer ranges read their series on several connections at once. In
        process, 5 keys, 2 busy cores (medians): 24 h 13 ms on one connection, 23 split; 3 days
        22 and 33; 7 days 37 and 31; 90 days 558 and 368."""

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
        """:meth:`histories` of one series."""
        answer = await self.histories(
            {series_id: kind},
            start=start,
            end=end,
            bucket_ms=bucket_ms,
            agg=agg,
            limit=limit,
            from_samples=from_samples,
        )
        return answer[series_id]

    async def histories(
        self,
        series_kinds: Mapping[int, str],
        *,
        start: int,
        end: int,
        bucket_ms: int | None,
        agg: Aggregate,
        limit: int,
        from_samples: bool = False,
    ) -> dict[int, list[tuple[int, WireValue]]]:
        """Points of each series (id → kind) in ``[start, end)``: raw, or one per bucket
        aggregated by ``agg``; at most ``limit`` per series, oldest first.

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
        async with self._engine.connect() as conn:
            return await self._histories(
                conn, series_kinds, (start, end), bucket_ms, agg, limit, from_samples
            )

    async def device_history(
        self,
        device_id: str,
        keys: Sequence[str] | None,
        *,
        start: int,
        end: int,
        bucket_ms: int | None,
        agg: Aggregate,
        limit: int,
    ) -> dict[str, list[tuple[int, WireValue]]]:
        """:meth:`histories` of the device's ``keys`` (None: all of them, by name), by key.

        The keys are looked up on the connection that then reads the points: one checkout
        and one statement fewer than :meth:`keys` first (about 1 ms of a 10 ms answer).

        Raises:
            UnknownKeys: the device has never sent some of ``keys`` (or is not registered).
        """
        async with self._engine.connect() as conn:
            known = {
                key: (series_id, kind)
                for key, series_id, kind in await conn.execute(
                    self._statement("keys", self._keys), {"device_id": device_id}
                )
            }
            wanted = sorted(known) if keys is None else keys
            unknown = [k for k in wanted if k not in known]
            if unknown:
                raise UnknownKeys(f"device {device_id!r} has no key {', '.join(unknown)}")
            points = await self._histories(
                conn, dict(known[k] for k in wanted), (start, end), bucket_ms, agg, limit, False
            )
        return {key: points[known[key][0]] for key in wanted}

    async def _histories(
        self,
        conn: AsyncConnection,
        series_kinds: Mapping[int, str],
        span: tuple[int, int],
        bucket_ms: int | None,
        agg: Aggregate,
        limit: int,
        from_samples: bool,
    ) -> dict[int, list[tuple[int, WireValue]]]:
        """:meth:`histories` on ``conn``.

        Buckets of all the series come from one statement (up to ``split_after_ms``), built
        once per aggregate and executed with new parameters: a day of 5 keys in buckets of
        5 minutes cost 25-41 ms as one statement per key (each built and compiled anew, on its
        own connection, the keys concurrently), 7-11 ms so, of which SQLite's own work is
        4-5 ms (measured in process, 2 busy cores). The limit of each series is applied while
        reading: a bucketed answer has few rows per series (the API allows 10,000 buckets).
        """
        start, end = span
        answer: dict[int, list[tuple[int, WireValue]]] = {i: [] for i in series_kinds}
        if not answer:
            return answer
        if bucket_ms is None:
            # Raw points: one series at a time, so that LIMIT bounds what is read.
            raw = self._statement("raw", self._raw)
            for series_id, kind in series_kinds.items():
                window = {"series_id": series_id, "start": start, "end": end, "limit": limit}
                rows = await conn.execute(raw, window)
                answer[series_id] = [(ts, render_value(kind, num, txt)) for ts, num, txt in rows]
            return answer
        first_minute = -(-start // MINUTE_MS) * MINUTE_MS
        last_minute = end // MINUTE_MS * MINUTE_MS
        params: dict[str, int]
        if not from_samples and bucket_ms % MINUTE_MS == 0 and first_minute < last_minute:
            query = self._statement(f"rolled_up {agg}", lambda: self._rolled_up(agg))
            covered = await coverage(conn) if bucket_ms % HOUR_MS == 0 else None
            params = tier_spans(start, end, bucket_ms, covered)
        else:
            query = self._statement(f"bucketed {agg}", lambda: self._bucketed(agg))
            params = {"start": start, "end": end}
        params["width"] = bucket_ms
        ids = list(answer)

        async def read(connection: AsyncConnection, part: list[int]) -> list[Row[Any]]:
            return list((await connection.execute(query, {"ids": part, **params})).all())

        if len(ids) == 1 or end - start <= self.split_after_ms:
            rows = await read(conn, ids)
        else:
            # A long range costs SQLite more than the hops to its thread: a few connections
            # read one series after another at once (the driver releases the GIL while a query
            # runs). Each takes the next series not yet taken.
            pending = iter(ids)

            async def worker(connection: AsyncConnection) -> list[Row[Any]]:
                found = []
                for series_id in pending:
                    found += await read(connection, [series_id])
                return found

            async def own_worker() -> list[Row[Any]]:
                async with self._engine.connect() as own:
                    return await worker(own)

            helpers = min(HISTORY_CONCURRENCY, len(ids)) - 1
            runs = await asyncio.gather(worker(conn), *(own_worker() for _ in range(helpers)))
            rows = [row for run in runs for row in run]
        # Rows come ordered by series, then bucket: one run per series.
        for series_id, run in groupby(rows, itemgetter(0)):
            if agg == "count":
                answer[series_id] = [(r[1], int(r[2])) for r in islice(run, limit)]
            else:
                # An average is a number, also of booleans; their min, max and last are not.
                shown = "number" if agg == "avg" else series_kinds[series_id]
                answer[series_id] = [
                    (r[1], render_value(shown, r[2], None)) for r in islice(run, limit)
                ]
        return answer

    def _statement(self, name: str, build: Callable[[], Select[Any]]) -> Select[Any]:
        # Built once: SQLAlchemy then finds its compiled form in its cache by a key memoised
        # on the statement, instead of building and hashing a union of ~20 clauses per call.
        statement = self._statements.get(name)
        if statement is None:
            statement = self._statements[name] = build()
        return statement

    def _keys(self) -> Select[Any]:
        return select(series.c.key, series.c.id, series.c.kind).where(
            series.c.device_id == bindparam("device_id")
        )

    def _raw(self) -> Select[Any]:
        return (
            select(samples.c.ts, samples.c.num, samples.c.txt)
            .where(
                samples.c.series_id == bindparam("series_id"),
                samples.c.ts >= bindparam("start", type_=BigInteger),
                samples.c.ts < bindparam("end", type_=BigInteger),
            )
            .order_by(samples.c.ts)
            .limit(bindparam("limit", type_=Integer))
        )

    def _bucketed(self, agg: Aggregate) -> Select[Any]:
        """Series id, bucket and value of the buckets of the series ``:ids`` in
        ``[:start, :end)``, ``:width`` wide, from the raw samples."""
        width = bindparam("width", type_=BigInteger)
        bucket = ((samples.c.ts // width) * width).label("bucket")
        window = and_(
            samples.c.series_id.in_(bindparam("ids", expanding=True)),
            samples.c.ts >= bindparam("start", type_=BigInteger),
            samples.c.ts < bindparam("end", type_=BigInteger),
        )
        value: Any
        extra: list[Any] = []
        if agg == "last":
            if self._dialect == "sqlite":
                # SQLite: a bare column next to max() takes its value from the max row.
                value = samples.c.num.label("value")
                extra = [func.max(samples.c.ts)]
            else:
                value = text("(array_agg(samples.num ORDER BY samples.ts DESC))[1] AS value")
        else:
            value = getattr(func, agg)(samples.c.num).label("value")
        return (
            select(samples.c.series_id, bucket, value, *extra)
            .where(window)
            .group_by(samples.c.series_id, literal_column("bucket"))
            .order_by(samples.c.series_id, literal_column("bucket"))
        )

    def _rolled_up(self, agg: Aggregate) -> Select[Any]:
        """``_bucketed`` from the coarsest rollups that fit, as :func:`tier_spans` cuts
        ``[:start, :end)``: days, hours and minutes, and the raw samples of the partial
        minutes at the edges, each sample taken as a rollup of its own."""
        ids: BindParameter[Any] = bindparam("ids", expanding=True)

        def tier(table: Table, at: Any, low: str, high: str) -> Select[Any]:
            return select(
                table.c.series_id.label("series_id"),
                at.label("at"),
                table.c.count_num.label("n"),
                table.c.sum_num.label("total"),
                table.c.min_num.label("lo"),
                table.c.max_num.label("hi"),
                table.c.last_ts.label("last_ts"),
                table.c.last_num.label("last_num"),
            ).where(
                table.c.series_id.in_(ids),
                at >= bindparam(low, type_=BigInteger),
                at < bindparam(high, type_=BigInteger),
            )

        wholes = (
            tier(rollups, rollups.c.minute, "first", "hour_first"),
            tier(rollups, rollups.c.minute, "hour_last", "last"),
            tier(rollups_hour, rollups_hour.c.hour, "hour_first", "day_first"),
            tier(rollups_hour, rollups_hour.c.hour, "day_last", "hour_last"),
            tier(rollups_day, rollups_day.c.day, "day_first", "day_last"),
        )
        first = bindparam("first", type_=BigInteger)
        last = bindparam("last", type_=BigInteger)

        def raw(low: Any, high: Any) -> Select[Any]:
            return select(
                samples.c.series_id,
                samples.c.ts,
                case((samples.c.num.is_(None), 0), else_=1),
                func.coalesce(samples.c.num, 0.0),
                samples.c.num,
                samples.c.num,
                samples.c.ts,
                samples.c.num,
            ).where(samples.c.series_id.in_(ids), samples.c.ts >= low, samples.c.ts < high)

        edges = (bindparam("start", type_=BigInteger), bindparam("end", type_=BigInteger))
        parts = union_all(*wholes, raw(edges[0], first), raw(last, edges[1])).subquery("parts")
        width = bindparam("width", type_=BigInteger)
        bucket = ((parts.c.at // width) * width).label("bucket")
        keys: tuple[Any, ...] = (parts.c.series_id, literal_column("bucket"))
        value: Any
        if agg == "last":
            if self._dialect == "sqlite":
                # The only max() of the query: the bare column comes from its row (as above).
                return (
                    select(
                        parts.c.series_id,
                        bucket,
                        parts.c.last_num.label("value"),
                        func.max(parts.c.last_ts),
                    )
                    .group_by(*keys)
                    .order_by(*keys)
                )
            value = text("(array_agg(parts.last_num ORDER BY parts.last_ts DESC))[1] AS value")
        elif agg == "avg":
            # Null when the bucket holds no number (text only), as avg() gives; no division by 0.
            count = func.nullif(func.sum(parts.c.n), 0)
            value = func.sum(parts.c.total).op("/", return_type=Float)(count).label("value")
        else:
            column = {"count": parts.c.n, "min": parts.c.lo, "max": parts.c.hi}[agg]
            value = getattr(func, "sum" if agg == "count" else agg)(column).label("value")
        return select(parts.c.series_id, bucket, value).group_by(*keys).order_by(*keys)

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
            Invalid: the cursor is not one this function returned.
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
            media = await media_of_events(conn, ((r.device_id, r.seq) for r in rows[:limit]))
        page = [EventRecord.from_row(r, media) for r in rows[:limit]]
        next_cursor = f"{page[-1].ts}:{page[-1].id}" if len(rows) > limit else None
        return EventPage(page, next_cursor)


def _parse_cursor(cursor: str) -> tuple[int, int]:
    try:
        ts, event_id = cursor.split(":")
        return int(ts), int(event_id)
    except ValueError:
        raise Invalid(
            f"cursor {cursor!r} is not valid; use the next_cursor of a page", ("query", "cursor")
        ) from None
