"""Where complete media objects and their thumbnails live: the interface and the data folder.

The media code sees one :class:`ObjectStore`: put a file under a key (an object's key *is* its
SHA-256, checked by the store before the object becomes visible), read it back as a stream,
delete it, ask whether and how large it is, list the keys, count the bytes. Two stores
implement it: :class:`FolderStore` here (the default: ``<data>/media/objects``) and
``S3Store`` in ``hub/media/s3.py`` (an S3-compatible bucket, when configured). Uploads under
way never live in a store: S3 has no append, so partial copies stay in the data folder until
they are whole and checked (``hub/media/files.py``).

Every method blocks: call them off the event loop (``to_thread``). Trouble with a store
(a disk error, an S3 server that cannot be reached) is an ``OSError``, which the media code
already answers as ``unavailable``.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Final, Protocol

from fieldhub.private_files import private_dir

__all__ = [
    "THUMB_SUFFIX",
    "FolderStore",
    "HashMismatch",
    "ObjectStore",
    "file_sha256",
    "thumbnail_key",
]

READ_BYTES: Final = 1 << 20
THUMB_SUFFIX: Final = ".thumb.jpg"


class HashMismatch(ValueError):
    """A file offered under a SHA-256 does not hash to it (nothing was stored)."""


def thumbnail_key(sha256: str) -> str:
    """The key of the thumbnail of the object ``sha256``."""
    return sha256 + THUMB_SUFFIX


def file_sha256(file: BinaryIO) -> str:
    """The SHA-256 (hex) of what is left to read in ``file``."""
    digest = hashlib.sha256()
    while chunk := file.read(READ_BYTES):
        digest.update(chunk)
    return digest.hexdigest()


class ObjectStore(Protocol):
    """Complete media objects and thumbnails by key (see the module's text)."""

    where: str
    """Where the objects are, for people (``hub backup`` says it): never holds a secret."""

    def put(self, key: str, source: Path, *, sha256: str | None) -> int:
        """Store the file ``source`` under ``key`` and take it over (it is gone afterwards);
        its size. With ``sha256`` the content must hash to it, else :class:`HashMismatch`
        and nothing is stored."""
        ...

    def size(self, key: str) -> int | None:
        """The size of ``key``, or None when it is not stored."""
        ...

    def chunks(self, key: str) -> Iterator[bytes]:
        """The bytes of ``key``, a piece at a time (``FileNotFoundError`` when absent)."""
        ...

    def delete(self, key: str) -> None:
        """Remove ``key`` (nothing when it is not stored)."""
        ...

    def names(self) -> list[str]:
        """Every key stored."""
        ...

    def total_bytes(self) -> int:
        """Bytes of everything stored (kept up to date, for the quota)."""
        ...


class FolderStore:
    """Objects in a folder: ``<root>/<first two hex>/<key>``, files ``0600`` in ``0700``.

    An object becomes visible only by ``rename`` after its bytes are on disk (``fsync`` of the
    file, rename, ``fsync`` of the folder): a crash leaves the old state or the new, never half
    a file under an object's name.
    """

    def __init__(self, root: Path) -> None:
        self.root = private_dir(root)
        self.where = str(root)
        self._lock = threading.Lock()
        self._total = sum(path.stat().st_size for path in self._files())

    def path(self, key: str) -> Path:
        """Where ``key`` is (or would be)."""
        return self.root / key[:2] / key

    def put(self, key: str, source: Path, *, sha256: str | None) -> int:
        with open(source, "rb") as file:
            if sha256 is not None and file_sha256(file) != sha256:
                source.unlink()
                raise HashMismatch(f"the content does not hash to {sha256}")
            os.fsync(file.fileno())
        target = self.path(key)
        private_dir(target.parent)
        replaced = self.size(key) or 0
        os.replace(source, target)
        _fsync_dir(target.parent)
        size = target.stat().st_size
        with self._lock:
            self._total += size - replaced
        return size

    def size(self, key: str) -> int | None:
        try:
            return self.path(key).stat().st_size
        except FileNotFoundError:
            return None

    def chunks(self, key: str) -> Iterator[bytes]:
        # Opened now, so a missing key fails here, not in the response; the generator closes it.
        file = open(self.path(key), "rb")  # noqa: SIM115
        return _read_and_close(file)

    def delete(self, key: str) -> None:
        path = self.path(key)
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            return
        with self._lock:
            self._total -= size

    def names(self) -> list[str]:
        return [path.name for path in self._files()]

    def total_bytes(self) -> int:
        return self._total

    def _files(self) -> Iterator[Path]:
        return (p for p in self.root.glob("*/*") if p.is_file() and not p.name.startswith("."))


def _read_and_close(file: BinaryIO) -> Iterator[bytes]:
    with file:
        while chunk := file.read(READ_BYTES):
            yield chunk


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
