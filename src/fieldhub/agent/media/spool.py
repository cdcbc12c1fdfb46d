"""The media spool: objects the agent captured, kept on disk until the hub has them.

A picture is taken, then announced by an event (``protocol/media.py``): the event goes through
the outbox like any report, the object waits here until the uploader has delivered it. Both
survive broker, hub and agent restarts, because both are on disk before they count.

On disk, under ``<data_dir>/media/`` (folders 0700, files 0600): ``<sha256>`` is the object,
``<sha256>.json`` what the event says of it (size, type, name), ``incoming/`` what is being
written. An object is written to ``incoming/``, fsynced, hashed, then its description and the
object itself are renamed into place, in that order: a crash leaves either nothing or a whole
object, and at the next start whatever is half there (a description without object, an object
without description, anything in ``incoming/``) was never announced and is deleted.

The spool is bounded by the total size of its objects (``media.max_mb``). A capture that does
not fit is refused with :class:`SpoolFull` (counted): what the spool accepted stays until the
hub has it; nothing is ever dropped to make room, since its event already promised it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import msgspec

from fieldhub.agent.media._sha256 import sha256
from fieldhub.private_files import PRIVATE_FILE_MODE, private_dir
from fieldhub.protocol import MediaRef

__all__ = ["MediaSpool", "SpoolError", "SpoolFull", "SpoolStats"]

log = logging.getLogger(__name__)

_BLOCK: Final = 64 * 1024
"""Bytes read at a time when hashing: a clip is never in memory whole."""
_REF = msgspec.json.Decoder(MediaRef)


class SpoolError(RuntimeError):
    """An object could not be kept; the message says why (a camera unit's event carries it)."""


class SpoolFull(SpoolError):
    """The spool holds ``media.max_mb`` already: the capture is refused, nothing is dropped."""


@dataclass(slots=True)
class SpoolStats:
    """What the spool holds and did, for the technician page and the status API.

    Attributes:
        objects: objects waiting for the hub now.
        bytes: their total size.
        max_bytes: the bound on ``bytes``.
        accepted: objects kept since start.
        refused_full: captures refused because the spool was full, since start.
        delivered: objects the hub confirmed it has, since start (then deleted here).
        given_up: objects deleted undelivered because the hub refused them for good.
    """

    objects: int = 0
    bytes: int = 0
    max_bytes: int = 0
    accepted: int = 0
    refused_full: int = 0
    delivered: int = 0
    given_up: int = 0


class MediaSpool:
    """The spool folder. Call :meth:`open` once (it cleans up after a crash), then the rest
    from the event loop; file work runs in worker threads.

    Args:
        folder: where objects live (``<data_dir>/media``).
        max_bytes: total size of the objects kept, at most.
    """

    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder = folder
        self._incoming = folder / "incoming"
        self.stats = SpoolStats(max_bytes=max_bytes)
        self._objects: dict[str, MediaRef] = {}  # by sha256, oldest first
        self._lock = asyncio.Lock()
        self._listeners: list[Callable[[MediaRef], None]] = []

    async def open(self) -> None:
        """Make the folders, delete what a crash left half-written, and list what waits."""
        found = await asyncio.to_thread(self._scan)
        self._objects = dict(found)
        self.stats.objects = len(found)
        self.stats.bytes = sum(ref.size for _, ref in found)
        if found:
            log.info("media spool %s: %d object(s) wait for the hub", self.folder, len(found))

    def on_added(self, listener: Callable[[MediaRef], None]) -> None:
        """Call ``listener`` (on the loop) with every object kept from now on."""
        self._listeners.append(listener)

    def waiting(self) -> list[MediaRef]:
        """The objects the hub does not have yet, oldest first."""
        return list(self._objects.values())

    def path(self, ref: MediaRef) -> Path:
        """Where the object's bytes are."""
        return self.folder / ref.sha256

    def incoming(self, suffix: str) -> Path:
        """A fresh path in ``incoming/`` for a program (the camera's) to write an object to,
        before :meth:`keep_file` takes it."""
        return self._incoming / f"{os.urandom(8).hex()}{suffix}"

    async def keep_bytes(self, data: bytes, type: str, name: str) -> MediaRef:
        """Keep ``data`` (a small generated picture) as an object.

        Raises:
            SpoolFull: it does not fit; nothing was written.
            SpoolError: the disk refused it (the message says why).
        """
        async with self._lock:
            self._check_room(len(data))
            path = self.incoming(".part")
            try:
                await asyncio.to_thread(_write_new, path, data)
            except OSError as exc:
                raise SpoolError(f"cannot write to the media spool {self.folder}: {exc}") from None
            return await self._take(path, type, name)

    async def keep_file(self, path: Path, type: str, name: str) -> MediaRef:
        """Take the file at ``path`` (from :meth:`incoming`) as an object; it is moved, not
        copied, and deleted when refused.

        Raises:
            SpoolFull: it does not fit.
            SpoolError: it cannot be read, is empty, or the disk refused it.
        """
        async with self._lock:
            return await self._take(path, type, name)

    def forget(self, ref: MediaRef, *, delivered: bool) -> None:
        """The hub has the object (``delivered``), or refused it for good: delete it."""
        if self._objects.pop(ref.sha256, None) is None:
            return
        self.stats.objects -= 1
        self.stats.bytes -= ref.size
        if delivered:
            self.stats.delivered += 1
        else:
            self.stats.given_up += 1
        for path in (self.path(ref), self._description(ref.sha256)):
            path.unlink(missing_ok=True)

    # -- inside ----------------------------------------------------------------------------

    def _check_room(self, size: int) -> None:
        if self.stats.bytes + size > self.stats.max_bytes:
            self.stats.refused_full += 1
            raise SpoolFull(
                f"media spool full: {self.stats.bytes} of {self.stats.max_bytes} bytes wait for "
                f"the hub, {size} more do not fit (media.max_mb)"
            )

    async def _take(self, path: Path, type: str, name: str) -> MediaRef:
        try:
            size, digest = await asyncio.to_thread(_hash_file, path)
            if size == 0:
                raise SpoolError("the capture is empty")
            if digest in self._objects:  # the same bytes again: kept once
                await asyncio.to_thread(path.unlink, missing_ok=True)
                return self._objects[digest]
            self._check_room(size)
            ref = MediaRef(sha256=digest, size=size, type=type, name=name)
            await asyncio.to_thread(self._place, path, ref)
        except (OSError, SpoolError) as exc:
            await asyncio.to_thread(path.unlink, missing_ok=True)
            if isinstance(exc, SpoolError):
                raise
            raise SpoolError(f"cannot keep the capture in {self.folder}: {exc}") from None
        self._objects[digest] = ref
        self.stats.objects += 1
        self.stats.bytes += size
        self.stats.accepted += 1
        for listener in self._listeners:
            listener(ref)
        return ref

    def _description(self, digest: str) -> Path:
        return self.folder / f"{digest}.json"

    def _place(self, path: Path, ref: MediaRef) -> None:
        """Description first, then the object: an object counts only with both in place."""
        description = self.incoming(".json")
        _write_new(description, msgspec.json.encode(ref))
        os.replace(description, self._description(ref.sha256))
        os.replace(path, self.path(ref))
        _sync_dir(self.folder)

    def _scan(self) -> list[tuple[str, MediaRef]]:
        private_dir(self.folder)
        private_dir(self._incoming)
        for leftover in self._incoming.iterdir():
            leftover.unlink(missing_ok=True)
        found: list[tuple[float, str, MediaRef]] = []
        names = {p.name for p in self.folder.iterdir() if p.is_file()}
        for name in names:
            digest, _, suffix = name.partition(".")
            if not suffix and f"{name}.json" in names:
                continue  # taken with its description
            if suffix == "json" and digest in names:
                try:
                    ref = _REF.decode(self._description(digest).read_bytes())
                except (OSError, msgspec.DecodeError, msgspec.ValidationError):
                    ref = None
                if ref is not None and ref.sha256 == digest:
                    found.append((self._description(digest).stat().st_mtime, digest, ref))
                    continue
            log.warning(
                "media spool %s: deleting %r, left half-written by a crash", self.folder, name
            )
            for path in (self.folder / name, self.folder / digest, self._description(digest)):
                path.unlink(missing_ok=True)
        found.sort(key=lambda item: item[0])
        return [(digest, ref) for _, digest, ref in found]


def _write_new(path: Path, data: bytes) -> None:
    """Write ``data`` to a new private file, fsynced (blocking)."""
    private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    with open(fd, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def _hash_file(path: Path) -> tuple[int, str]:
    """Size and SHA-256 (hex) of a file, read in blocks; fsyncs it too (a program wrote it)."""
    digest = sha256()
    size = 0
    with open(path, "rb") as file:
        os.fsync(file.fileno())
        while block := file.read(_BLOCK):
            digest.update(block)
            size += len(block)
    os.chmod(path, PRIVATE_FILE_MODE)
    return size, str(digest.hexdigest())


def _sync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
