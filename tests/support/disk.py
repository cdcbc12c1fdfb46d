"""A small real file system that a test can fill: a full disk without filling the machine's."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


class SmallDisk:
    """A tmpfs of a few megabytes at ``path``; :meth:`fill` takes all of it, :meth:`free`
    gives it back."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._filler = path / "filler"

    def fill(self) -> None:
        """Take every free byte (smaller and smaller writes, unbuffered, until ENOSPC)."""
        with self._filler.open("ab", buffering=0) as filler:
            for size in (1 << 20, 1 << 16, 1 << 12, 1 << 9):
                with contextlib.suppress(OSError):
                    while True:
                        filler.write(b"\0" * size)

    def free(self) -> None:
        """Give the space back."""
        self._filler.unlink(missing_ok=True)


@contextlib.contextmanager
def small_disk(tmp_path: Path, size_mb: int = 16) -> Iterator[SmallDisk]:
    """A tmpfs of ``size_mb`` mounted under ``tmp_path`` for the block; skips the test where
    mounting is not allowed (it needs root, as in CI)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system (tmpfs) needs root")
    mountpoint = tmp_path / "small-disk"
    mountpoint.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield SmallDisk(mountpoint)
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)
