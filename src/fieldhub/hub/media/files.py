"""Media files of one hub: uploads under way in the data folder, complete objects in a store.

- ``<data>/media/partial/<sha256>``: bytes received so far of an upload under way, kept for
  resuming until no upload has touched them for the URL lifetime
  (:meth:`MediaFiles.sweep_partials`). Always in the data folder, whatever the store:
  resuming needs an append, which S3 lacks.
- ``<data>/media/staging/``: a thumbnail between Pillow and the store (for a moment).
- complete, checked objects and their thumbnails: in the hub's :class:`ObjectStore`
  (``hub/media/stores.py``): the data folder's ``<data>/media/objects`` by default, or an
  S3-compatible bucket. An object's key is its content's hash, so it is written once whoever
  announces it again, and the store checks the hash before the object becomes visible.

Every method blocks: call them off the event loop (``to_thread``). The bytes in use (the
store's and the partial copies') are counted from a scan at start and kept up to date by
every change, for the quota check.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Final

from fieldhub.hub.config import HubSettings
from fieldhub.hub.media.stores import (
    FolderStore,
    ObjectStore,
    file_sha256,
    thumbnail_key,
)
from fieldhub.private_files import PRIVATE_FILE_MODE, private_dir

__all__ = ["MediaFiles", "OffsetMismatch", "backup_elsewhere", "backup_folders"]

_SPOOL_BYTES: Final = 8 << 20
_THUMB_TEMP: Final = ".thumb.tmp"


class OffsetMismatch(Exception):
    """Bytes were offered for an offset other than where the partial copy ends."""

    def __init__(self, received: int) -> None:
        super().__init__(f"the hub holds {received} bytes")
        self.received = received


def backup_folders(settings: HubSettings) -> dict[str, Path]:
    """What ``hub backup`` copies of the media folder: the complete objects and their
    thumbnails (partial uploads are not worth keeping), by archive name. Nothing when the
    objects live in an S3 bucket: the bucket keeps them (and its own versions or replicas,
    which are the operator's backup of them); the tables name them by hash."""
    if settings.media_s3_url is not None:
        return {}
    return {"media/objects": settings.data / "media" / "objects"}


def backup_elsewhere(settings: HubSettings) -> dict[str, str]:
    """What a backup refers to without holding it: the S3 bucket of the objects, if any
    (its address without credentials)."""
    if settings.media_s3_url is None:
        return {}
    bucket = f"s3://{settings.media_s3_bucket}/{settings.media_s3_prefix}"
    return {"media/objects": f"{bucket} at {settings.media_s3_url}"}


class MediaFiles:
    """The media of one hub (see the module's text)."""

    def __init__(self, root: Path, store: ObjectStore) -> None:
        self.root = root
        self.store = store
        self._partial = private_dir(root / "partial")
        self._staging = private_dir(root / "staging")  # thumbnails on their way to the store
        self._lock = threading.Lock()
        self._partial_bytes = sum(p.stat().st_size for p in self._partial.iterdir() if p.is_file())

    @property
    def used(self) -> int:
        """Bytes the quota counts: objects, thumbnails and partial copies."""
        return self.store.total_bytes() + self._partial_bytes

    # -- complete objects ---------------------------------------------------------------------
    def has(self, sha256: str) -> bool:
        """True when the complete object ``sha256`` is stored."""
        return self.store.size(sha256) is not None

    def has_thumbnail(self, sha256: str) -> bool:
        """True when the thumbnail of ``sha256`` is stored."""
        return self.store.size(thumbnail_key(sha256)) is not None

    def received(self, sha256: str) -> int:
        """Bytes of ``sha256`` held so far: its size when complete, else its partial's."""
        size = self.store.size(sha256)
        if size is not None:
            return size
        try:
            return (self._partial / sha256).stat().st_size
        except FileNotFoundError:
            return 0

    def open_object(self, sha256: str) -> IO[bytes]:
        """The complete object ``sha256`` as a file to read (for the thumbnail): the file
        itself in the data folder, else a temporary copy (in memory up to 8 MiB)."""
        if isinstance(self.store, FolderStore):
            return open(self.store.path(sha256), "rb")
        copy = tempfile.SpooledTemporaryFile(_SPOOL_BYTES)  # noqa: SIM115 (the caller closes it)
        try:
            for chunk in self.store.chunks(sha256):
                copy.write(chunk)
        except BaseException:
            copy.close()
            raise
        copy.seek(0)
        return copy

    # -- uploads ------------------------------------------------------------------------------
    def append(self, sha256: str, offset: int, data: bytes) -> int:
        """Write ``data`` at ``offset`` of the partial copy; the bytes held after it.

        ``offset`` 0 starts over (a partial left from before is replaced).

        Raises:
            OffsetMismatch: the partial copy does not end at ``offset`` (``received`` says
                where it ends).
        """
        path = self._partial / sha256
        if offset == 0:
            self._unlink(path)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE_MODE)
        try:
            size = os.fstat(fd).st_size
            if size != offset:
                raise OffsetMismatch(size)
            os.lseek(fd, offset, os.SEEK_SET)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        self._count(len(data))
        return offset + len(data)

    def head(self, sha256: str, count: int) -> bytes:
        """The first ``count`` bytes of the partial copy (to tell its type)."""
        try:
            with open(self._partial / sha256, "rb") as file:
                return file.read(count)
        except FileNotFoundError:
            return b""

    def partial_digest(self, sha256: str) -> str:
        """The SHA-256 (hex) of the partial copy as it is."""
        with open(self._partial / sha256, "rb") as file:
            return file_sha256(file)

    def promote(self, sha256: str) -> None:
        """Make the partial copy the object ``sha256`` in the store (which checks its hash).

        Raises:
            HashMismatch: the copy does not hash to ``sha256`` (it is gone).
        """
        partial = self._partial / sha256
        size = partial.stat().st_size
        try:
            self.store.put(sha256, partial, sha256=sha256)
        finally:
            if not partial.exists():
                self._count(-size)

    def discard(self, sha256: str) -> None:
        """Remove the partial copy of ``sha256``, if any."""
        self._unlink(self._partial / sha256)

    def write_thumbnail(self, sha256: str, data: bytes) -> None:
        """Store the thumbnail of ``sha256`` (through a private temporary file)."""
        temporary = self._staging / (sha256 + _THUMB_TEMP)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
        with open(fd, "wb") as file:
            file.write(data)
        try:
            self.store.put(thumbnail_key(sha256), temporary, sha256=None)
        finally:
            temporary.unlink(missing_ok=True)

    # -- removal ------------------------------------------------------------------------------
    def remove(self, sha256: str) -> None:
        """Remove the object ``sha256`` and its thumbnail."""
        self.store.delete(sha256)
        self.store.delete(thumbnail_key(sha256))

    def stored(self) -> list[str]:
        """The hashes of every complete object."""
        return [key for key in self.store.names() if "." not in key]

    def sweep_partials(self, idle_s: float) -> list[str]:
        """Remove partial copies no upload has written to for ``idle_s``; their hashes."""
        cutoff = time.time() - idle_s
        gone = []
        for path in self._partial.iterdir():
            try:
                if path.stat().st_mtime < cutoff:
                    self._unlink(path)
                    gone.append(path.name)
            except FileNotFoundError:
                continue
        return gone

    def _unlink(self, path: Path) -> None:
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            return
        self._count(-size)

    def _count(self, change: int) -> None:
        with self._lock:
            self._partial_bytes += change
