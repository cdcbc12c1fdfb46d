"""The ids of the events an ingest commit stored, read back for the live API.

Why a read: ingest writes events without asking the database for their ids, and live clients
get events as ``GET /api/events`` lists them, ids included (a page merges the two). So after
each commit that stored events some client watches, their rows are read back by
``(device, ts)`` -- what the events index leads with -- and matched on seq and type. When the
writer hands the ids back with the batch, this module goes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from fieldhub.hub.ingest.batch import PresenceChange
from fieldhub.hub.store.media import media_of_events
from fieldhub.hub.store.queries import EventRecord
from fieldhub.hub.store.schema import events
from fieldhub.protocol import Event

EventKey = tuple[str, int | None, int, str]
"""(device, seq, ts, type): what tells the events of one commit apart."""
_CHUNK: Final = 200


def event_keys(
    device_events: list[tuple[str, int, Event]], presence: list[PresenceChange]
) -> Iterable[EventKey]:
    """Keys of the events a batch stored: the devices' own, then the presence events the
    writer records for every presence change (``presence.<state>``, at its time)."""
    for device_id, _received, event in device_events:
        yield (device_id, event.seq, event.ts, event.type)
    for change in presence:
        yield (change.device_id, None, change.since, f"presence.{change.presence}")


async def stored_events(engine: AsyncEngine, keys: Iterable[EventKey]) -> dict[EventKey, Any]:
    """The stored events with these keys, as ``GET /api/events`` shows them; a key whose row
    is gone (the device was deleted meanwhile) is missing from the answer."""
    found: dict[EventKey, Any] = {}
    keys = list(keys)
    wanted = sorted({(key[0], key[2]) for key in keys})
    async with engine.connect() as conn:
        media = await media_of_events(conn, ((key[0], key[1]) for key in keys))
        for start in range(0, len(wanted), _CHUNK):
            chunk = wanted[start : start + _CHUNK]
            query = select(events).where(
                or_(*(and_(events.c.device_id == d, events.c.ts == ts) for d, ts in chunk))
            )
            for row in await conn.execute(query):
                key = (row.device_id, row.seq, row.ts, row.type)
                previous = found.get(key)
                if previous is None or previous["id"] < row.id:  # the newest of twins
                    found[key] = EventRecord.from_row(row, media).view()
    return found
