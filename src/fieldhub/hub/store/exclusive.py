"""One hub per SQLite database: a second one is refused with a clear message.

Ingest commits are correct with several writers (``hub/ingest/ledger.py``), but on SQLite a
second hub would fight the first for the one write lock (``database is locked`` under load),
run its own broker on the same folder and sweep presence and timers twice. Several hubs are for
PostgreSQL (``cluster_group``). The running hub holds an exclusive ``flock`` on ``hub.lock`` in
the database file's folder: the kernel drops it when the process ends however it ends (kill -9
included), so a crashed hub never leaves a stale lock behind, unlike a PID file.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy.engine import URL

LOCK_NAME = "hub.lock"


class AnotherHubRuns(RuntimeError):
    """A hub already runs on this SQLite database."""


@contextlib.contextmanager
def sole_hub(url: URL) -> Iterator[None]:
    """Hold the SQLite database of ``url`` for this process while the block runs; nothing for
    PostgreSQL or an in-memory SQLite database.

    Raises:
        AnotherHubRuns: another process holds it.
    """
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        yield
        return
    folder = Path(url.database).resolve().parent
    path = folder / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise AnotherHubRuns(
                f"another hub (pid {holder}) runs on the SQLite database in {folder}: a SQLite "
                "database is one hub's. Stop that hub, give this one another --data folder, or "
                "run several hubs on PostgreSQL (--db postgresql://…, --cluster GROUP)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
