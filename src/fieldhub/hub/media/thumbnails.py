"""Thumbnails, made by the hub with Pillow (never by the device), once per image.

Made after the object is complete and its upload answered (:class:`Thumbnailer`), one at a
time in a worker thread: a decode takes tens of milliseconds of CPU, and fifty cameras
finishing at once would otherwise hold every core that ingest needs, and the uploads' answers
with them. The rows get their thumbnail URL when it exists; the live feed says so.

Decoding is where images attack: a small file may declare a huge canvas (a decompression
bomb). Images over :data:`MAX_PIXELS` are refused before they are decoded (Pillow reads the
size from the header), and Pillow's own limit is set to the same, so a file that lies about
its size in the header is stopped by the decoder too. ``draft`` lets JPEG decode at a reduced
scale, which makes a thumbnail of a camera picture several times cheaper.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, Final

from PIL import Image
from sqlalchemy.exc import SQLAlchemyError

from fieldhub.hub.media.files import MediaFiles
from fieldhub.logthrottle import LogThrottle, held_back

__all__ = ["MAX_PIXELS", "THUMBNAIL_SIZE", "Thumbnailer", "make_thumbnail"]

log = logging.getLogger(__name__)

THUMBNAIL_SIZE: Final = (320, 240)
"""Largest width and height of a thumbnail (the aspect ratio is kept)."""
MAX_PIXELS: Final = 50_000_000
"""Largest image (width times height) the hub decodes: a 50-megapixel camera is the most a
device is expected to send."""

Image.MAX_IMAGE_PIXELS = MAX_PIXELS


def make_thumbnail(source: Path | IO[bytes]) -> bytes | None:
    """A JPEG thumbnail of the image in ``source``, or None when it cannot be decoded or is
    larger than :data:`MAX_PIXELS` (blocking: call it off the event loop)."""
    try:
        with Image.open(source) as image:
            width, height = image.size
            if width * height > MAX_PIXELS:
                return None
            image.draft("RGB", THUMBNAIL_SIZE)
            image.thumbnail(THUMBNAIL_SIZE)
            out = io.BytesIO()
            image.convert("RGB").save(out, "JPEG", quality=80)
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError):
        return None
    return out.getvalue()


class Thumbnailer:
    """Makes thumbnails in the background, one at a time, then calls ``made(sha256)``.

    Args:
        files: where the objects are and the thumbnails go.
        made: marks the object's rows as having a thumbnail (and tells the live feed).
    """

    def __init__(self, files: MediaFiles, made: Callable[[str], Awaitable[None]]) -> None:
        self._files = files
        self._made = made
        self._one = asyncio.Lock()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._throttle = LogThrottle()
        self.took_ms: list[float] = []  # time to make each thumbnail (benchmarks/media.py)

    def request(self, sha256: str) -> None:
        """Make the thumbnail of the complete object ``sha256`` (once, however often asked)."""
        if sha256 not in self._tasks:
            task = asyncio.create_task(self._make(sha256), name=f"thumbnail-{sha256[:12]}")
            self._tasks[sha256] = task
            task.add_done_callback(lambda _task: self._tasks.pop(sha256, None))

    async def drain(self) -> None:
        """Wait for the thumbnails under way (at the hub's stop)."""
        if self._tasks:
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def _make(self, sha256: str) -> None:
        try:
            async with self._one:
                made = await asyncio.to_thread(self._render, sha256)
            if made:
                await self._made(sha256)
        except (SQLAlchemyError, OSError) as exc:
            held = self._throttle.due(type(exc))
            if held is not None:
                log.warning(
                    "cannot make a thumbnail of %s: %s%s", sha256[:12], exc, held_back(held)
                )

    def _render(self, sha256: str) -> bool:
        began = time.perf_counter()
        with self._files.open_object(sha256) as source:
            data = make_thumbnail(source)
        if data is None:
            return False
        self._files.write_thumbnail(sha256, data)
        self.took_ms.append((time.perf_counter() - began) * 1000)
        return True
