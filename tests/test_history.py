"""History from per-minute rollups: the same answers as aggregating the raw samples.

Random telemetry of every kind (numbers, booleans, text, a key that mixes numbers and text) is
written batch by batch through the hub's own ``IngestWriter``, with instants sent again (last
wins, in a later batch and within one batch), on SQLite and PostgreSQL. Then every aggregate
over buckets of whole minutes, on ranges whose edges cut minutes, must equal what the raw
samples give: the store's raw GROUP BY, and a plain Python reading of the same data.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from fieldhub.hub.ingest.batch import Batch
from fieldhub.hub.ingest.writer import IngestWriter
from fieldhub.hub.store.database import migrate
from fieldhub.hub.store.devices import DeviceRegistry
from fieldhub.hub.store.queries import Aggregate, Queries, UnknownKeys, WireValue
from fieldhub.hub.store.schema import rollups, samples, series
from fieldhub.hub.store.writes import writes_for
from fieldhub.protocol import Sample, Telemetry

MINUTE = 60_000
T0 = 1_700_000_000_000 + 12_345  # not on a minute: neither is a device's clock
SPAN = 3 * 3_600_000
AGGREGATES: tuple[Aggregate, ...] = ("avg", "min", "max", "last", "count")
Value = bool | int | float | str


class Store:
    """A device's telemetry written through ``IngestWriter``, and what should be stored."""

    def __init__(self, engine: AsyncEngine, writer: IngestWriter, device_id: str) -> None:
        self.engine = engine
        self.writer = writer
        self.device_id = device_id
        self.seq = 0
        self.stored: dict[str, dict[int, Value]] = {}  # key -> ts -> value, last wins

    async def send(self, *messages: list[tuple[int, dict[str, Value]]]) -> None:
        """One ingest batch of ``messages``, each a list of (ts, values)."""
        batch = Batch()
        for instants in messages:
            self.seq += 1
            sent = [Sample(ts=ts, values=values) for ts, values in instants]
            batch.telemetry.append((self.device_id, Telemetry(seq=self.seq, samples=sent)))
            batch.add_seq(self.device_id, self.seq, self.seq)
            batch.messages += 1
            for ts, values in instants:
                for key, value in values.items():
                    self.stored.setdefault(key, {})[ts] = value
        await self.writer.write(batch)


@pytest.fixture
async def store(empty_engine: AsyncEngine) -> AsyncIterator[Store]:
    await migrate(empty_engine)
    await DeviceRegistry(empty_engine).create("rtu-1")
    writes = writes_for(empty_engine)
    try:
        yield Store(empty_engine, IngestWriter(empty_engine, writes), "rtu-1")
    finally:
        await writes.close()


def _random_value(rng: random.Random, key: str) -> Value:
    if key == "level":  # quarters: sums are exact in any order, so avg must be equal too
        return rng.randint(-4000, 4000) / 4
    if key == "noisy":
        return rng.uniform(-1e3, 1e3)
    if key == "door":
        return rng.random() < 0.5
    if key == "mode":
        return rng.choice(["auto", "manual", "off"])
    return rng.choice(["fault", "ok"]) if rng.random() < 0.2 else rng.randint(0, 9)  # mixed


async def _fill_randomly(store: Store, rng: random.Random) -> None:
    keys = ["level", "noisy", "door", "mode", "mixed"]
    # The first batch gives every key its kind (a number for "mixed").
    await store.send([(T0, {"level": 1.5, "noisy": 0.1, "door": True, "mode": "auto", "mixed": 3})])
    for _ in range(14):
        messages = []
        for _ in range(rng.randint(1, 4)):
            instants = []
            for _ in range(rng.randint(1, 300)):
                stored = [ts for ts in store.stored["level"]]
                if rng.random() < 0.1:  # an instant already stored: its value is replaced
                    ts = rng.choice(stored)
                elif rng.random() < 0.05 and instants:  # the same instant twice in one batch
                    ts = rng.choice(instants)[0]
                else:
                    ts = T0 + rng.randrange(SPAN)
                chosen = rng.sample(keys, rng.randint(1, len(keys)))
                instants.append((ts, {key: _random_value(rng, key) for key in chosen}))
            messages.append(instants)
        await store.send(*messages)


def _render(kind: str, agg: Aggregate, number: float | None) -> WireValue:
    if number is None:
        return None
    if agg == "count":
        return int(number)
    if kind == "bool" and agg != "avg":
        return number != 0
    return int(number) if number.is_integer() else number


def _expected(
    points: dict[int, Value], kind: str, start: int, end: int, bucket: int, agg: Aggregate
) -> list[tuple[int, WireValue]]:
    """What aggregating the raw values gives: numbers (booleans as 0/1) count, text does not,
    a bucket of text only is still there (count 0, others null), ``last`` of text is null."""
    buckets: dict[int, list[tuple[int, Value]]] = {}
    for ts in sorted(points):
        if start <= ts < end:
            buckets.setdefault(ts // bucket * bucket, []).append((ts, points[ts]))
    answer = []
    for label, rows in sorted(buckets.items()):
        numbers = [float(v) for _, v in rows if not isinstance(v, str)]
        newest = rows[-1][1]
        number: float | None = {
            "avg": sum(numbers) / len(numbers) if numbers else None,
            "min": min(numbers, default=None),
            "max": max(numbers, default=None),
            "count": float(len(numbers)),
            "last": None if isinstance(newest, str) else float(newest),
        }[agg]
        answer.append((label, _render(kind, agg, number)))
    return answer


def _typed(points: list[tuple[int, WireValue]], agg: Aggregate, noisy: bool) -> list[Any]:
    """Points with the type of each value (True and 1 must not compare equal); a noisy
    average only to its last bits (another summation order)."""
    return [
        (ts, type(v).__name__, pytest.approx(v, rel=1e-12) if noisy and agg == "avg" else v)
        for ts, v in points
    ]


async def test_rollups_answer_every_aggregate_as_the_raw_samples_do(store: Store):
    rng = random.Random(20240607)
    await _fill_randomly(store, rng)
    queries = Queries(store.engine)
    keys = await queries.keys(store.device_id)
    assert {kind for _, kind in keys.values()} == {"number", "bool", "text"}
    ranges = [
        (T0, T0 + SPAN),  # edges inside minutes, on both sides
        (T0 - T0 % MINUTE, T0 + SPAN + MINUTE - (T0 + SPAN) % MINUTE),  # whole minutes
        (T0 + 7 * MINUTE + 1, T0 + 7 * MINUTE + 90_000),  # one whole minute, both edges cut
        (T0 + 5_000, T0 + 50_000),  # no whole minute: raw samples only
    ] + [tuple(sorted(rng.sample(range(T0 - MINUTE, T0 + SPAN + MINUTE), 2))) for _ in range(6)]
    checked = 0
    for key, (series_id, kind) in sorted(keys.items()):
        for start, end in ranges:
            for bucket in (MINUTE, 5 * MINUTE, 30 * MINUTE, 2 * 3_600_000):
                for agg in AGGREGATES:
                    asked = {
                        "series_id": series_id,
                        "kind": kind,
                        "start": start,
                        "end": end,
                        "bucket_ms": bucket,
                        "agg": agg,
                        "limit": 10_000,
                    }
                    rolled_up = await queries.history(**asked)
                    raw = await queries.history(**asked, from_samples=True)
                    expected = _expected(store.stored[key], kind, start, end, bucket, agg)
                    noisy = key == "noisy"
                    assert _typed(rolled_up, agg, noisy) == _typed(raw, agg, noisy), (key, agg)
                    assert _typed(rolled_up, agg, noisy) == _typed(expected, agg, noisy), (key, agg)
                    checked += len(rolled_up)
    assert checked > 10_000


async def test_rollups_equal_a_recount_of_the_stored_samples(store: Store):
    rng = random.Random(7)
    await _fill_randomly(store, rng)
    async with store.engine.connect() as conn:
        kept = {
            (r.series_id, r.minute): (r.count_num, r.min_num, r.max_num, r.last_ts, r.last_num)
            for r in await conn.execute(select(rollups))
        }
        sums = {(r.series_id, r.minute): r.sum_num for r in await conn.execute(select(rollups))}
        rows = (await conn.execute(select(samples).order_by(samples.c.ts))).all()
    recount: dict[tuple[int, int], list[Any]] = {}
    for row in rows:  # in ts order: the last row of a minute is its newest
        numbers = recount.setdefault((row.series_id, row.ts // MINUTE * MINUTE), [[], 0, None])
        if row.num is not None:
            numbers[0].append(row.num)
        numbers[1], numbers[2] = row.ts, row.num
    assert set(kept) == set(recount)
    for minute, (numbers, last_ts, last_num) in recount.items():
        low, high = min(numbers, default=None), max(numbers, default=None)
        assert kept[minute] == (len(numbers), low, high, last_ts, last_num), minute
        assert math.isclose(sums[minute], math.fsum(numbers), rel_tol=1e-12, abs_tol=1e-9)


async def test_a_value_sent_again_replaces_the_old_one_in_the_buckets(store: Store):
    minute = T0 - T0 % MINUTE + MINUTE
    await store.send([(minute + 1_000, {"t": 10}), (minute + 2_000, {"t": 20})])
    await store.send([(minute + 1_000, {"t": 40}), (minute + 3_000, {"t": 1})])  # 10 -> 40
    await store.send([(minute + 3_000, {"t": 2}), (minute + 3_000, {"t": 30})])  # twice: 30
    queries = Queries(store.engine)
    series_id, kind = (await queries.keys(store.device_id))["t"]
    answers = {}
    for agg in AGGREGATES:
        points = await queries.history(
            series_id=series_id,
            kind=kind,
            start=minute,
            end=minute + MINUTE,
            bucket_ms=MINUTE,
            agg=agg,
            limit=10,
        )
        answers[agg] = points
    assert answers == {
        "avg": [(minute, 30)],
        "min": [(minute, 20)],
        "max": [(minute, 40)],
        "last": [(minute, 30)],
        "count": [(minute, 3)],
    }


async def test_deleting_a_device_deletes_its_rollups(store: Store):
    await store.send([(T0, {"t": 1.0}), (T0 + MINUTE, {"t": 2.0, "door": True})])
    await DeviceRegistry(store.engine).create("rtu-2")
    other = Store(store.engine, store.writer, "rtu-2")
    await other.send([(T0, {"t": 5.0})])

    await DeviceRegistry(store.engine).delete("rtu-1")

    async with store.engine.connect() as conn:
        owners = (
            await conn.execute(
                select(series.c.device_id, func.count())
                .select_from(rollups.join(series, rollups.c.series_id == series.c.id))
                .group_by(series.c.device_id)
            )
        ).all()
        total = (await conn.execute(select(func.count()).select_from(rollups))).scalar_one()
    assert [tuple(row) for row in owners] == [("rtu-2", 1)]
    assert total == 1  # nothing left behind of the deleted device's series


async def test_all_keys_read_together_answer_as_each_key_alone(store: Store):
    """One statement for several series (the API's way), or a few on connections of their own
    (long ranges), gives each series what asking for it alone gives, each cut at its limit."""
    rng = random.Random(99)
    await _fill_randomly(store, rng)
    queries = Queries(store.engine)
    keys = await queries.keys(store.device_id)
    kinds = {series_id: kind for series_id, kind in keys.values()}
    noisy = keys["noisy"][0]
    start, end = T0 + 1_234, T0 + SPAN - 5_678  # edges inside minutes
    for bucket, split_after_ms in itertools.product(
        (None, 10_000, MINUTE, 30 * MINUTE), (queries.split_after_ms, 0)
    ):
        queries.split_after_ms = split_after_ms
        for agg in AGGREGATES:
            for from_samples in (False, True):
                for limit in (3, 10_000):
                    window = {"start": start, "end": end, "bucket_ms": bucket, "agg": agg}
                    together = await queries.histories(
                        kinds, **window, limit=limit, from_samples=from_samples
                    )
                    assert list(together) == list(kinds)
                    for series_id, kind in kinds.items():
                        alone = await queries.history(
                            series_id=series_id,
                            kind=kind,
                            **window,
                            limit=limit,
                            from_samples=from_samples,
                        )
                        # PostgreSQL may add a noisy average's values in another order.
                        approx = series_id == noisy
                        assert _typed(together[series_id], agg, approx) == _typed(
                            alone, agg, approx
                        ), (series_id, bucket, agg)
                        assert len(alone) == limit if limit == 3 else len(alone) > 3


async def test_device_history_reads_the_keys_asked_for_or_all(store: Store):
    minute = T0 - T0 % MINUTE + MINUTE
    await store.send([(minute + 1_000, {"t": 1.5, "door": True}), (minute + 2_000, {"t": 2})])
    queries = Queries(store.engine)
    window = {"start": minute, "end": minute + MINUTE, "bucket_ms": MINUTE, "limit": 10}

    every = await queries.device_history(store.device_id, None, agg="max", **window)
    assert every == {"door": [(minute, True)], "t": [(minute, 2)]}  # by name when not asked
    asked = await queries.device_history(store.device_id, ["t", "door"], agg="count", **window)
    assert list(asked.items()) == [("t", [(minute, 2)]), ("door", [(minute, 1)])]
    assert await queries.device_history(store.device_id, [], agg="avg", **window) == {}
    with pytest.raises(UnknownKeys, match="'rtu-1' has no key humidity, x"):
        await queries.device_history(store.device_id, ["t", "humidity", "x"], agg="avg", **window)
    with pytest.raises(UnknownKeys, match="'rtu-9' has no key t"):
        await queries.device_history("rtu-9", ["t"], agg="avg", **window)
