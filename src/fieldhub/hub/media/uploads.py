"""Uploads: an announced object comes in, by HTTP PUT or MQTT chunks, and is checked.

One set of rules for both ways in, here: the object must have been announced by a stored
event of the uploading device; it may not be larger than announced nor than the hub's limit;
the store may not go over its quota; bytes continue exactly where the hub's copy ends; once
all are there, the type is told from the content and the hash must match, and only then is
the file promoted to an object and its rows marked complete. Every refusal is counted by its
code (``refusals``, in ``/metrics``) and logged (throttled, device strings quoted). A refusal
removes the partial copy, except that of a dropped connection, which waits for the resume.

Bytes of one object are taken one sender at a time (a lock per hash); a second sender is
told where the copy ends (409 / ``bad_offset``).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Final, cast

from fieldhub.clock import now_ms
from fieldhub.hub.media.content import ACCEPTED_TYPES, HEAD_BYTES, IMAGE_TYPES, matches
from fieldhub.hub.media.files import MediaFiles, OffsetMismatch
from fieldhub.hub.media.links import LinkExpired, LinkForged, UploadLinks
from fieldhub.hub.media.thumbnails import Thumbnailer
from fieldhub.hub.store.media import MediaRecord, MediaRows
from fieldhub.logthrottle import LogThrottle, held_back
from fieldhub.protocol.media import MediaAnswer, MediaError, Upload

__all__ = ["FLUSH_BYTES", "MediaLimits", "Outcome", "Uploads"]

log = logging.getLogger(__name__)

FLUSH_BYTES: Final = 256 * 1024
"""Received bytes are written to the partial copy this many at a time (and what is left when
the sender stops or goes away): what a dropped connection keeps, give or take the last bit."""
_RANGE: Final = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")
_RETRY: Final = frozenset({"unknown_object", "quota", "unavailable"})


@dataclass(frozen=True, slots=True)
class MediaLimits:
    """How large one object and all of them may be."""

    max_object_bytes: int
    quota_bytes: int


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of an upload: the HTTP status and body, and the refusal's code if any."""

    status: int
    body: dict[str, Any] = field(default_factory=dict)
    code: str | None = None


Completed = Callable[[list[MediaRecord]], None]


class _Refusal(Exception):
    """An upload refused: the code (counted), the status for HTTP, the text for people."""

    def __init__(self, code: str, status: int, detail: str, **body: Any) -> None:
        super().__init__(detail)
        self.code = code
        self.status = status
        self.detail = detail
        self.body = body


class Uploads:
    """Takes announced objects in (see the module's text)."""

    def __init__(
        self,
        files: MediaFiles,
        rows: MediaRows,
        links: UploadLinks,
        limits: MediaLimits,
        completed: Completed,
    ) -> None:
        self._files = files
        self._rows = rows
        self.links = links
        self._limits = limits
        self._completed = completed
        self._locks: dict[str, asyncio.Lock] = {}
        # Hashing, one object at a time: fifty finishing at once would take every core from
        # ingest on a small machine (benchmarks/media.py measures both).
        self._hashing = asyncio.Lock()
        self.thumbnails = Thumbnailer(files, self._thumbnail_made)
        self._throttle = LogThrottle()
        self.refusals: Counter[str] = Counter()

    # -- asking for a URL (MQTT ``upload`` with ``req``) -------------------------------------
    async def offer(self, device_id: str, request: Upload) -> MediaAnswer:
        """The answer to a device asking to upload ``request.sha256``."""
        sha256 = request.sha256
        try:
            record = await self._announced(device_id, sha256)
            if await asyncio.to_thread(self._files.has, sha256):
                await self._link(record)  # rows announced after the object came are complete
                return MediaAnswer(sha256=sha256, req=request.req, done=True)
            received = await asyncio.to_thread(self._files.received, sha256)
            self._check_quota(record.size - received)
        except _Refusal as refusal:
            return self._answer_refusal(device_id, sha256, refusal, req=request.req)
        link = self.links.mint(device_id, sha256, now_ms())
        return MediaAnswer(
            sha256=sha256,
            req=request.req,
            url=link.url,
            expires_at=link.expires_at,
            received=received,
        )

    # -- HTTP PUT ------------------------------------------------------------------------------
    async def put(
        self,
        device_id: str,
        sha256: str,
        token: tuple[int, str],
        content_range: str | None,
        body: AsyncIterator[bytes],
    ) -> Outcome:
        """Take the bytes of an HTTP PUT to a signed URL (``token``: its expiry and signature).

        ``body`` raising ``ConnectionError`` (the client went away) keeps what came for a
        resume (202).
        """
        try:
            record = await self._signed(device_id, sha256, token)
            start, total = _parse_range(content_range, record.size)
            if total != record.size:
                raise _Refusal(
                    "size_mismatch",
                    422 if total < record.size else 413,
                    f"the range's total {total} is not the announced size {record.size}",
                )
            async with self._lock(sha256):
                received = await asyncio.to_thread(self._files.received, sha256)
                if start != received:
                    raise _Refusal(
                        "bad_offset",
                        409,
                        f"the upload must continue at byte {received}",
                        received=received,
                    )
                self._check_quota(record.size - start)
                return await self._receive(device_id, record, start, body)
        except _Refusal as refusal:
            self._count(device_id, sha256, refusal)
            return Outcome(refusal.status, {"detail": refusal.detail, **refusal.body}, refusal.code)

    async def received(self, device_id: str, sha256: str, token: tuple[int, str]) -> int:
        """Bytes of the object the hub holds, for ``HEAD`` on a signed URL.

        Raises:
            LinkForged: the URL is not one the hub signed for this device and object.
            LinkExpired: its time is over.
        """
        expires_at, sig = token
        self.links.check(device_id, sha256, expires_at, sig, now_ms())
        return await asyncio.to_thread(self._files.received, sha256)

    async def _signed(self, device_id: str, sha256: str, token: tuple[int, str]) -> MediaRecord:
        expires_at, sig = token
        try:
            self.links.check(device_id, sha256, expires_at, sig, now_ms())
        except LinkForged as exc:
            raise _Refusal("forged_url", 404, str(exc)) from None
        except LinkExpired as exc:
            raise _Refusal("expired_url", 410, str(exc)) from None
        if await asyncio.to_thread(self._files.has, sha256):
            raise _Refusal("already_complete", 410, "the hub has this object already")
        return await self._announced(device_id, sha256)

    async def _receive(
        self, device_id: str, record: MediaRecord, start: int, body: AsyncIterator[bytes]
    ) -> Outcome:
        sha256 = record.sha256
        held = start
        buffer = bytearray()
        try:
            async for chunk in body:
                if held + len(buffer) + len(chunk) > record.size:
                    await asyncio.to_thread(self._files.discard, sha256)
                    raise _Refusal("too_large", 413, f"more bytes than the announced {record.size}")
                buffer += chunk
                if len(buffer) >= FLUSH_BYTES:
                    held = await self._append(sha256, held, bytes(buffer))
                    buffer.clear()
        except ConnectionError:
            pass  # the client went away: keep what came, for the resume
        if buffer or held == start == 0:
            held = await self._append(sha256, held, bytes(buffer))
        if held < record.size:
            return Outcome(202, {"received": held})
        finished = await self._finish(device_id, record)
        return Outcome(
            201, {"id": finished.id, "sha256": sha256, "size": record.size, "type": record.type}
        )

    # -- MQTT chunks (``upload`` with ``offset`` and ``data``) -------------------------------
    async def chunk(self, device_id: str, message: Upload) -> MediaAnswer:
        """Take one chunk sent over MQTT; the answer says what the hub holds now."""
        sha256 = message.sha256
        data = message.data or b""
        offset = message.offset or 0
        try:
            record = await self._announced(device_id, sha256)
            if await asyncio.to_thread(self._files.has, sha256):
                await self._link(record)
                return MediaAnswer(sha256=sha256, done=True)
            async with self._lock(sha256):
                if offset + len(data) > record.size:
                    await asyncio.to_thread(self._files.discard, sha256)
                    raise _Refusal("too_large", 413, f"more bytes than the announced {record.size}")
                if offset == 0:
                    self._check_quota(record.size)
                try:
                    held = await self._append(sha256, offset, data)
                except OffsetMismatch as exc:
                    raise _Refusal(
                        "bad_offset",
                        409,
                        f"the upload must continue at byte {exc.received}",
                        received=exc.received,
                    ) from None
                if held < record.size:
                    return MediaAnswer(sha256=sha256, received=held)
                await self._finish(device_id, record)
                return MediaAnswer(sha256=sha256, done=True)
        except _Refusal as refusal:
            return self._answer_refusal(device_id, sha256, refusal)

    # -- checks and completion -----------------------------------------------------------------
    async def _announced(self, device_id: str, sha256: str) -> MediaRecord:
        record = await self._rows.announced(device_id, sha256)
        if record is None:
            raise _Refusal(
                "unknown_object",
                404,
                "no stored event of this device announced this object (send the event first)",
            )
        if record.size > self._limits.max_object_bytes:
            raise _Refusal(
                "too_large",
                413,
                f"{record.size} bytes exceed the hub's limit of {self._limits.max_object_bytes}",
            )
        if record.type not in ACCEPTED_TYPES:
            raise _Refusal(
                "wrong_type",
                415,
                f"the hub does not take {record.type!r}; it takes "
                + ", ".join(sorted(ACCEPTED_TYPES)),
            )
        return record

    def _check_quota(self, more: int) -> None:
        """Refuse what would not fit. Checked for the whole object when its bytes start
        (early), and again for each write (uploads under way at once cannot overrun it)."""
        if self._files.used + more > self._limits.quota_bytes:
            raise _Refusal(
                "quota",
                507,
                f"the media store is full ({self._files.used} of {self._limits.quota_bytes}"
                " bytes used)",
            )

    async def _append(self, sha256: str, at: int, data: bytes) -> int:
        """Write ``data`` at ``at`` of the partial copy within the quota (else the copy goes)."""
        try:
            self._check_quota(len(data))
        except _Refusal:
            await asyncio.to_thread(self._files.discard, sha256)
            raise
        return await asyncio.to_thread(self._files.append, sha256, at, data)

    async def _finish(self, device_id: str, record: MediaRecord) -> MediaRecord:
        """Check the complete partial copy, promote it, link it; the device's record."""
        sha256 = record.sha256
        # The hash first: bytes other than the promised ones say nothing of the object's type.
        async with self._hashing:
            digest = await asyncio.to_thread(self._files.partial_digest, sha256)
        if digest != sha256:
            await asyncio.to_thread(self._files.discard, sha256)
            raise _Refusal("hash_mismatch", 422, "the bytes do not hash to the announced SHA-256")
        head = await asyncio.to_thread(self._files.head, sha256, HEAD_BYTES)
        if not matches(record.type, head):
            await asyncio.to_thread(self._files.discard, sha256)
            raise _Refusal("wrong_type", 415, f"the content is not {record.type}")
        await asyncio.to_thread(self._files.promote, sha256)
        log.info("media %s of %r complete (%d bytes)", sha256[:12], device_id, record.size)
        linked = await self._link(record)
        return next((r for r in linked if r.device_id == device_id), record)

    async def _link(self, record: MediaRecord) -> list[MediaRecord]:
        """Mark every row of the object complete; an image's thumbnail follows (once)."""
        sha256 = record.sha256
        image = record.type in IMAGE_TYPES
        thumbnail = image and await asyncio.to_thread(self._files.has_thumbnail, sha256)
        linked = await self._rows.complete(sha256, now_ms(), thumbnail=thumbnail)
        if linked:
            self._completed(linked)
        if image and not thumbnail:
            self.thumbnails.request(sha256)
        return linked

    async def _thumbnail_made(self, sha256: str) -> None:
        self._completed(await self._rows.thumbnail_made(sha256))

    def _lock(self, sha256: str) -> asyncio.Lock:
        lock = self._locks.get(sha256)
        if lock is None:
            if len(self._locks) > 10_000:  # forget idle ones
                self._locks = {k: v for k, v in self._locks.items() if v.locked()}
            lock = self._locks[sha256] = asyncio.Lock()
        return lock

    def _count(self, device_id: str, sha256: str, refusal: _Refusal) -> None:
        self.refusals[refusal.code] += 1
        held = self._throttle.due((device_id, refusal.code))
        if held is not None:
            log.warning(
                "media upload of %s by %r refused (%s): %s%s",
                sha256[:12],
                device_id,
                refusal.code,
                refusal.detail,
                held_back(held),
            )

    def _answer_refusal(
        self, device_id: str, sha256: str, refusal: _Refusal, *, req: str | None = None
    ) -> MediaAnswer:
        self._count(device_id, sha256, refusal)
        received = refusal.body.get("received")
        return MediaAnswer(
            sha256=sha256,
            req=req,
            error=cast("MediaError", refusal.code),  # the MQTT paths raise only these
            detail=refusal.detail[:1000],
            retry=refusal.code in _RETRY,
            received=received,
        )


def _parse_range(header: str | None, size: int) -> tuple[int, int]:
    """Start and total of a ``Content-Range: bytes START-END/TOTAL`` (none: from 0, all)."""
    if header is None:
        return 0, size
    match = _RANGE.match(header.strip())
    if match is None:
        raise _Refusal("bad_range", 400, "Content-Range must look like bytes START-END/TOTAL")
    start, end, total = (int(g) for g in match.groups())
    if end < start or end >= total:
        raise _Refusal("bad_range", 400, f"Content-Range {header!r} is not a valid range")
    return start, total
