"""Each (device, seq) is stored once and the watermark is what all hubs together committed
(``hub/ingest/ledger.py``): two writers on one database stand for two hub processes.

Runs on SQLite and PostgreSQL; on PostgreSQL the two writers also commit at the same time, each
in its own transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from fieldhub.hub.ingest.batch import Batch
from fieldhub.hub.ingest.writer import IngestWriter
from fieldhub.hub.store.database import migrate
from fieldhub.hub.store.devices import DeviceRegistry
from fieldhub.hub.store.schema import devices, events, received, samples
from fieldhub.hub.store.writes import writes_for
from fieldhub.protocol import Event, Telemetry

T0 = 1_700_000_000_000
DEVICES = ("atm-1", "atm-2")


def _batch(*seqs: int, oldest: int = 1) -> Batch:
    """Odd seqs are telemetry, even seqs events, for every device of ``DEVICES``; the devices
    hold everything from ``oldest`` on (a gap below a seq is waited for)."""
    batch = Batch()
    for device_id in DEVICES:
        for seq in seqs:
            if seq % 2:
                message = Telemetry(seq=seq, oldest=oldest, ts=T0 + seq, values={"t": seq})
                batch.telemetry.append((device_id, message))
                batch.points += 1
            else:
                event = Event(seq=seq, oldest=oldest, ts=T0 + seq, type="door.open")
                batch.events.append((device_id, T0, event))
            batch.add_seq(device_id, seq, min(oldest, seq))
            batch.messages += 1
    return batch


@pytest.fixture
async def two_writers(empty_engine: AsyncEngine) -> AsyncIterator[tuple[IngestWriter, ...]]:
    await migrate(empty_engine)
    for device_id in DEVICES:
        await DeviceRegistry(empty_engine).create(device_id)
    writes = writes_for(empty_engine)
    try:
        yield IngestWriter(empty_engine, writes), IngestWriter(empty_engine, writes)
    finally:
        await writes.close()


async def _stored(engine: AsyncEngine) -> tuple[dict[str, int], int, int, int]:
    """Per device the watermark; the sample rows, event rows and ``received`` rows."""
    async with engine.connect() as conn:
        marks = dict((await conn.execute(select(devices.c.id, devices.c.acked_seq))).all())
        counts = [
            (await conn.execute(select(func.count()).select_from(table))).scalar_one()
            for table in (samples, events, received)
        ]
    return marks, counts[0], counts[1], counts[2]


async def test_seqs_split_between_hubs_are_stored_once_and_acked_together(
    two_writers: tuple[IngestWriter, IngestWriter], empty_engine: AsyncEngine
):
    hub_a, hub_b = two_writers
    stored, state = await hub_a.write(_batch(1, 3))
    assert stored.messages == 4
    assert {d: t.acked for d, t in state.items()} == dict.fromkeys(DEVICES, 1)  # 2 is missing
    assert await _stored(empty_engine) == (dict.fromkeys(DEVICES, 1), 4, 0, 2)  # 3 waits above

    # Hub B gets 2 (filling the gap) and a redelivered 3: it stores 2 only and acks 3.
    stored, state = await hub_b.write(_batch(2, 3))
    assert [(d, e.seq) for d, _, e in stored.events] == [("atm-1", 2), ("atm-2", 2)]
    assert stored.telemetry == []
    assert {d: t.acked for d, t in state.items()} == dict.fromkeys(DEVICES, 3)
    assert await _stored(empty_engine) == (dict.fromkeys(DEVICES, 3), 4, 2, 0)

    # A redelivery below the watermark (its received rows are gone) is still a duplicate.
    stored, _ = await hub_a.write(_batch(1, 2))
    assert stored.messages == 0
    assert await _stored(empty_engine) == (dict.fromkeys(DEVICES, 3), 4, 2, 0)


async def test_oldest_lets_the_watermark_pass_a_gap_whichever_hub_holds_the_rest(
    two_writers: tuple[IngestWriter, IngestWriter], empty_engine: AsyncEngine
):
    hub_a, hub_b = two_writers
    await hub_a.write(_batch(5, 6))
    _, state = await hub_b.write(_batch(7, oldest=5))  # the device gave up 1-4
    assert {d: t.acked for d, t in state.items()} == dict.fromkeys(DEVICES, 7)
    assert (await _stored(empty_engine))[3] == 0


@pytest.mark.postgres
@pytest.mark.parametrize("empty_engine", ["postgres"], indirect=True)
async def test_concurrent_commits_of_overlapping_batches_store_each_seq_once(
    two_writers: tuple[IngestWriter, IngestWriter], empty_engine: AsyncEngine
):
    hub_a, hub_b = two_writers
    # Both hubs get every odd seq (a redelivery after a broker hand-over); even seqs are split.
    for round_start in range(1, 41, 8):
        odd = [round_start + n for n in (0, 2, 4, 6)]
        even = [round_start + n for n in (1, 3, 5, 7)]
        results = await asyncio.gather(
            hub_a.write(_batch(*odd, *even[:2])), hub_b.write(_batch(*odd, *even[2:]))
        )
        assert sum(stored.messages for stored, _ in results) == 16  # 8 seqs x 2 devices
    assert await _stored(empty_engine) == (dict.fromkeys(DEVICES, 40), 40, 40, 0)


@pytest.mark.postgres
@pytest.mark.parametrize("empty_engine", ["postgres"], indirect=True)
async def test_concurrent_commits_of_disjoint_seqs_ack_what_both_stored(
    two_writers: tuple[IngestWriter, IngestWriter], empty_engine: AsyncEngine
):
    hub_a, hub_b = two_writers
    # Shared subscriptions split one device's seqs between hubs: odd to A, even to B, at once.
    for round_start in range(1, 41, 2):
        await asyncio.gather(hub_a.write(_batch(round_start)), hub_b.write(_batch(round_start + 1)))
        marks, *_ = await _stored(empty_engine)
        assert marks == dict.fromkeys(DEVICES, round_start + 1)
    assert (await _stored(empty_engine))[3] == 0
