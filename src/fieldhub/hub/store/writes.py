"""Where the hub's frequent writes run: ingest commits, command inserts, command states.

A write is a *job*: a plain function that gets a synchronous SQLAlchemy ``Connection`` inside
an open write transaction and returns a value. Written once, it runs on either database:

- :class:`EngineWrites` runs a job in its own transaction of the async engine
  (``AsyncConnection.run_sync``). PostgreSQL uses it: asyncpg is asynchronous itself and the
  server orders concurrent writers without sleeping.
- :class:`SqliteWriter` runs every job of the process in one thread on one connection.

Why a writer thread for SQLite (docs/benchmarks.md, commands): through aiosqlite every
statement is a hand-off to the driver's thread and back (a command insert was a dozen), and
each connection that wants the database's single write lock while another holds it sleeps in
SQLite's busy handler (1, 2, 5, 10… ms, whether or not the lock was freed meanwhile). Here a
job costs one hand-off, and writers queue in memory instead of sleeping.

Jobs that arrive while a transaction runs go into the next one together (group commit). When
such a transaction fails, each of its jobs runs again alone, so one failing job fails alone and
the others are written (a job must therefore leave nothing behind but its writes; savepoints
around every job would do the same at a cost on every transaction, measured: a quarter of the
writer's time). Urgent jobs (a command a user waits for) commit in a transaction of their own
before the bulk ones (ingest batches) queued with them.

The writer's connection never checkpoints the WAL itself (a commit that did would stall every
queued write for the copy and its fsync); a second thread runs a passive checkpoint every
:data:`CHECKPOINT_EVERY_S`, which neither waits for nor blocks the writer. A passive checkpoint
never starts the WAL over, though: SQLite does that only when a write begins after a checkpoint
copied *every* frame, and under steady ingest new frames always arrive while it copies. The
WAL then grew without end (2 GB in 90 s at 20,000 points/s, 77 GB in half an hour: a full
disk). So when the checkpoint thread finds the WAL larger than :data:`WAL_RESTART_BYTES`
after a passive checkpoint, the writer starts it over after its next transaction: a
``RESTART`` checkpoint, which has only that transaction's pages left to copy.

Every outcome goes to the hub's :class:`~fieldhub.hub.store.health.StorageHealth`. A group
that fails because the store cannot be written (a full disk: ``SQLITE_FULL``) fails as a
whole, each job with that error: run alone, each would only fail the same way again.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeVar

from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from fieldhub.hub.store.database import BUSY_TIMEOUT_MS, sync_sqlite_engine, write_transaction
from fieldhub.hub.store.health import StorageHealth

log = logging.getLogger(__name__)

CHECKPOINT_EVERY_S: Final = 1.0
"""How often the WAL is copied into the database (it grows by what is written meanwhile)."""
WAL_RESTART_BYTES: Final = 64 * 1024 * 1024
"""Past this size the writer starts the WAL over (see the module's text); the file is then cut
back to it (``journal_size_limit``, ``store/database.py``)."""
_RESTART_BUSY_MS: Final = 100
"""How long the restart may wait for readers to leave the WAL; if they do not, it is tried
again after the next transaction."""

T = TypeVar("T")
Job = Callable[[Connection], T]


class Writes(Protocol):
    """Runs write jobs in transactions."""

    storage: StorageHealth
    """Where every outcome is reported (health, the outage log, how long to hold back)."""

    async def run(self, job: Job[T], *, urgent: bool = False) -> T:
        """Run ``job`` in a write transaction; its result once committed.

        Raises:
            Exception: what the job or the commit raised; the job's writes are undone.
        """
        ...

    async def close(self) -> None:
        """Finish the jobs already given, then stop."""
        ...


class EngineWrites:
    """Each job in its own transaction of ``engine`` (PostgreSQL; SQLite without a writer)."""

    def __init__(self, engine: AsyncEngine, *, storage: StorageHealth | None = None) -> None:
        self._engine = engine
        self.storage = storage or StorageHealth()

    async def run(self, job: Job[T], *, urgent: bool = False) -> T:
        """See :class:`Writes`."""
        try:
            async with write_transaction(self._engine) as conn:
                result = await conn.run_sync(job)
        except Exception as exc:
            self.storage.failed(exc)
            raise
        self.storage.succeeded()
        return result

    async def close(self) -> None:
        """Nothing to stop: the engine belongs to the hub."""


@dataclass(slots=True)
class _Task:
    job: Job[Any]
    urgent: bool
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


_STOP = None


class SqliteWriter:
    """One thread with one connection runs every job given to it (see the module's text).

    Args:
        url: the SQLite database (any driver name; the thread uses the standard ``sqlite3``).
        storage: where outcomes are reported (by default one of its own).
    """

    def __init__(
        self,
        url: str,
        *,
        wal_restart_bytes: int = WAL_RESTART_BYTES,
        storage: StorageHealth | None = None,
    ) -> None:
        self.storage = storage or StorageHealth()
        self._engine: Engine = sync_sqlite_engine(url)
        self._path = make_url(url).database or ""
        self._wal_restart_bytes = wal_restart_bytes
        self._restart_due = threading.Event()  # set by the checkpoint thread
        self._queue: queue.SimpleQueue[_Task | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="sqlite-writer", daemon=True)
        self._thread.start()
        self._stopping = threading.Event()
        self._checkpointer = threading.Thread(
            target=self._checkpoint, name="sqlite-checkpoint", daemon=True
        )
        self._checkpointer.start()
        self.transactions = 0
        """Transactions committed (jobs per transaction = jobs / transactions)."""
        self.jobs = 0
        self.wal_restarts = 0

    async def run(self, job: Job[T], *, urgent: bool = False) -> T:
        """See :class:`Writes`."""
        if not self._thread.is_alive():
            raise RuntimeError("the SQLite writer is stopped")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Task(job, urgent, future, loop))
        return await future

    async def close(self) -> None:
        """See :class:`Writes`."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            await asyncio.to_thread(self._thread.join)
        self._stopping.set()
        await asyncio.to_thread(self._checkpointer.join)
        self._engine.dispose()

    # -- the checkpoint thread ------------------------------------------------------------------
    def _checkpoint(self) -> None:
        try:
            db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error:  # the writer says why (it cannot open the database either)
            return
        try:
            page_size = db.execute("PRAGMA page_size").fetchone()[0]
            while not self._stopping.wait(CHECKPOINT_EVERY_S):
                try:
                    _busy, frames, _copied = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error as exc:  # busy with another checkpoint: the next one
                    log.debug("WAL checkpoint skipped: %s", exc)
                    continue
                # What the WAL holds since it last started over (its file keeps its size).
                if frames * page_size > self._wal_restart_bytes:
                    self._restart_due.set()
        finally:
            db.close()

    # -- the writer thread ----------------------------------------------------------------------
    def _serve(self) -> None:
        try:
            connection = self._engine.connect()
        except Exception as exc:  # no database: every job fails with why, none waits forever
            if self.storage.failed(exc) is None:
                log.error("the SQLite writer cannot open the database: %s", exc)
            while (task := self._queue.get()) is not None:
                _settle(task, None, exc)
            return
        with connection as conn:
            while True:
                first = self._queue.get()
                tasks = [first]
                while not self._queue.empty():  # everything that waits joins this round
                    tasks.append(self._queue.get_nowait())
                stop = _STOP in tasks
                given = [task for task in tasks if task is not None]
                urgent = [task for task in given if task.urgent]
                if urgent:
                    self._transaction(conn, urgent)
                bulk = [task for task in given if not task.urgent]
                if bulk:
                    self._transaction(conn, bulk)
                if self._restart_due.is_set():
                    self._restart_wal(conn)
                if stop:
                    return

    def _restart_wal(self, conn: Connection) -> None:
        self._restart_due.clear()
        db = conn.connection.dbapi_connection
        if db is None:
            return
        try:
            db.execute(f"PRAGMA busy_timeout={_RESTART_BUSY_MS}")
            busy, _frames, _copied = db.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
        except sqlite3.Error as exc:  # the checkpoint thread is copying: after its next round
            log.debug("WAL restart skipped: %s", exc)
            return
        finally:
            db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        if not busy:
            self.wal_restarts += 1

    def _transaction(self, conn: Connection, tasks: list[_Task]) -> None:
        try:
            with conn.begin():
                results = [task.job(conn) for task in tasks]
        except Exception as exc:
            outage = self.storage.failed(exc) is not None
            if outage or len(tasks) == 1:
                for task in tasks:
                    _settle(task, None, exc)
            else:  # which one failed? each alone
                for task in tasks:
                    self._transaction(conn, [task])
            return
        self.storage.succeeded()
        self.transactions += 1
        self.jobs += len(tasks)
        for task, result in zip(tasks, results, strict=True):
            _settle(task, result, None)


def _settle(task: _Task, result: Any, error: BaseException | None) -> None:
    def settle() -> None:
        if task.future.done():  # the caller was cancelled: nobody waits for it
            return
        if error is None:
            task.future.set_result(result)
        else:
            task.future.set_exception(error)

    try:
        task.loop.call_soon_threadsafe(settle)
    except RuntimeError:  # the caller's loop is closed
        log.debug("a write finished after its event loop closed")


def writes_for(engine: AsyncEngine, storage: StorageHealth | None = None) -> Writes:
    """The writer for ``engine``'s database: a writer thread for an SQLite file, the engine
    itself for PostgreSQL; outcomes go to ``storage``."""
    database = engine.url.database
    if engine.dialect.name == "sqlite" and database not in (None, "", ":memory:"):
        url = engine.url.render_as_string(hide_password=False)
        return SqliteWriter(url, storage=storage)
    # PostgreSQL, or an in-memory SQLite no other connection sees
    return EngineWrites(engine, storage=storage)
