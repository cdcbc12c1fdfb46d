"""The tiers' proof (issue 18): a year of telemetry at a low rate, rolled and trimmed every
week as the hub's sweep would, keeps raw samples, minute, hour and day rollups each within its
own days, and a chart of the year, a point a day, is read from the day rows (the finer rows of
those days are gone) and counts every sample that was sent.

Test-sized: two series, a sample every ten minutes (52,560 a series), written through the
hub's own ``IngestWriter`` a week per batch, on SQLite."""

from __future__ import annotations

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
from fieldhub.hub.store.queries import Queries
from fieldhub.hub.store.retention import RetentionRows
from fieldhub.hub.store.rollup_tiers import RollupTiers
from fieldhub.hub.store.schema import rollups, rollups_day, rollups_hour, samples
from fieldhub.hub.store.writes import writes_for
from fieldhub.protocol import Sample, Telemetry

DAY = 86_400_000
STEP = 600_000  # a sample every ten minutes
START = 1_700_000_000_000
WEEKS = 53
POLICY = RetentionPolicy(raw_days=7, minute_days=30, hour_days=90, day_days=3650)


def value(ts: int) -> float:
    return (ts // STEP) % 97 / 4  # quarters: sums are exact in any order


@pytest.mark.slow
async def test_a_year_keeps_each_tier_within_its_days_and_a_yearly_chart_reads_days(
    tmp_path: Path,
) -> None:
    engine = create_engine(sqlite_url(tmp_path / "fieldhub.db"))
    await migrate(engine)
    await DeviceRegistry(engine).create("rtu-1")
    writes = writes_for(engine)
    writer = IngestWriter(engine, writes)
    trimmer = Trimmer(RetentionRows(engine, writes), lambda _device: {})
    roller = Roller(RollupTiers(engine, writes), pace=0)
    end = START + 365 * DAY
    try:
        for week in range(WEEKS):
            first, last = START + week * 7 * DAY, min(START + (week + 1) * 7 * DAY, end)
            batch = Batch()
            points = [Sample(ts=ts, values={"temp": value(ts), "door": ts % 3 == 0})
                      for ts in range(first, last, STEP)]  # fmt: skip
            batch.telemetry.append(("rtu-1", Telemetry(seq=week + 1, samples=points)))
            batch.add_seq("rtu-1", week + 1, week + 1)
            batch.messages += 1
            await writer.write(batch)
            covered = await roller.roll(last, last - POLICY.minute_days * DAY)
            await trimmer.sweep(POLICY, last, covered)
        async with engine.connect() as conn:

            async def oldest(column: object) -> int:
                return int((await conn.execute(select(func.min(column)))).scalar_one())

            kept = {
                "raw": await oldest(samples.c.ts),
                "minute": await oldest(rollups.c.minute),
                "hour": await oldest(rollups_hour.c.hour),
                "day": await oldest(rollups_day.c.day),
            }
            days = (await conn.execute(select(func.count()).select_from(rollups_day))).scalar()
        queries = Queries(engine)
        series_id, kind = (await queries.keys("rtu-1"))["temp"]
        year = (-(-START // DAY) * DAY, end // DAY * DAY)
        asked = {"series_id": series_id, "kind": kind, "start": year[0], "end": year[1]}
        counts = await queries.history(**asked, bucket_ms=DAY, agg="count", limit=1000)
        means = await queries.history(**asked, bucket_ms=DAY, agg="avg", limit=1000)
    finally:
        await writes.close()
        await engine.dispose()

    assert end - 7 * DAY <= kept["raw"] < end - 6 * DAY
    assert end - 30 * DAY <= kept["minute"] < end - 29 * DAY
    assert end - 90 * DAY <= kept["hour"] < end - 89 * DAY
    assert kept["day"] == START // DAY * DAY  # the whole year
    assert days == 2 * 365  # two series, 366 calendar days touched, the last not over yet
    # The chart: every whole day of the year, each with its 144 samples, from day rows only
    # for all but the last month (no finer rows are left there).
    assert [ts for ts, _ in counts] == list(range(year[0], year[1], DAY))
    assert {n for _, n in counts} == {144}
    for day, mean in means:
        instants = range(day - day % STEP + (START % STEP), day + DAY, STEP)
        expected = [value(ts) for ts in instants if day <= ts < day + DAY]
        assert mean == pytest.approx(sum(expected) / len(expected)), day
