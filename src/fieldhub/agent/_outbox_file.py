"""Many devices' outboxes in one SQLite file: a gateway's children (``gateway/children.py``).

Each device keeps the rules of ``_outbox_store.py`` (its own seqs, acks, refusals, bound and
overflow event) in two tables of its own, named by a number that the ``devices`` table gives
its id: ``outbox_<n>`` and ``meta_<n>``. What the devices share is the connection, and the one
thread that uses it: a connection with its page cache, WAL index and thread cost ~160 KB, which
200 children paid each when every one had its own file (the gateway's RSS was 101 MB; the
issue's target is 60). Every device's transaction still commits (and fsyncs) on its own, so a
report is durable when its device's :meth:`Outbox.sync` returns, as on an agent.
"""

from __future__ import annotations

import asyncio
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from fieldhub.agent._outbox_store import OutboxStore, Tables, set_up_file
from fieldhub.private_files import private_dir, private_file

__all__ = ["OutboxFile"]


class OutboxFile:
    """The shared file; :meth:`open` it before the outboxes that live in it, :meth:`close` it
    after them. Every SQLite call runs on :attr:`executor` (one thread)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="outboxes")
        self._db: sqlite3.Connection | None = None

    async def open(self) -> list[str]:
        """Open (or create) the file; returns the ids of the devices it holds outboxes for.

        Raises:
            OutboxStoreError: the file belongs to a newer program.
            sqlite3.Error, OSError: the file cannot be opened or created.
        """
        return await asyncio.get_running_loop().run_in_executor(self.executor, self._open)

    def _open(self) -> list[str]:
        private_dir(self.path.parent)
        db = sqlite3.connect(private_file(self.path), isolation_level=None)
        try:
            set_up_file(db)
            db.execute(
                "CREATE TABLE IF NOT EXISTS devices "
                "(number INTEGER PRIMARY KEY AUTOINCREMENT, device TEXT NOT NULL UNIQUE)"
            )
        except BaseException:
            db.close()
            raise
        self._db = db
        return [str(device) for (device,) in db.execute("SELECT device FROM devices ORDER BY 1")]

    def store(self, device_id: str, **store_args: Any) -> OutboxStore:
        """The outbox of ``device_id`` (its tables made on first use). Call on :attr:`executor`.

        Raises:
            RuntimeError: the file is not open.
        """
        db = self._db
        if db is None:
            raise RuntimeError(f"outbox file {self.path} is not open")
        db.execute("INSERT INTO devices (device) VALUES (?) ON CONFLICT DO NOTHING", (device_id,))
        (number,) = db.execute(
            "SELECT number FROM devices WHERE device = ?", (device_id,)
        ).fetchone()
        tables = Tables(db, f"outbox_{int(number)}", f"meta_{int(number)}")
        return OutboxStore(self.path, tables=tables, **store_args)

    async def close(self) -> None:
        """Close the file, once every outbox in it is closed. Idempotent."""
        db, self._db = self._db, None
        if db is not None:
            await asyncio.get_running_loop().run_in_executor(self.executor, db.close)
        self.executor.shutdown(wait=True)
