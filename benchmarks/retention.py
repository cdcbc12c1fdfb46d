"""Retention benchmark: does ingest slow down while the trimmer deletes?

A real SQLite store (the hub's writer thread) holds ``OLD`` samples older than the policy
keeps, spread over three weeks and ``KEYS`` series of one device. Then, through the hub's own
``IngestWriter``, ``BATCHES`` batches of ``POINTS`` fresh points are committed back to back:

- ``idle``: with the trimmer idle (the raw reference of the same run);
- ``busy``: while the trimmer sweeps the old samples away in its batches.

Figures: ``rate_idle`` and ``rate_busy`` (points/s), ``ratio`` (busy / idle), the commit
latency p50/p99 of both, how many rows the trimmer removed during the busy phase and at what
rate, and the database file's size before the trim, after it, and after the same amount of
old data again (freed pages reused: the file does not grow).

Last line: JSON. Run: ``.venv/bin/python benchmarks/retention.py``.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import statistics
import tempfile
import time
from contextlib import closing
from pathlib import Path
from typing import Any

from fieldhub.clock import now_ms
from fieldhub.hub.ingest.batch import Batch
from fieldhub.hub.ingest.writer import IngestWriter
from fieldhub.hub.retention import RetentionPolicy
from fieldhub.hub.retention.trimmer import Trimmer
from fieldhub.hub.store.database import create_engine, migrate, sqlite_url
from fieldhub.hub.store.devices import DeviceRegistry
from fieldhub.hub.store.retention import RetentionRows
from fieldhub.hub.store.rollup_tiers import Coverage
from fieldhub.hub.store.writes import writes_for
from fieldhub.protocol import Sample, Telemetry

DAY = 86_400_000
KEYS = [f"k{i}" for i in range(20)]
OLD = 600_000
POINTS = 1000
BATCHES = 300
POLICY = RetentionPolicy(raw_days=7, minute_days=7)


class Feed:
    """Batches of one device's telemetry, each ``POINTS`` points (``POINTS / len(KEYS)``
    instants of every key)."""

    def __init__(self, writer: IngestWriter) -> None:
        self.writer = writer
        self.seq = 0

    async def commit(self, first_ts: int, step: int) -> float:
        """One batch from ``first_ts``, instants ``step`` ms apart; seconds it took."""
        self.seq += 1
        instants = POINTS // len(KEYS)
        points = [
            Sample(ts=first_ts + i * step, values={k: float(i) for k in KEYS})
            for i in range(instants)
        ]
        batch = Batch()
        batch.telemetry.append(("rtu", Telemetry(seq=self.seq, samples=points)))
        batch.add_seq("rtu", self.seq, self.seq)
        batch.messages, batch.points = 1, POINTS
        started = time.perf_counter()
        await self.writer.write(batch)
        return time.perf_counter() - started

    async def old_data(self, now: int) -> None:
        """``OLD`` points spread over the three weeks before the policy's cut."""
        batches = OLD // POINTS
        span = 21 * DAY
        instants = POINTS // len(KEYS)
        step = span // (batches * instants)
        start = now - (POLICY.raw_days + 22) * DAY
        for b in range(batches):
            await self.commit(start + b * instants * step, step)

    async def fresh(self, now: int) -> list[float]:
        """``BATCHES`` batches of points from ``now`` on; each commit's seconds."""
        instants = POINTS // len(KEYS)
        return [await self.commit(now + b * instants * 10, 10) for b in range(BATCHES)]


def _size(path: Path) -> int:
    with closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA wal_checkpoint(PASSIVE)")
    return path.stat().st_size


def _figures(name: str, seconds: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(seconds, n=100)
    return {
        f"rate_{name}": round(len(seconds) * POINTS / sum(seconds)),
        f"p50_ms_{name}": round(cuts[49] * 1000, 2),
        f"p99_ms_{name}": round(cuts[98] * 1000, 2),
    }


async def main() -> dict[str, Any]:
    """Run both phases; the figures."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fieldhub.db"
        engine = create_engine(sqlite_url(path))
        await migrate(engine)
        await DeviceRegistry(engine).create("rtu")
        writes = writes_for(engine)
        feed = Feed(IngestWriter(engine, writes))
        trimmer = Trimmer(RetentionRows(engine, writes), lambda _device: {})
        now = now_ms()
        try:
            await feed.old_data(now)
            size_full = _size(path)
            idle = await feed.fresh(now)
            sweep = asyncio.create_task(trimmer.sweep(POLICY, now, Coverage(now, now)))
            started = time.perf_counter()
            busy = await feed.fresh(now + DAY)
            busy_s = time.perf_counter() - started
            removed_during = trimmer.removed["samples"]
            trim_done = sweep.done()
            await sweep
            trim_s = time.perf_counter() - started
            size_trimmed = _size(path)
            await feed.old_data(now)  # the same again, into the freed pages
            size_refilled = _size(path)
        finally:
            await writes.close()
            await engine.dispose()
    figures = {**_figures("idle", idle), **_figures("busy", busy)}
    return {
        "old_samples": OLD,
        "points_per_phase": BATCHES * POINTS,
        **figures,
        "ratio": round(figures["rate_busy"] / figures["rate_idle"], 3),
        "trimmed_during_busy": removed_during,
        "trim_finished_within_busy": trim_done,
        "trim_rows_per_s": round(trimmer.removed["samples"] / trim_s),
        "busy_s": round(busy_s, 2),
        "size_full_mb": round(size_full / 2**20, 1),
        "size_trimmed_mb": round(size_trimmed / 2**20, 1),
        "size_refilled_mb": round(size_refilled / 2**20, 1),
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
