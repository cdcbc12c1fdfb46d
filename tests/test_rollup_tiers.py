"""Hour and day rollup tiers (docs/retention.md): the roller folds them from the minute tier,
and history in buckets of whole hours or days, read from them, answers exactly as the raw
samples do, on SQLite and PostgreSQL, also after late readings, a second pass and a pass cut
short; a chart over whole days reads the day rows (they answer with the minutes gone)."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from fieldhub.hub.ingest.writer import IngestWriter
from fieldhub.hub.retention.roller import Roller
from fieldhub.hub.store.database import migrate
from fieldhub.hub.store.devices import DeviceRegistry
from fieldhub.hub.store.queries import Queries
from fieldhub.hub.store.rollup_tiers import RollupTiers
from fieldhub.hub.store.schema import rollup_late, rollup_marks, rollups, rollups_day, rollups_hour
from fieldhub.hub.store.writes import writes_for
from tests.test_history import AGGREGATES, Store, Value, _expected, _typed

HOUR = 3_600_000
DAY = 24 * HOUR
T0 = 1_700_000_000_000 + 12_345  # inside an hour and a day, as a device's clock is
DAYS = 3


class Tiered(Store):
    """A :class:`Store` with the roller of its database."""

    roller: Roller


@pytest.fixture
async def store(empty_engine: AsyncEngine) -> AsyncIterator[Tiered]:
    await migrate(empty_engine)
    await DeviceRegistry(empty_engine).create("rtu-1")
    writes = writes_for(empty_engine)
    tiered = Tiered(empty_engine, IngestWriter(empty_engine, writes), "rtu-1")
    tiered.roller = Roller(RollupTiers(empty_engine, writes), series_per_job=2, pace=0)
    try:
        yield tiered
    finally:
        await writes.close()


def _value(rng: random.Random, key: str) -> Value:
    if key == "level":  # quarters: sums are exact in any order, so averages are equal too
        return rng.randint(-4000, 4000) / 4
    if key == "door":
        return rng.random() < 0.5
    if key == "mode":
        return rng.choice(["auto", "off"])
    return rng.choice(["fault", 2, 7])  # mixed


async def _fill(store: Store, rng: random.Random, start: int, end: int, count: int) -> None:
    """``count`` instants in ``[start, end)``, some sent again (last wins), in a few batches."""
    if not store.stored:  # the first message gives each key its kind
        await store.send([(start, {"level": 1.5, "door": True, "mode": "auto", "mixed": 3})])
    for _ in range(4):
        instants = []
        for _ in range(count // 4):
            ts = start + rng.randrange(end - start)
            if rng.random() < 0.05 and store.stored["level"]:
                ts = rng.choice(list(store.stored["level"]))
            keys = rng.sample(["level", "door", "mode", "mixed"], rng.randint(1, 4))
            instants.append((ts, {key: _value(rng, key) for key in keys}))
        await store.send(instants)


async def _compare(store: Store, ranges: list[tuple[int, int]], buckets: tuple[int, ...]) -> int:
    """Every aggregate of every key over ``ranges`` in ``buckets``: the tiers' answer, the raw
    GROUP BY and a plain reading of what was sent must agree; how many points were compared."""
    queries = Queries(store.engine)
    checked = 0
    for key, (series_id, kind) in sorted((await queries.keys(store.device_id)).items()):
        for start, end in ranges:
            for bucket in buckets:
                for agg in AGGREGATES:
                    asked: dict[str, Any] = {
                        "series_id": series_id,
                        "kind": kind,
                        "start": start,
                        "end": end,
                        "bucket_ms": bucket,
                        "agg": agg,
                        "limit": 10_000,
                    }
                    tiered = await queries.history(**asked)
                    raw = await queries.history(**asked, from_samples=True)
                    expected = _expected(store.stored[key], kind, start, end, bucket, agg)
                    assert _typed(tiered, agg, False) == _typed(raw, agg, False), (key, agg)
                    assert _typed(tiered, agg, False) == _typed(expected, agg, False), (key, agg)
                    checked += len(tiered)
    return checked


async def _tier_rows(engine: AsyncEngine) -> list[Any]:
    async with engine.connect() as conn:
        hours = list(await conn.execute(select(rollups_hour).order_by("series_id", "hour")))
        days = list(await conn.execute(select(rollups_day).order_by("series_id", "day")))
    return hours + days


@pytest.mark.slow  # 4 s on SQLite, 6 s on PostgreSQL (2 busy cores): every aggregate compared
async def test_tiers_answer_as_the_raw_samples_do_also_after_late_readings(store: Tiered):
    rng = random.Random(18)
    await _fill(store, rng, T0, T0 + DAYS * DAY, 2000)
    now = T0 + (DAYS + 1) * DAY
    covered = await store.roller.roll(now, now - 90 * DAY)
    assert covered.hour == (now - 120_000) // HOUR * HOUR
    assert covered.day == covered.hour // DAY * DAY
    assert store.roller.folded["hour"] > DAYS * 24
    assert store.roller.folded["day"] >= DAYS

    # Late readings (a device back from an outage) in hours and a day already folded.
    await _fill(store, rng, T0 + 3 * HOUR, T0 + 30 * HOUR, 200)
    async with store.engine.connect() as conn:
        late = len(list(await conn.execute(select(rollup_late))))
    assert late > 0  # noted by the trigger, in ingest's transaction
    await store.roller.roll(now, now - 90 * DAY)
    assert store.roller.folded["late"] == late

    first_day = -(-T0 // DAY) * DAY
    ranges = [
        (T0, T0 + DAYS * DAY),  # edges inside minutes, hours and days
        (first_day, first_day + 2 * DAY),  # whole days
        (T0 + 5 * HOUR + 1, T0 + 9 * HOUR - 1),  # whole hours, no whole day
        (T0 + 90_000, T0 + 50 * 60_000),  # no whole hour: minutes and raw samples
    ]
    assert await _compare(store, ranges, (HOUR, 3 * HOUR, DAY, 2 * DAY)) > 1000


async def test_a_pass_again_or_cut_short_counts_nothing_twice(store: Tiered):
    rng = random.Random(7)
    await _fill(store, rng, T0, T0 + 2 * DAY, 800)
    now = T0 + 3 * DAY
    await store.roller.roll(now, now - 90 * DAY)
    folded = await _tier_rows(store.engine)
    assert folded

    await store.roller.roll(now, now - 90 * DAY)  # nothing new: the same rows
    assert await _tier_rows(store.engine) == folded
    # A pass cut short: the marks promised more than was folded; the next pass folds the
    # rest again by replacing, never adding.
    async with store.engine.begin() as conn:
        await conn.execute(update(rollup_marks).values(folded=T0 - T0 % DAY))
    await store.roller.roll(now, now - 90 * DAY)
    assert await _tier_rows(store.engine) == folded


async def test_a_chart_over_whole_days_reads_the_day_rows(store: Tiered):
    rng = random.Random(3)
    await _fill(store, rng, T0, T0 + DAYS * DAY, 600)
    now = T0 + (DAYS + 1) * DAY
    await store.roller.roll(now, now - 90 * DAY)
    first_day = -(-T0 // DAY) * DAY
    span = (first_day, first_day + 2 * DAY)
    queries = Queries(store.engine)
    series_id, kind = (await queries.keys(store.device_id))["level"]
    asked: dict[str, Any] = {
        "series_id": series_id,
        "kind": kind,
        "start": span[0],
        "end": span[1],
        "agg": "max",
        "limit": 100,
    }
    by_day = await queries.history(**asked, bucket_ms=DAY)
    by_hour = await queries.history(**asked, bucket_ms=HOUR)
    async with store.engine.begin() as conn:  # the minutes of those days gone
        await conn.execute(delete(rollups).where(rollups.c.minute >= span[0]))
    assert len(by_day) == 2
    assert 40 < len(by_hour) <= 48
    assert await queries.history(**asked, bucket_ms=DAY) == by_day
    assert await queries.history(**asked, bucket_ms=HOUR) == by_hour
    assert by_day == _expected(store.stored["level"], kind, *span, DAY, "max")
