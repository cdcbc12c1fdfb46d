"""Stored history in time order, as a rule preview replays it (``hub/alarms/preview.py``).

The dashboard's history reads one series at a time, newest first or bucketed; a preview needs
the opposite: every value of one key (or every event of a family) of many devices, oldest
first, merged, up to a bound, so the alarm engine can be handed them as it was handed them
live. Times are the devices' own (``ts``), the only time a sample has.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from fieldhub.hub.store.queries import render_value
from fieldhub.hub.store.schema import events, samples, series

__all__ = ["EventRow", "HistoryReader", "ValueRow"]


@dataclass(frozen=True, slots=True)
class ValueRow:
    """One stored telemetry value."""

    at: int
    device_id: str
    value: Any


@dataclass(frozen=True, slots=True)
class EventRow:
    """One stored event (presence changes are events ``presence.<state>``)."""

    at: int
    device_id: str
    type: str
    message: str


class HistoryReader:
    """Reads of samples and events over a span, oldest first, at most ``limit`` rows."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def values(
        self, device_ids: Sequence[str], key: str, start: int, end: int, limit: int
    ) -> list[ValueRow]:
        """Values of ``key`` of the devices in ``[start, end)``, by time."""
        query = (
            select(series.c.device_id, series.c.kind, samples.c.ts, samples.c.num, samples.c.txt)
            .join(samples, samples.c.series_id == series.c.id)
            .where(
                series.c.key == key,
                series.c.device_id.in_(list(device_ids)),
                samples.c.ts >= start,
                samples.c.ts < end,
            )
            .order_by(samples.c.ts, series.c.device_id)
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            rows = await conn.execute(query)
        return [ValueRow(r.ts, r.device_id, render_value(r.kind, r.num, r.txt)) for r in rows]

    async def events(
        self, device_ids: Sequence[str], type_prefix: str, start: int, end: int, limit: int
    ) -> list[EventRow]:
        """Events of the devices whose type starts with ``type_prefix`` in ``[start, end)``,
        by time (the caller matches the rest of its pattern)."""
        query = (
            select(events.c.ts, events.c.device_id, events.c.type, events.c.message)
            .where(
                events.c.device_id.in_(list(device_ids)),
                events.c.ts >= start,
                events.c.ts < end,
            )
            .order_by(events.c.ts, events.c.id)
            .limit(limit)
        )
        if type_prefix:
            # autoescape: '_' and '%' in a type are literal characters, not LIKE wildcards.
            query = query.where(events.c.type.startswith(type_prefix, autoescape=True))
        async with self._engine.connect() as conn:
            rows = await conn.execute(query)
        return [EventRow(r.ts, r.device_id, r.type, r.message) for r in rows]
