"""The SQLite writer thread: every job committed once, in groups, a failing job failing alone."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Connection

from fieldhub.hub.store.database import create_engine, sqlite_url
from fieldhub.hub.store.writes import CHECKPOINT_EVERY_S, EngineWrites, SqliteWriter, writes_for
from tests.waiting import eventually


def _table(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE notes (n INTEGER PRIMARY KEY, body TEXT NOT NULL)")


def _rows(path: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(path) as db:
        return list(db.execute("SELECT n, body FROM notes ORDER BY n"))


def _insert(n: int, body: str | None = "x") -> Callable[[Connection], int]:
    def job(conn: Connection) -> int:
        conn.execute(text("INSERT INTO notes (n, body) VALUES (:n, :body)"), {"n": n, "body": body})
        return n

    return job


async def test_jobs_given_together_commit_together_and_each_gets_its_result(
    tmp_path: Path,
) -> None:
    path = tmp_path / "w.db"
    _table(path)
    writer = SqliteWriter(sqlite_url(path))
    try:
        results = await asyncio.gather(*(writer.run(_insert(n)) for n in range(200)))
    finally:
        await writer.close()
    assert results == list(range(200))
    assert [n for n, _ in _rows(path)] == list(range(200))
    assert writer.jobs == 200
    assert writer.transactions < 200  # queued jobs shared commits


async def test_a_failing_job_fails_alone_and_the_others_of_its_group_are_written(
    tmp_path: Path,
) -> None:
    path = tmp_path / "w.db"
    _table(path)
    writer = SqliteWriter(sqlite_url(path))
    try:
        outcomes = await asyncio.gather(
            *(writer.run(_insert(n, None if n == 7 else "ok")) for n in range(20)),
            return_exceptions=True,
        )
        assert await writer.run(_insert(100)) == 100  # the writer goes on
    finally:
        await writer.close()
    failed = [n for n, outcome in enumerate(outcomes) if isinstance(outcome, Exception)]
    assert failed == [7]
    assert "NOT NULL" in str(outcomes[7])
    assert [n for n, _ in _rows(path)] == [n for n in range(20) if n != 7] + [100]


async def test_an_urgent_job_is_committed_before_bulk_jobs_queued_with_it(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    _table(path)
    writer = SqliteWriter(sqlite_url(path))
    order: list[str] = []
    gate = asyncio.Event()
    loop = asyncio.get_running_loop()

    def blocker(conn: Connection) -> None:  # holds the thread while the others queue up
        asyncio.run_coroutine_threadsafe(gate.wait(), loop).result(5)

    def recorder(name: str) -> Callable[[Connection], None]:
        def job(conn: Connection) -> None:
            order.append(name)

        return job

    try:
        first = asyncio.ensure_future(writer.run(blocker))
        await asyncio.sleep(0.05)
        bulk = asyncio.ensure_future(writer.run(recorder("bulk")))
        urgent = asyncio.ensure_future(writer.run(recorder("urgent"), urgent=True))
        await asyncio.sleep(0.05)
        gate.set()
        await asyncio.gather(first, bulk, urgent)
    finally:
        await writer.close()
    assert order == ["urgent", "bulk"]


async def test_a_closed_writer_refuses_work_and_has_finished_what_it_was_given(
    tmp_path: Path,
) -> None:
    path = tmp_path / "w.db"
    _table(path)
    writer = SqliteWriter(sqlite_url(path))
    pending = [asyncio.ensure_future(writer.run(_insert(n))) for n in range(10)]
    await asyncio.sleep(0)  # given before the close
    await writer.close()
    assert [await job for job in pending] == list(range(10))
    with pytest.raises(RuntimeError, match="stopped"):
        await writer.run(_insert(11))
    assert len(_rows(path)) == 10


async def test_a_file_database_gets_the_writer_thread_and_memory_the_engine(
    tmp_path: Path,
) -> None:
    file_engine = create_engine(sqlite_url(tmp_path / "f.db"))
    memory_engine = create_engine("sqlite+aiosqlite://")
    file_writes = writes_for(file_engine)
    try:
        assert isinstance(file_writes, SqliteWriter)
        assert isinstance(writes_for(memory_engine), EngineWrites)
    finally:
        await file_writes.close()
        await file_engine.dispose()
        await memory_engine.dispose()


async def test_the_wal_is_copied_into_the_database_by_the_checkpoint_thread(
    tmp_path: Path,
) -> None:
    path = tmp_path / "w.db"
    _table(path)
    writer = SqliteWriter(sqlite_url(path))
    before = path.stat().st_size
    try:

        def big(conn: Connection) -> None:
            rows = [{"n": n, "body": "x" * 1000} for n in range(2000)]
            conn.execute(text("INSERT INTO notes (n, body) VALUES (:n, :body)"), rows)

        await writer.run(big)
        # The writer's own commits never checkpoint: the rows are in the WAL only ...
        assert path.stat().st_size == before
        # ... until the checkpoint thread copies them, within a checkpoint interval or two.
        await eventually(
            lambda: path.stat().st_size > 2_000_000,
            "the rows copied into the database file",
            within_s=3 * CHECKPOINT_EVERY_S,
        )
    finally:
        await writer.close()
    assert len(_rows(path)) == 2000


async def test_a_writer_without_its_database_fails_each_job_and_hangs_none(tmp_path: Path) -> None:
    writer = SqliteWriter(sqlite_url(tmp_path / "no such folder" / "w.db"))
    try:
        for n in range(3):
            with pytest.raises(Exception, match="unable to open database"):
                await asyncio.wait_for(writer.run(_insert(n)), 5)
    finally:
        await writer.close()
