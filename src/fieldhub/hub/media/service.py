"""The media wing's front: what the rest of the hub calls.

- ``upload`` messages from devices (``Inbound``), answered on ``media``: a request for a URL
  (:meth:`Uploads.offer`) or a chunk (:meth:`Uploads.chunk`), each handled in a task of its
  own, so the MQTT callback never waits for the disk or the database;
- committed ingest batches: an event announcing an object the hub already has (the same
  picture again) gets its rows complete at once;
- reading for the API: a media record, its bytes and thumbnail's as a stream from the store
  (the data folder or S3: the hub reads and serves them itself, so its access rules apply to
  every byte); the object behind a signed download link of an alarm notification
  (:meth:`MediaService.linked`);
- retention: every minute, rows past their type's age are deleted, then objects no row names,
  and partial copies idle for longer than the URL lifetime.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from fieldhub.clock import now_ms
from fieldhub.hub.auth.links import load_link_key
from fieldhub.hub.config import HubSettings
from fieldhub.hub.ingest.batch import Batch
from fieldhub.hub.media.files import MediaFiles
from fieldhub.hub.media.links import LinkExpired, LinkForged, UploadLinks
from fieldhub.hub.media.stores import FolderStore, ObjectStore, thumbnail_key
from fieldhub.hub.media.uploads import MediaLimits, Uploads
from fieldhub.hub.store.media import MediaNotFound, MediaRecord, MediaRows
from fieldhub.hub.store.writes import Writes
from fieldhub.logthrottle import LogThrottle, held_back
from fieldhub.private_files import private_dir
from fieldhub.protocol import Channel, encode, topic_for
from fieldhub.protocol.media import MediaAnswer, Upload

__all__ = [
    "MediaNotFound",
    "MediaRecord",
    "MediaService",
    "MediaSettings",
    "Stored",
    "media_service",
]

log = logging.getLogger(__name__)

_SWEEP_S: Final = 60.0
_DAY_MS: Final = 86_400_000


@dataclass(frozen=True, slots=True)
class MediaSettings:
    """The media wing's configuration (``HubSettings.media_*``)."""

    limits: MediaLimits
    retention_days: dict[str, int]  # top-level type ("image") → days; "*" for the others
    url_ttl_s: int


@dataclass(frozen=True, slots=True)
class Stored:
    """Bytes to send from the store: their count (for ``Content-Length``) and the bytes, a
    piece at a time (read in a worker thread by the response)."""

    size: int
    chunks: Iterator[bytes]


Publish = Callable[[str, bytes], None]
Changed = Callable[[list[MediaRecord]], None]


class MediaService:
    """Media attached to events (see the module's text)."""

    def __init__(
        self,
        files: MediaFiles,
        rows: MediaRows,
        links: UploadLinks,
        settings: MediaSettings,
        publish: Publish,
    ) -> None:
        self.files = files
        self._rows = rows
        self._settings = settings
        self._publish = publish
        self._listeners: list[Changed] = []
        self.links = links
        self.uploads = Uploads(files, rows, links, settings.limits, self._completed)
        self.link_refusals: Counter[str] = Counter()
        """Download links refused, by ``download_forged`` / ``download_expired``."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._throttle = LogThrottle()

    def on_complete(self, listener: Changed) -> None:
        """Call ``listener`` with the rows an upload completed (live push)."""
        self._listeners.append(listener)

    def _completed(self, records: list[MediaRecord]) -> None:
        for listener in self._listeners:
            listener(records)

    # -- from devices --------------------------------------------------------------------------
    def on_upload(self, device_id: str, message: Upload) -> None:
        """An ``upload`` message of ``device_id`` (decoded and valid): answered on ``media``."""
        self._spawn(self._answer(device_id, message))

    async def _answer(self, device_id: str, message: Upload) -> None:
        try:
            if message.is_chunk:
                answer = await self.uploads.chunk(device_id, message)
            else:
                answer = await self.uploads.offer(device_id, message)
        except (SQLAlchemyError, OSError) as exc:
            self._trouble("cannot answer an upload", exc)
            answer = MediaAnswer(
                sha256=message.sha256,
                req=message.req,
                error="unavailable",
                detail="the hub cannot store media now",
                retry=True,
            )
        self._publish(topic_for(device_id, Channel.MEDIA), encode(answer))

    def committed(self, batch: Batch) -> None:
        """Rows of objects the hub already holds are complete as soon as they are stored."""
        announced = {
            ref.sha256 for _device, _received, event in batch.events for ref in event.media
        }
        if announced:
            self._spawn(self._link_known(announced))

    async def _link_known(self, sha256s: set[str]) -> None:
        try:
            for sha256 in await self._rows.pending_of(sha256s):
                if await asyncio.to_thread(self.files.has, sha256):
                    records = await self._rows.complete(
                        sha256,
                        now_ms(),
                        thumbnail=await asyncio.to_thread(self.files.has_thumbnail, sha256),
                    )
                    self._completed(records)
        except (SQLAlchemyError, OSError) as exc:
            self._trouble("cannot link media announced again", exc)

    # -- for the API ---------------------------------------------------------------------------
    async def get(self, media_id: int) -> MediaRecord:
        """The media record ``media_id`` (visibility is the caller's: by its device).

        Raises:
            MediaNotFound: no such media.
        """
        return await self._rows.get(media_id)

    async def content(self, record: MediaRecord) -> Stored:
        """The bytes of a complete media.

        Raises:
            MediaNotFound: it is still pending (or its object is gone).
            OSError: the store cannot be read now.
        """
        if record.state != "complete":
            raise MediaNotFound(f"media {record.id} has not arrived yet")
        return await self._read(record.sha256, f"media {record.id} has not arrived yet")

    async def thumbnail(self, record: MediaRecord) -> Stored:
        """The thumbnail of a complete image.

        Raises:
            MediaNotFound: it has none (not an image, not arrived yet, or not decodable).
            OSError: the store cannot be read now.
        """
        if not record.thumbnail:
            raise MediaNotFound(f"media {record.id} has no thumbnail")
        return await self._read(thumbnail_key(record.sha256), f"media {record.id} has no thumbnail")

    async def _read(self, key: str, absent: str) -> Stored:
        store = self.files.store
        try:
            size = await asyncio.to_thread(store.size, key)
            if size is None:
                raise MediaNotFound(absent)
            chunks = await asyncio.to_thread(store.chunks, key)
        except FileNotFoundError:  # removed by retention since
            raise MediaNotFound(absent) from None
        except OSError as exc:  # the store is away: the caller answers 503
            self._trouble("cannot read media", exc)
            raise
        return Stored(size, chunks)

    async def linked(
        self, device_id: str, sha256: str, expires_at: int, sig: str
    ) -> tuple[MediaRecord, Stored]:
        """The media a download link names, and its bytes (the link is the credential).

        Raises:
            LinkForged: not a link of this hub for that device and object (counted).
            LinkExpired: its time is over (counted).
            MediaNotFound: no stored event of the device announced it, or it has not arrived.
        """
        try:
            self.links.check_download(device_id, sha256, expires_at, sig, now_ms())
        except LinkForged:
            self.link_refusals["download_forged"] += 1
            raise
        except LinkExpired:
            self.link_refusals["download_expired"] += 1
            raise
        record = await self._rows.announced(device_id, sha256)
        if record is None:
            raise MediaNotFound("no such media")
        return record, await self.content(record)

    # -- retention -----------------------------------------------------------------------------
    async def run(self) -> None:
        """Sweep every minute until cancelled; failures are logged and tried again."""
        while True:
            await asyncio.sleep(_SWEEP_S)
            try:
                await self.sweep()
            except (SQLAlchemyError, OSError) as exc:
                self._trouble("media retention failed", exc)

    async def sweep(self, now: int | None = None) -> None:
        """Delete rows past their retention, objects no row names, idle partial copies."""
        now = now_ms() if now is None else now
        days = dict(self._settings.retention_days)
        default_days = days.pop("*")
        await self._rows.expire(
            {kind: now - d * _DAY_MS for kind, d in days.items()}, now - default_days * _DAY_MS
        )
        referenced = await self._rows.referenced()
        for sha256 in await asyncio.to_thread(self.files.stored):
            if sha256 not in referenced:
                await asyncio.to_thread(self.files.remove, sha256)
        await asyncio.to_thread(self.files.sweep_partials, self._settings.url_ttl_s)

    async def stop(self) -> None:
        """Wait for the answers and thumbnails under way (at the hub's stop, before the bus
        closes)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.uploads.thumbnails.drain()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _trouble(self, what: str, exc: Exception) -> None:
        held = self._throttle.due(what)
        if held is not None:
            log.warning("%s: %s%s", what, exc, held_back(held))


def media_service(
    settings: HubSettings, engine: AsyncEngine, writes: Writes, publish: Publish
) -> MediaService:
    """The media wing of a hub: uploads under way in ``<data>/media``, complete objects in
    ``<data>/media/objects`` or the S3 store the settings name, rows in the database, URLs
    signed with the key in the data folder, answers published with ``publish``.

    Raises:
        OSError: the S3 store cannot be reached (the hub does not start without its media).
    """
    links = UploadLinks(
        load_link_key(settings.data), settings.media_base_url, settings.media_url_ttl_s * 1000
    )
    return MediaService(
        MediaFiles(private_dir(settings.data / "media"), _object_store(settings)),
        MediaRows(engine, writes),
        links,
        MediaSettings(
            MediaLimits(settings.media_max_bytes, settings.media_quota_bytes),
            dict(settings.media_retention_days),
            settings.media_url_ttl_s,
        ),
        publish,
    )


def _object_store(settings: HubSettings) -> ObjectStore:
    """The S3 store when ``FIELDHUB_MEDIA_S3_URL`` is set, else the data folder's."""
    if settings.media_s3_url is None:
        return FolderStore(settings.data / "media" / "objects")
    from fieldhub.hub.media.s3 import s3_store  # the S3 client only where it is used

    store = s3_store(settings)
    log.info("media objects in %s", store.where)
    return store
