"""The proof (issue 18): a month of telemetry on SQLite stays under a set size while the
trimmer runs, and nothing younger than the policy is removed.

Test-sized: a month of 10 msg/s is 26 million messages; here each simulated day is
:data:`PER_DAY` samples of 10 series with instants spread over the day, written through the
hub's own ``IngestWriter`` and SQLite writer thread (samples, rollups, series), with the
trimmer's sweep at the end of each day as the hub's task would run it. The file grows while
the first week fills, then stays put: the freed pages take the new rows. The speed figure
(ingest while the trimmer is busy against idle) is ``benchmarks/retention.py``'s.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from sqlalchemy import func, select

from fieldhub.hub.ingest.batch import Batch
from fieldhub.hub.ingest.writer import IngestWriter
from fieldhub.hub.retention import RetentionPolicy
from fieldhub.hub.retention.roller import Roller
from fieldhub.hub.retention.trimmer import Trimmer
from fieldhub.hub.store.database import create_engine, migrate, sqlite_url
from fieldhub.hub.store.devices import DeviceRegistry
from fieldhub.hub.store.retention import RetentionRows
from fieldhub.hub.store.rollup_tiers import RollupTiers
from fieldhub.hub.store.schema import samples
from fieldhub.hub.store.writes import writes_for
from fieldhub.protocol import Sample, Telemetry

DAY = 86_400_000
DAYS = 30
PER_DAY = 10_000  # samples a simulated day: 1,000 instants of 10 keys
KEYS = [f"k{i}" for i in range(10)]
START = 1_700_000_000_000
POLICY = RetentionPolicy(raw_days=7, minute_days=7)
LIMIT_BYTES = 8 * 2**20


async def write_day(writer: IngestWriter, device_id: str, day: int, seq: int) -> int:
    """One simulated day of telemetry, in ingest batches of 100 instants; the last seq."""
    instants = PER_DAY // len(KEYS)
    step = DAY // instants
    for first in range(0, instants, 100):
        seq += 1
        batch = Batch()
        points = [
            Sample(ts=START + day * DAY + i * step, values={k: i * 0.5 for k in KEYS})
            for i in range(first, first + 100)
        ]
        batch.telemetry.append((device_id, Telemetry(seq=seq, samples=points)))
        batch.add_seq(device_id, seq, seq)
        batch.messages += 1
        await writer.write(batch)
    return seq


def checkpointed_size(path: Path) -> int:
    """The database file's size once the WAL is copied into it (the writer is idle now)."""
    with closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA wal_checkpoint(PASSIVE)")
    return path.stat().st_size


@pytest.mark.slow
async def test_a_month_on_sqlite_stays_under_its_size_and_keeps_the_last_week(
    tmp_path: Path,
) -> None:
    path = tmp_path / "fieldhub.db"
    engine = create_engine(sqlite_url(path))
    await migrate(engine)
    await DeviceRegistry(engine).create("rtu-1")
    writes = writes_for(engine)
    writer = IngestWriter(engine, writes)
    trimmer = Trimmer(RetentionRows(engine, writes), lambda _device: {})
    roller = Roller(RollupTiers(engine, writes))
    sizes: list[int] = []
    seq = 0
    try:
        for day in range(DAYS):
            seq = await write_day(writer, "rtu-1", day, seq)
            now = START + (day + 1) * DAY
            covered = await roller.roll(now, now - POLICY.minute_days * DAY)
            await trimmer.sweep(POLICY, now, covered)
            sizes.append(checkpointed_size(path))
        async with engine.connect() as conn:
            kept = (await conn.execute(select(func.count()).select_from(samples))).scalar()
            oldest = (await conn.execute(select(func.min(samples.c.ts)))).scalar()
    finally:
        await writes.close()
        await engine.dispose()

    week = POLICY.raw_days * PER_DAY
    assert kept == week  # the last seven days, every sample of them, and nothing older
    assert oldest == START + (DAYS - POLICY.raw_days) * DAY
    assert trimmer.removed["samples"] == (DAYS - POLICY.raw_days) * PER_DAY
    # The set size: a week and a bit of this data (~6 MB here); the month untrimmed: ~21 MB.
    assert max(sizes) <= LIMIT_BYTES, sizes
    # And it stops growing once a week is in (page reuse, not vacuum: it never shrinks).
    assert sizes[-1] <= sizes[POLICY.raw_days + 1] * 1.1, sizes
