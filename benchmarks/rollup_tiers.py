"""Rollup tiers benchmark: what the late-minute trigger costs ingest, and how fast the roller
folds (docs/retention.md).

The hour and day tiers are folded by the roller, outside ingest's transaction; what ingest
pays is the trigger on ``rollups`` (migration 0020) that notes late minutes. This writes
batches of 1,000 points (50 instants of 20 keys) through the hub's ``IngestWriter`` and
SQLite writer thread, alternating phases so that the shared machine's load falls on all
alike: ``plain`` (the trigger dropped: ingest as it was before the tiers), ``present`` (the
trigger there, data of the present: past the mark, nothing noted) and ``late`` (the trigger
there, data of hours already folded: each new minute noted). Then the roller folds the whole
history (``fold_rows_per_s``: minute rows folded into hours, and hours into days, a second).

    .venv/bin/python benchmarks/rollup_tiers.py [--rounds 6] [--batches 100]

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, text

from fieldhub.hub.ingest.batch import Batch
from fieldhub.hub.ingest.writer import IngestWriter
from fieldhub.hub.retention.roller import Roller
from fieldhub.hub.store.database import create_engine, migrate, sqlite_url
from fieldhub.hub.store.devices import DeviceRegistry
from fieldhub.hub.store.rollup_tiers import HOUR_MS, RollupTiers
from fieldhub.hub.store.schema import rollup_late, rollups
from fieldhub.hub.store.writes import writes_for
from fieldhub.protocol import Sample, Telemetry

KEYS = [f"k{i}" for i in range(20)]
INSTANTS = 50
POINTS = INSTANTS * len(KEYS)
NOW = 1_760_000_000_000 - 1_760_000_000_000 % HOUR_MS


class Feed:
    """Batches of one device's telemetry through ``IngestWriter``."""

    def __init__(self, writer: IngestWriter) -> None:
        self.writer = writer
        self.seq = 0

    async def commit(self, first_ts: int) -> float:
        """One batch of instants a second apart from ``first_ts``; seconds it took."""
        self.seq += 1
        points = [
            Sample(ts=first_ts + i * 1000, values={k: float(i) for k in KEYS})
            for i in range(INSTANTS)
        ]
        batch = Batch()
        batch.telemetry.append(("rtu", Telemetry(seq=self.seq, samples=points)))
        batch.add_seq("rtu", self.seq, self.seq)
        batch.messages, batch.points = 1, POINTS
        started = time.perf_counter()
        await self.writer.write(batch)
        return time.perf_counter() - started


async def main(args: argparse.Namespace) -> dict[str, Any]:
    """Alternate the phases, then fold; the figures."""
    with tempfile.TemporaryDirectory() as folder:
        engine = create_engine(sqlite_url(Path(folder) / "fieldhub.db"))
        await migrate(engine)
        await DeviceRegistry(engine).create("rtu")
        writes = writes_for(engine)
        feed = Feed(IngestWriter(engine, writes))
        tiers = RollupTiers(engine, writes)
        await tiers.advance("hour", NOW)  # hours before NOW are folded: their minutes are late
        async with engine.connect() as conn:
            triggers = [
                str(sql)
                for (sql,) in await conn.execute(
                    text("SELECT sql FROM sqlite_master WHERE type = 'trigger'")
                )
            ]
        seconds: dict[str, list[float]] = {"plain": [], "present": [], "late": []}
        present, late = NOW, NOW - 400 * HOUR_MS
        try:
            order = ["plain", "present", "late"]
            for round_ in range(args.rounds):
                # Each round starts with another phase: none always follows a schema change.
                for phase in order[round_ % 3 :] + order[: round_ % 3]:
                    async with engine.begin() as conn:
                        for name in ("rollups_late_INSERT", "rollups_late_UPDATE"):
                            await conn.execute(text(f"DROP TRIGGER IF EXISTS {name}"))
                        if phase != "plain":
                            for sql in triggers:
                                await conn.execute(text(sql))
                    for _ in range(args.batches):
                        if phase == "late":
                            seconds[phase].append(await feed.commit(late))
                            late += INSTANTS * 1000
                        else:
                            seconds[phase].append(await feed.commit(present))
                            present += INSTANTS * 1000
            async with engine.connect() as conn:
                noted = (await conn.execute(select(func.count()).select_from(rollup_late))).scalar()
                minutes = (await conn.execute(select(func.count()).select_from(rollups))).scalar()
            roller = Roller(tiers, pace=0)
            started = time.perf_counter()
            await roller.roll(present + 2 * HOUR_MS, 0)
            fold_s = time.perf_counter() - started
        finally:
            await writes.close()
            await engine.dispose()

    def rate(phase: str) -> int:
        return round(len(seconds[phase]) * POINTS / sum(seconds[phase]))

    def p50(phase: str) -> float:
        return round(statistics.median(seconds[phase]) * 1000, 2)

    return {
        "points_per_phase": args.rounds * args.batches * POINTS,
        **{f"rate_{phase}": rate(phase) for phase in seconds},
        **{f"p50_ms_{phase}": p50(phase) for phase in seconds},
        "ratio_present": round(rate("present") / rate("plain"), 3),
        "ratio_late": round(rate("late") / rate("plain"), 3),
        "late_hours_noted": noted,
        "minute_rows": minutes,
        "fold_s": round(fold_s, 2),
        "fold_rows_per_s": round(minutes / fold_s),
        "hours_folded": roller.folded["hour"] + roller.folded["late"],
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module's text)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--batches", type=int, default=100, help="per phase and round")
    return parser.parse_args(argv)


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(parse_args()))))
