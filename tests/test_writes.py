"""The SQLite writer thread: every job committed once, in groups, a failing job failing alone,
a full disk failing a group once; and ingest resting the writer between its commits while they
are slow."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Connection

from fieldhub.clock import now_ms
from fieldhub.hub.devices.presence import PresenceTracker
from fieldhub.hub.inbound import Inbound
from fieldhub.hub.ingest.batch import PresenceChange
from fieldhub.hub.ingest.pipeline import Ingest, IngestSettings
from fieldhub.hub.ingest.stats import IngestStats
from fieldhub.hub.ingest.writer import IngestWriter
from fieldhub.hub.store.database import create_engine, migrate, sqlite_url
from fieldhub.hub.store.devices import DeviceRegistry
from fieldhub.hub.store.writes import CHECKPOINT_EVERY_S, EngineWrites, SqliteWriter, writes_for
from fieldhub.protocol import Channel, Reply, Status, Telemetry, Upload, encode, topic_for
from tests.support.disk import small_disk
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


def _wal_frames(path: Path) -> int:
    """Frames in the WAL since it last started over (a passive checkpoint reports them)."""
    with sqlite3.connect(path) as db:
        _busy, frames, _copied = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return int(frames)


async def test_under_steady_writes_the_wal_starts_over_instead_of_growing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "w.db"
    _table(path)
    limit = 512 * 1024
    writer = SqliteWriter(sqlite_url(path), wal_restart_bytes=limit)
    written = 0
    try:
        # Writes that never pause for a checkpoint to catch up, as ingest under load: without
        # a restart the WAL would hold every one of them (tens of MB here).
        deadline = time.monotonic() + 5 * CHECKPOINT_EVERY_S
        while time.monotonic() < deadline:
            rows = [(written + i, "x" * 2000) for i in range(50)]

            def batch(conn: Connection, rows: list[tuple[int, str]] = rows) -> None:
                conn.exec_driver_sql("INSERT INTO notes (n, body) VALUES (?, ?)", rows)

            await writer.run(batch)
            written += len(rows)
            await asyncio.sleep(0.002)
        frames = _wal_frames(path)
    finally:
        await writer.close()
    assert writer.wal_restarts >= 2
    # The WAL holds what came after its last restart (a second or so), not all five seconds.
    assert frames * 4096 < written * 2000 / 2, (frames, written)
    assert len(_rows(path)) == written  # and nothing lost on the way


async def test_a_writer_without_its_database_fails_each_job_and_hangs_none(tmp_path: Path) -> None:
    writer = SqliteWriter(sqlite_url(tmp_path / "no such folder" / "w.db"))
    try:
        for n in range(3):
            with pytest.raises(Exception, match="unable to open database"):
                await asyncio.wait_for(writer.run(_insert(n)), 5)
    finally:
        await writer.close()


async def test_a_group_failing_on_a_full_disk_fails_as_a_whole_and_writes_resume_once_freed(
    tmp_path: Path,
) -> None:
    with small_disk(tmp_path) as disk:
        path = disk.path / "w.db"
        _table(path)
        writer = SqliteWriter(sqlite_url(path))
        runs: list[int] = []
        gate = asyncio.Event()
        loop = asyncio.get_running_loop()

        def blocker(conn: Connection) -> None:  # holds the thread while the others queue up
            asyncio.run_coroutine_threadsafe(gate.wait(), loop).result(5)

        def big(n: int) -> Callable[[Connection], int]:
            def job(conn: Connection) -> int:
                runs.append(n)
                conn.execute(
                    text("INSERT INTO notes VALUES (:n, :body)"), {"n": n, "body": "x" * 50_000}
                )
                return n

            return job

        try:
            await writer.run(_insert(0))  # the store's files exist, as in a running hub
            disk.fill()
            first = asyncio.ensure_future(writer.run(blocker))
            await asyncio.sleep(0.05)
            group = [asyncio.ensure_future(writer.run(big(n))) for n in range(1, 6)]
            await asyncio.sleep(0.05)
            gate.set()
            await first
            outcomes = await asyncio.gather(*group, return_exceptions=True)
            assert all("disk is full" in str(outcome) for outcome in outcomes), outcomes
            assert sorted(runs) == [1, 2, 3, 4, 5]  # each once: alone, each would fail again
            outage = writer.storage.outage
            assert outage is not None
            assert outage.problem == "disk full (SQLITE_FULL)"

            disk.free()
            assert await writer.run(big(9)) == 9  # the same connection writes again
        finally:
            await writer.close()
        assert _rows(path) == [(0, "x"), (9, "x" * 50_000)]


def _no_upload(device_id: str, upload: Upload) -> None:
    raise AssertionError(f"no upload expected from {device_id}: {upload}")


def _no_command(device_id: str, reply: Reply) -> tuple[str, str]:
    """No command waits in these tests: a reply would be refused."""
    return ("unknown_command", f"no command {reply.id!r} is waiting")


class _Acks:
    """Where ingest's acknowledgements go in a test without a broker: recorded."""

    def __init__(self) -> None:
        self.acked: dict[str, int] = {}
        self.paused = False  # whether ingest asked the broker to hold messages back

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        if topic.endswith("/ack"):
            self.acked[topic.split("/")[2]] = json.loads(payload)["seq"]

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False


async def test_while_commits_are_slow_ingest_rests_the_writer_and_loses_nothing(
    tmp_path: Path,
) -> None:
    url = sqlite_url(tmp_path / "hub.db")
    engine = create_engine(url)
    await migrate(engine)
    await DeviceRegistry(engine).create("slow-db")
    writer = SqliteWriter(url)
    acks = _Acks()
    # A linger well above what a quick commit takes, even on a busy machine: only slow commits
    # (the writer held 150 ms at a time below) may move it.
    settings = IngestSettings(linger_s=0.05, rest_factor=2.0, max_linger_s=0.4)
    presence = PresenceTracker(lambda _change: None, stale_after_s=60)
    ingest = Ingest(IngestWriter(engine, writer), acks, presence, IngestStats(), settings)
    inbound = Inbound(ingest, presence, _no_command, acks, ingest.stats, uploads=_no_upload)
    await ingest.load()
    committing = asyncio.create_task(ingest.run())
    topic, start = topic_for("slow-db", Channel.TELEMETRY), now_ms()

    async def send(first: int, count: int) -> None:
        for seq in range(first, first + count):
            inbound.submit(topic, encode(Telemetry(seq=seq, ts=start + seq, values={"v": seq})))
            await asyncio.sleep(0.004)

    def busy(conn: Connection) -> None:
        time.sleep(0.15)  # the database is slow: every commit waits up to 150 ms for it

    async def slow_database(until: asyncio.Event) -> None:
        while not until.is_set():
            await writer.run(busy)

    try:
        await send(1, 50)
        await eventually(lambda: acks.acked.get("slow-db") == 50, "the first 50 acknowledged")
        assert ingest.linger_s() < 2 * settings.linger_s  # fast commits: about the configured one

        done = asyncio.Event()
        slowing = asyncio.create_task(slow_database(done))
        await send(51, 150)
        # Commits wait up to 150 ms for the writer: the next batch waits twice as long as they
        # took, so that ingest has the writer a third of the time at most.
        assert 2 * settings.linger_s <= ingest.linger_s() <= settings.max_linger_s
        await eventually(lambda: acks.acked.get("slow-db") == 200, "all 200 acknowledged")
        done.set()
        await slowing

        await send(201, 300)  # fast again: the linger comes back down as commits do
        await eventually(lambda: acks.acked.get("slow-db") == 500, "all 500 acknowledged")
        assert ingest.linger_s() < 2 * settings.linger_s
        async with engine.connect() as conn:
            stored = (await conn.execute(text("SELECT count(*) FROM samples"))).scalar_one()
        assert stored == 500  # every message, once
    finally:
        committing.cancel()
        await asyncio.gather(committing, return_exceptions=True)
        await writer.close()
        await engine.dispose()


async def test_a_batch_the_full_disk_refuses_is_held_with_its_presence_change_then_committed(
    tmp_path: Path,
) -> None:
    with small_disk(tmp_path) as disk:
        url = sqlite_url(disk.path / "hub.db")
        engine = create_engine(url)
        await migrate(engine)
        await DeviceRegistry(engine).create("pump")
        writer = SqliteWriter(url)
        acks = _Acks()
        settings = IngestSettings(max_batch_messages=20, max_pending_messages=50)

        def record(change: PresenceChange) -> None:  # into ingest, made after its tracker
            ingest.record_presence(change)

        presence = PresenceTracker(record, stale_after_s=60)
        ingest = Ingest(IngestWriter(engine, writer), acks, presence, IngestStats(), settings)
        inbound = Inbound(ingest, presence, _no_command, acks, ingest.stats, uploads=_no_upload)
        await ingest.load()
        committing = asyncio.create_task(ingest.run())
        telemetry, start = topic_for("pump", Channel.TELEMETRY), now_ms()

        def send(first: int, count: int) -> None:
            for seq in range(first, first + count):
                values = {f"k{n}": "x" * 250 for n in range(20)}
                inbound.submit(telemetry, encode(Telemetry(seq=seq, ts=start + seq, values=values)))

        try:
            send(1, 1)
            await eventually(lambda: acks.acked.get("pump") == 1, "the first acknowledged")
            disk.fill()
            send(2, 60)  # more than the brake allows to wait: the broker holds the rest
            power_lost = encode(Status(online=False, reason="power lost"))
            inbound.submit(topic_for("pump", Channel.STATUS), power_lost)
            await eventually(lambda: writer.storage.retry_in_s() >= 0.4, "failed tries")
            assert acks.acked["pump"] == 1  # nothing acknowledged that is not stored
            assert acks.paused  # and the brake stays on while the batch is held

            disk.free()
            await eventually(lambda: acks.acked.get("pump") == 61, "all 61 acknowledged", 5)
            assert not acks.paused
            async with engine.connect() as conn:
                stored = (await conn.execute(text("SELECT count(*) FROM samples"))).scalar_one()
                presence = (
                    await conn.execute(text("SELECT presence, presence_reason FROM devices"))
                ).one()
            assert stored == 61 * 20  # every message, once
            assert tuple(presence) == ("offline", "power lost")  # not lost with the failure
        finally:
            committing.cancel()
            await asyncio.gather(committing, return_exceptions=True)
            await writer.close()
            await engine.dispose()
