"""Media files in the hub's data folder: content-addressed, written atomically, private.

Layout under ``<data>/media`` (folders 0700, files 0600, like everything fieldhub keeps):

- ``objects/<first two hex>/<sha256>``: a complete, checked object; its thumbnail beside it,
  ``<sha256>.thumb.jpg``. The name *is* the content's hash, so an object is written once
  whoever announces it again, and a file can be checked against its name at any time.
- ``partial/<sha256>``: bytes received so far of an upload under way, kept for resuming
  until no upload has touched it for the URL lifetime (:meth:`MediaFiles.sweep_partials`).

An object becomes visible only by ``rename`` after its bytes are on disk (write, ``fsync``,
rename, ``fsync`` of the folder): a crash leaves the old state or the new, never half a file
under an object's name. Every method blocks: call them off the event loop (``to_thread``).

The bytes in use (objects, thumbnails and partials) are counted from a scan at start and
kept up to date by every change, for the quota check.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from fieldhub.private_files import PRIVATE_FILE_MODE, private_dir

__all__ = ["MediaFiles", "OffsetMismatch"]

_READ: Final = 1 << 20
THUMB_SUFFIX: Final = ".thumb.jpg"


class OffsetMismatch(Exception):
    """Bytes were offered for an offset other than where the partial copy ends."""

    def __init__(self, received: int) -> None:
        super().__init__(f"the hub holds {received} bytes")
        self.received = received


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class MediaFiles:
    """The media folder of one hub (see the module's text)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._objects = private_dir(root / "objects")
        self._partial = private_dir(root / "partial")
        self._lock = threading.Lock()
        self.used = sum(path.stat().st_size for path in self._files())

    # -- where things are ---------------------------------------------------------------------
    def object_path(self, sha256: str) -> Path:
        """Where the complete object ``sha256`` is (or would be)."""
        return self._objects / sha256[:2] / sha256

    def thumbnail_path(self, sha256: str) -> Path:
        """Where the thumbnail of ``sha256`` is (or would be)."""
        return self._objects / sha256[:2] / (sha256 + THUMB_SUFFIX)

    def has(self, sha256: str) -> bool:
        """True when the complete object ``sha256`` is stored."""
        return self.object_path(sha256).is_file()

    def received(self, sha256: str) -> int:
        """Bytes of ``sha256`` held so far: its size when complete, else its partial's."""
        if self.has(sha256):
            return self.object_path(sha256).stat().st_size
        try:
            return (self._partial / sha256).stat().st_size
        except FileNotFoundError:
            return 0

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
        with self._lock:
            self.used += len(data)
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
        digest = hashlib.sha256()
        with open(self._partial / sha256, "rb") as file:
            while chunk := file.read(_READ):
                digest.update(chunk)
        return digest.hexdigest()

    def promote(self, sha256: str) -> Path:
        """Make the partial copy the object ``sha256``: synced to disk, then renamed."""
        partial = self._partial / sha256
        with open(partial, "rb+") as file:
            os.fsync(file.fileno())
        target = self.object_path(sha256)
        private_dir(target.parent)
        os.replace(partial, target)
        _fsync_dir(target.parent)
        return target

    def discard(self, sha256: str) -> None:
        """Remove the partial copy of ``sha256``, if any."""
        self._unlink(self._partial / sha256)

    def write_thumbnail(self, sha256: str, data: bytes) -> None:
        """Store the thumbnail of ``sha256`` (atomically, like objects)."""
        target = self.thumbnail_path(sha256)
        temporary = target.with_name(f".{target.name}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
        with open(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, target)
        _fsync_dir(target.parent)
        with self._lock:
            self.used += len(data)

    # -- removal ------------------------------------------------------------------------------
    def remove(self, sha256: str) -> None:
        """Remove the object ``sha256`` and its thumbnail."""
        self._unlink(self.object_path(sha256))
        self._unlink(self.thumbnail_path(sha256))

    def stored(self) -> list[str]:
        """The hashes of every complete object."""
        return [p.name for p in self._objects.glob("*/*") if p.is_file() and "." not in p.name]

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
        with self._lock:
            self.used -= size

    def _files(self) -> Iterator[Path]:
        yield from (p for p in self._objects.glob("*/*") if p.is_file())
        yield from (p for p in self._partial.iterdir() if p.is_file())
