"""Many devices' outboxes in one SQLite file: a gateway's children (``gateway/children.py``).

Each device keeps the rules of ``_outbox_store.py`` (its own seqs, acks, refusals, bound and
overflow event) in two tables of its own, named by a number that the ``devices`` table gives
its id: ``outbox_<n>`` and ``meta_<n>``. What the devices share is the connection, and the one
thread that uses it: a connection with its page cache, WAL index and thread cost ~160 KB, which
200 children paid each when every one had its own file (the gateway's RSS was 101 MB; the
issue's target is 60).

Group commit across devices. One thread doing one transaction (and one fsync) per device did
not keep up with 200 controllers reporting every second on a loaded machine (the benchmark's
backlog never drained); so :meth:`OutboxFile.transact` puts the work of every device that
asked while the previous transaction ran into the next one (``transact_together``): one
fsync for all. A report is still durable when its device's :meth:`Outbox.sync` returns.
"""

from __future__ import annotations

import asyncio
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from fieldhub.agent._outbox_schema import Tables, set_up_file
from fieldhub.agent._outbox_store import Done, OutboxStore, Work, transact_together
from fieldhub.private_files import private_dir, private_file

__all__ = ["OutboxFile"]


class OutboxFile:
    """The shared file; :meth:`open` it before the outboxes that live in it, :meth:`close` it
    after them. Every SQLite call runs on :attr:`executor` (one thread)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="outboxes")
        self._db: sqlite3.Connection | None = None
        self._waiting: list[tuple[OutboxStore, Work, asyncio.Future[Done]]] = []
        self._committing: asyncio.Task[None] | None = None

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

    async def transact(self, store: OutboxStore, work: Work) -> Done:
        """``store.transact(work)``, in one transaction with the other devices' work.

        Raises:
            sqlite3.Error: the transaction failed and was rolled back (for every device in it).
        """
        future: asyncio.Future[Done] = asyncio.get_running_loop().create_future()
        self._waiting.append((store, work, future))
        if self._committing is None:
            self._committing = asyncio.create_task(self._commit(), name="outboxes-commit")
        return await future

    async def _commit(self) -> None:
        """Commit what waits, in one transaction, until nothing waits (then end)."""
        loop = asyncio.get_running_loop()
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                db = self._db
                try:
                    if db is None:
                        raise sqlite3.ProgrammingError(f"outbox file {self.path} is closed")
                    items = [(store, work) for store, work, _ in batch]
                    done = await loop.run_in_executor(self.executor, transact_together, db, items)
                except Exception as exc:  # each outbox handles it as its own (outbox.py)
                    for _store, _work, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_store, _work, future), result in zip(batch, done, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            self._committing = None

    async def close(self) -> None:
        """Close the file, once every outbox in it is closed. Idempotent."""
        db, self._db = self._db, None
        if db is not None:
            await asyncio.get_running_loop().run_in_executor(self.executor, db.close)
        self.executor.shutdown(wait=True)
