"""Media rows: what events announced, which objects are complete, what retention removes.

One row per entry of an event's ``media`` list (``schema.media``), written by ingest in the
event's own transaction (``media_rows``), so an acknowledged event always has its rows. The
object itself is a file named by its SHA-256 (``hub/media/files.py``); rows of the same object
share it, and it is removed only when no row names it any more.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from fieldhub.hub.errors import NotFound
from fieldhub.hub.store.schema import media
from fieldhub.hub.store.writes import Writes
from fieldhub.protocol import Event

__all__ = ["MediaNotFound", "MediaRecord", "MediaRows", "media_of_events", "media_rows"]

PENDING: Final = "pending"
COMPLETE: Final = "complete"
_CHUNK: Final = 200


class MediaNotFound(NotFound):
    """No such media, or none the caller may see."""


@dataclass(frozen=True, slots=True)
class MediaRecord:
    """One announced object of one event."""

    id: int
    device_id: str
    seq: int
    ts: int
    sha256: str
    size: int
    type: str
    name: str
    state: str
    thumbnail: bool
    created_at: int
    completed_at: int | None

    @classmethod
    def from_row(cls, row: Any) -> MediaRecord:
        """The record of a row of ``schema.media``."""
        return cls(
            row.id,
            row.device_id,
            row.seq,
            row.ts,
            row.sha256,
            row.size,
            row.type,
            row.name,
            row.state,
            bool(row.thumbnail),
            row.created_at,
            row.completed_at,
        )

    def view(self) -> dict[str, Any]:
        """The media as events show it (REST and live): where to fetch it, and its thumbnail
        once there is one."""
        url = f"/api/media/{self.id}"
        return {
            "id": self.id,
            "sha256": self.sha256,
            "type": self.type,
            "size": self.size,
            "name": self.name,
            "state": self.state,
            "url": url,
            "thumbnail": f"{url}/thumbnail" if self.thumbnail else None,
        }


def media_rows(device_id: str, received_at: int, event: Event) -> list[dict[str, Any]]:
    """The pending rows of the media ``event`` announces (ingest writes them with it)."""
    return [
        {
            "device_id": device_id,
            "seq": event.seq,
            "ts": event.ts,
            "sha256": ref.sha256,
            "size": ref.size,
            "type": ref.type,
            "name": ref.name,
            "state": PENDING,
            "thumbnail": False,
            "created_at": received_at,
            "completed_at": None,
        }
        for ref in event.media
    ]


async def media_of_events(
    conn: AsyncConnection, keys: Iterable[tuple[str, int | None]]
) -> dict[tuple[str, int], list[dict[str, Any]]]:
    """The media views of the events with these ``(device, seq)``, in announcement order."""
    wanted = sorted({(d, s) for d, s in keys if s is not None})
    found: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start : start + _CHUNK]
        query = (
            select(media)
            .where(or_(*(and_(media.c.device_id == d, media.c.seq == s) for d, s in chunk)))
            .order_by(media.c.id)
        )
        for row in await conn.execute(query):
            found.setdefault((row.device_id, row.seq), []).append(MediaRecord.from_row(row).view())
    return found


class MediaRows:
    """Reads and changes of ``schema.media`` for the media wing."""

    def __init__(self, engine: AsyncEngine, writes: Writes) -> None:
        self._engine = engine
        self._writes = writes

    async def get(self, media_id: int) -> MediaRecord:
        """The media with ``media_id``.

        Raises:
            MediaNotFound: there is none.
        """
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(media).where(media.c.id == media_id))).first()
        if row is None:
            raise MediaNotFound(f"media {media_id} does not exist")
        return MediaRecord.from_row(row)

    async def announced(self, device_id: str, sha256: str) -> MediaRecord | None:
        """The newest row of ``device_id`` announcing ``sha256``: what its upload is checked
        against (size and type), None when no stored event of the device announced it."""
        query = (
            select(media)
            .where(media.c.sha256 == sha256, media.c.device_id == device_id)
            .order_by(media.c.id.desc())
            .limit(1)
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else MediaRecord.from_row(row)

    async def complete(self, sha256: str, now: int, *, thumbnail: bool) -> list[MediaRecord]:
        """Mark every pending row of ``sha256`` complete; the rows that changed."""

        def job(conn: Connection) -> list[MediaRecord]:
            pending = media.c.sha256 == sha256, media.c.state == PENDING
            ids = [r.id for r in conn.execute(select(media.c.id).where(*pending))]
            if not ids:
                return []
            conn.execute(
                update(media)
                .where(media.c.id.in_(ids))
                .values(state=COMPLETE, completed_at=now, thumbnail=thumbnail)
            )
            rows = conn.execute(select(media).where(media.c.id.in_(ids)).order_by(media.c.id))
            return [MediaRecord.from_row(r) for r in rows]

        return await self._writes.run(job)

    async def pending_of(self, sha256s: Iterable[str]) -> list[str]:
        """Which of ``sha256s`` some row still waits for."""
        wanted = sorted(set(sha256s))
        if not wanted:
            return []
        query = (
            select(media.c.sha256)
            .where(media.c.sha256.in_(wanted), media.c.state == PENDING)
            .distinct()
        )
        async with self._engine.connect() as conn:
            return [r.sha256 for r in await conn.execute(query)]

    async def referenced(self) -> set[str]:
        """Every object some row names (the files retention must keep)."""
        async with self._engine.connect() as conn:
            return {r.sha256 for r in await conn.execute(select(media.c.sha256).distinct())}

    async def expire(self, older_than: dict[str, int], default_before: int) -> int:
        """Delete rows created before their type's limit: ``older_than`` maps a top-level
        type (``image``) to its limit in epoch ms, the others use ``default_before``. Returns
        how many rows went."""

        def job(conn: Connection) -> int:
            removed = 0
            for kind, before in older_than.items():
                of_kind = media.c.type.startswith(f"{kind}/", autoescape=True)
                result = conn.execute(delete(media).where(of_kind, media.c.created_at < before))
                removed += result.rowcount or 0
            others = delete(media).where(media.c.created_at < default_before)
            for kind in older_than:
                others = others.where(~media.c.type.startswith(f"{kind}/", autoescape=True))
            removed += conn.execute(others).rowcount or 0
            return removed

        return await self._writes.run(job)
