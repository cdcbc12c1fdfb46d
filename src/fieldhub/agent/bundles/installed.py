"""The active area: installed versions of each bundle, and which one runs.

::

    <bundles dir>/installed/<name>/versions/<version>-<digest>/manifest.json
                                                              /files/...
                                  /current  -> versions/<version>-<digest>
                                  /previous -> versions/<version>-<digest>

A version directory is written whole under a temporary name, flushed, then renamed into
place, so it exists complete or not at all. ``current`` and ``previous`` are symlinks, each
replaced by a rename (atomic on POSIX): a power cut leaves each pointing to the old target or
the new one. A directory's name carries the bundle's digest, so two different bundles that
claim the same version never share a directory. Only verified bundles reach :meth:`write`.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from fieldhub.bundles.manifest import Manifest, parse_manifest
from fieldhub.bundles.refusal import BundleRefused, Reason
from fieldhub.private_files import private_dir

__all__ = ["CURRENT", "FULL_DISK", "PREVIOUS", "Installed", "InstalledBundle"]

CURRENT: Final = "current"
PREVIOUS: Final = "previous"
_PARTIAL: Final = ".partial-"
FULL_DISK: Final = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


@dataclass(frozen=True)
class InstalledBundle:
    """One installed version: its directory (``files/`` inside) and its manifest."""

    name: str
    directory: str  # "<version>-<digest>", under versions/
    path: Path
    manifest: Manifest

    @property
    def version(self) -> str:
        return self.manifest.version


class Installed:
    """The installed bundles under ``root`` (the agent's bundles dir + ``installed``)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def running(self) -> dict[str, InstalledBundle]:
        """Every bundle with a ``current`` version, by name."""
        if not self.root.is_dir():
            return {}
        found = (self.get(entry.name, CURRENT) for entry in sorted(self.root.iterdir()))
        return {bundle.name: bundle for bundle in found if bundle is not None}

    def get(self, name: str, link: str = CURRENT) -> InstalledBundle | None:
        """The version ``link`` (``current`` or ``previous``) points to, if any."""
        target = self._link_target(name, link)
        return self.load(name, target) if target is not None else None

    def load(self, name: str, directory: str) -> InstalledBundle:
        """A version directory's bundle (written by :meth:`write`, so trusted)."""
        path = self.root / name / "versions" / directory
        manifest = parse_manifest((path / "manifest.json").read_bytes())
        return InstalledBundle(name, directory, path, manifest)

    def write(
        self, name: str, directory: str, manifest: bytes, payload: Mapping[str, bytes]
    ) -> InstalledBundle:
        """Write a verified bundle's version directory, whole or not at all.

        Raises:
            BundleRefused: ``disk_full`` when the disk (or a file size limit) runs out; what
                was written is removed.
        """
        versions = private_dir(self.root / name / "versions")
        partial = versions / f"{_PARTIAL}{directory}"
        final = versions / directory
        shutil.rmtree(partial, ignore_errors=True)
        try:
            _write_file(private_dir(partial) / "manifest.json", manifest)
            for path, data in payload.items():
                target = partial / "files" / path
                private_dir(target.parent)
                _write_file(target, data)
            _fsync_dir(partial)
            shutil.rmtree(final, ignore_errors=True)  # a leftover of an interrupted install
            os.rename(partial, final)
            _fsync_dir(versions)
        except OSError as exc:
            shutil.rmtree(partial, ignore_errors=True)
            if exc.errno in FULL_DISK:
                raise BundleRefused(Reason.DISK_FULL, f"writing {name}: {exc.strerror}") from None
            raise
        return self.load(name, directory)

    def point(self, name: str, link: str, directory: str | None) -> None:
        """Make ``link`` point to ``versions/<directory>`` (or remove it), atomically."""
        base = self.root / name
        if directory is None:
            (base / link).unlink(missing_ok=True)
        else:
            temporary = base / f".{link}.new"
            temporary.unlink(missing_ok=True)
            os.symlink(f"versions/{directory}", temporary)
            os.replace(temporary, base / link)
        _fsync_dir(base)

    def target(self, name: str, link: str) -> str | None:
        """The version directory ``link`` points to (None when there is no link)."""
        return self._link_target(name, link)

    def prune(self, name: str) -> None:
        """Remove the versions neither ``current`` nor ``previous`` points to, and leftovers."""
        versions = self.root / name / "versions"
        keep = {self._link_target(name, CURRENT), self._link_target(name, PREVIOUS)}
        if versions.is_dir():
            for entry in versions.iterdir():
                if entry.name not in keep:
                    shutil.rmtree(entry, ignore_errors=True)
        if not any(keep - {None}):
            shutil.rmtree(self.root / name, ignore_errors=True)

    def free_bytes(self) -> int:
        """Free space where versions are written (asking creates nothing)."""
        existing = next(path for path in (self.root, *self.root.parents) if path.exists())
        return shutil.disk_usage(existing).free

    def _link_target(self, name: str, link: str) -> str | None:
        try:
            target = os.readlink(self.root / name / link)
        except (FileNotFoundError, NotADirectoryError):
            return None
        return target.removeprefix("versions/")


def _write_file(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with open(fd, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
