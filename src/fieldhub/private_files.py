"""Files and folders that only their owner may read: the one home for making them.

Everything fieldhub keeps on disk is someone's secret or someone's data: the hub's database
(users, password hashes, device keys, telemetry) with its ``-wal``/``-shm`` files, backups,
the embedded broker's retained messages, an agent's outbox, command memory and credentials.
With the usual umask (022) they would be created readable by every user of the machine. So
data folders are made ``0700`` and files ``0600``, here, wherever they are created; and the
``fieldhub`` command also starts with umask 077 (:func:`restrict_umask`), so a file some
library creates on its own (SQLite's journal, a zip's temporary) is private as well.

SQLite creates its ``-wal`` and ``-shm`` files with the permissions of the database file, so
a private database file (:func:`private_file` before the first connection) keeps them private.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

__all__ = [
    "PRIVATE_DIR_MODE",
    "PRIVATE_FILE_MODE",
    "private_dir",
    "private_file",
    "restrict_umask",
    "write_private",
]

PRIVATE_DIR_MODE: Final = 0o700
PRIVATE_FILE_MODE: Final = 0o600
PRIVATE_UMASK: Final = 0o077


def restrict_umask() -> int:
    """Make every file and folder this process creates private to its user; the old umask.

    For the process's entry point only (the umask is process-wide): a belt to the braces of
    :func:`private_dir` and :func:`private_file`, which hold without it.
    """
    return os.umask(PRIVATE_UMASK)


def private_dir(path: Path) -> Path:
    """``path`` as a folder only its owner may enter (made with its parents if missing; an
    existing one loses its group and other permissions). Returns ``path``."""
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    _restrict(path, PRIVATE_DIR_MODE)
    return path


def private_file(path: Path) -> Path:
    """``path`` as a file only its owner may read and write: created empty when missing
    (never with wider permissions, not even for a moment), or stripped of group and other
    permissions; its content is left alone. Returns ``path``."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    except FileExistsError:
        _restrict(path, PRIVATE_FILE_MODE)
    else:
        os.close(fd)
    return path


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path``, readable by the owner only, all or nothing: after a crash or
    a power cut the file is the old one or the new one, never half of it (blocking I/O)."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.unlink(missing_ok=True)  # a leftover may have other permissions
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    with open(fd, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _restrict(path: Path, mode: int) -> None:
    """Drop group and other permissions (keep the owner's), if there are any to drop."""
    current = path.stat().st_mode & 0o777
    if current & ~mode:
        os.chmod(path, current & mode)
