"""Alarms end to end: a real broker, real devices, the hub's store; rules raise and clear
alarms from committed data, once per (device, rule), and a restart changes nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from fieldhub.clock import now_ms
from fieldhub.hub.alarms import AlarmChange
from fieldhub.hub.app import Hub
from fieldhub.hub.store.alarms import AlarmFilter, AlarmRecord, insert_alarm
from fieldhub.hub.store.database import migrate
from fieldhub.hub.store.schema import alarm_rule_state, alarms
from fieldhub.protocol import Channel, Event, State, Status
from tests.conftest import DeviceFactory, HubFactory
from tests.waiting import eventually

HOT = {
    "id": "hot",
    "name": "Too hot",
    "severity": "major",
    "condition": {
        "kind": "threshold",
        "key": "temp",
        "direction": "above",
        "raise": 50,
        "clear": 45,
    },
}


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
async def hub(request: pytest.FixtureRequest, make_hub: HubFactory) -> AsyncIterator[Hub]:
    """A hub on the embedded broker, on each database (the index is a fact of both)."""
    async with make_hub(db=request.param) as running:
        yield running


async def put_rule(hub: Hub, raw: dict[str, Any]) -> None:
    await hub.alarms.put_rule(raw, actor="test", create=True)


async def alarms_of(hub: Hub, rule: str, device: str | None = None) -> list[AlarmRecord]:
    return await hub.alarms.find(AlarmFilter(rule=rule, device=device))


def recorder(hub: Hub) -> list[AlarmChange]:
    """Changes as the hook sees them, inside the write transaction (it reads the alarm)."""
    seen: list[AlarmChange] = []

    def hook(conn: Connection, changes: list[AlarmChange]) -> None:
        for change in changes:
            state = conn.execute(select(alarms.c.state).where(alarms.c.id == change.alarm_id))
            assert state.scalar() == change.state  # the change is visible in its transaction
        seen.extend(changes)

    hub.alarms.engine.on_change(hook)
    return seen


async def test_threshold_with_hysteresis_raises_once_and_clears_once(
    hub: Hub, connect_device: DeviceFactory
):
    await put_rule(hub, HOT)
    seen = recorder(hub)
    device = await connect_device(hub, "cab", site="berlin")
    for seq, value in enumerate([40, 51, 48, 52, 49, 50.5, 46], start=1):
        device.telemetry(seq, temp=value)
    await device.wait_acked(7)
    [alarm] = await eventually(lambda: alarms_of(hub, "hot"), "the alarm")
    await asyncio.sleep(0.3)
    assert [a.id for a in await alarms_of(hub, "hot")] == [alarm.id]  # the band re-raises none
    assert alarm.state == "active"
    assert alarm.condition_active
    assert alarm.value == 51
    assert alarm.message == "temp = 51 ≥ 50"
    assert seen[0].device_labels == {"site": "berlin"}
    assert seen[0].rule_name == "Too hot"

    await hub.alarms.acknowledge(alarm.id, actor="user:ann", comment="on my way")
    device.telemetry(8, temp=44)  # below clear: gone, and acknowledged, so cleared
    await device.wait_acked(8)

    async def cleared() -> bool:
        return (await hub.alarms.alarm(alarm.id)).state == "cleared"

    await eventually(cleared, "the clear")
    assert [(c.kind, c.actor) for c in seen] == [
        ("raised", "hub"),
        ("acknowledged", "user:ann"),
        ("cleared", "hub"),
    ]
    history = [h.kind for h in await hub.alarms.history(alarm.id)]
    assert history == ["raised", "acknowledged", "cleared"]

    device.telemetry(9, temp=60)  # a new crossing: a new alarm, never the old one reused
    await device.wait_acked(9)
    both = await eventually(
        lambda: _at_least(alarms_of(hub, "hot"), 2), "a second alarm after the clear"
    )
    assert both[0].id != alarm.id
    assert both[0].state == "active"


async def _at_least(found: Any, count: int) -> Any:
    rows = await found
    return rows if len(rows) >= count else None


async def test_an_unacknowledged_alarm_latches_and_its_acknowledgement_clears_it(
    hub: Hub, connect_device: DeviceFactory
):
    await put_rule(hub, HOT)
    device = await connect_device(hub, "cab")
    device.telemetry(1, temp=55)
    device.telemetry(2, temp=40)
    await device.wait_acked(2)

    async def latched() -> list[AlarmRecord]:
        return [a for a in await alarms_of(hub, "hot") if not a.condition_active]

    [alarm] = await eventually(latched, "a latched alarm")
    assert alarm.state == "active"
    done = await hub.alarms.acknowledge(alarm.id, actor="user:ann")
    assert done.state == "cleared"
    assert done.acknowledged_by == "user:ann"


async def test_for_s_delays_the_raise(hub: Hub, connect_device: DeviceFactory):
    await put_rule(hub, {**HOT, "for_s": 1})
    device = await connect_device(hub, "cab")
    sent_at = now_ms()
    device.telemetry(1, temp=70)
    [alarm] = await eventually(lambda: alarms_of(hub, "hot"), "the alarm after for_s", 5)
    # Raised no sooner than for_s after the message was sent (a slow runner may make it later,
    # never earlier: a sleep-then-look-for-nothing test read the alarm already raised there).
    assert alarm.raised_at >= sent_at + 1000
    assert alarm.value == 70  # raised with the value that made it pending


async def test_a_condition_gone_before_for_s_raises_nothing(
    hub: Hub, connect_device: DeviceFactory
):
    await put_rule(hub, {**HOT, "for_s": 1})
    device = await connect_device(hub, "cab")
    device.telemetry(1, temp=70)
    device.telemetry(2, temp=30)
    await device.wait_acked(2)
    await asyncio.sleep(1.6)
    assert await alarms_of(hub, "hot") == []


async def test_a_flood_of_triggering_messages_makes_one_alarm(
    hub: Hub, connect_device: DeviceFactory
):
    await put_rule(hub, HOT)
    seen = recorder(hub)
    device = await connect_device(hub, "cab")
    for seq in range(1, 1001):
        device.telemetry(seq, temp=50 + seq % 7)
    await device.wait_acked(1000, within_s=30)
    await hub.alarms.engine.evaluate()
    assert len(await alarms_of(hub, "hot")) == 1
    assert [c.kind for c in seen] == ["raised"]


async def test_an_event_rule_raises_and_a_user_clears_it(hub: Hub, connect_device: DeviceFactory):
    await put_rule(
        hub, {"id": "door", "severity": "minor", "condition": {"kind": "event", "match": "door.*"}}
    )
    device = await connect_device(hub, "atm")
    device.publish(Channel.EVENT, Event(seq=1, ts=now_ms(), type="door.opened", message="open"))
    device.publish(Channel.EVENT, Event(seq=2, ts=now_ms(), type="socket.fault"))
    device.publish(Channel.EVENT, Event(seq=3, ts=now_ms(), type="door.forced"))
    await device.wait_acked(3)
    [alarm] = await eventually(lambda: alarms_of(hub, "door"), "the door alarm")
    assert alarm.message == "open"
    assert alarm.severity == "minor"
    cleared = await hub.alarms.clear(alarm.id, actor="user:bob", comment="closed it")
    assert (cleared.state, cleared.cleared_by) == ("cleared", "user:bob")
    device.publish(Channel.EVENT, Event(seq=4, ts=now_ms(), type="door.opened"))
    await device.wait_acked(4)
    await eventually(lambda: _at_least(alarms_of(hub, "door"), 2), "a new alarm")


async def test_an_event_alarm_clears_itself_after_auto_clear_s(
    hub: Hub, connect_device: DeviceFactory
):
    await put_rule(
        hub,
        {
            "id": "fault",
            "clearable_by_user": False,
            "auto_clear_s": 1,
            "condition": {"kind": "event", "match": "socket.fault"},
        },
    )
    device = await connect_device(hub, "atm")
    device.publish(Channel.EVENT, Event(seq=1, ts=now_ms(), type="socket.fault"))
    await device.wait_acked(1)
    [alarm] = await eventually(lambda: alarms_of(hub, "fault"), "the fault alarm")

    async def cleared() -> bool:
        return (await hub.alarms.alarm(alarm.id)).state == "cleared"

    await eventually(cleared, "the automatic clear", 5)


async def test_presence_offline_raises_and_online_clears_an_acknowledged_alarm(
    hub: Hub, connect_device: DeviceFactory
):
    await put_rule(
        hub,
        {
            "id": "gone",
            "severity": "critical",
            "condition": {"kind": "presence", "presence": "offline"},
        },
    )
    device = await connect_device(hub, "atm")
    device.online()
    # What the broker publishes for a device that vanished (its last will), sent at once.
    device.publish(Channel.STATUS, Status(online=False, reason="power cut"), retain=True)
    [alarm] = await eventually(lambda: alarms_of(hub, "gone"), "the offline alarm")
    assert alarm.value == "offline"
    assert "power cut" in alarm.message
    await hub.alarms.acknowledge(alarm.id, actor="user:ann")
    device.online()

    async def cleared() -> bool:
        return (await hub.alarms.alarm(alarm.id)).state == "cleared"

    await eventually(cleared, "the clear when the device is back")


async def test_state_and_absence_rules(hub: Hub, connect_device: DeviceFactory):
    await put_rule(
        hub,
        {"id": "open-lock", "condition": {"kind": "state", "key": "lock", "equals": "unlocked"}},
    )
    await put_rule(
        hub, {"id": "quiet", "condition": {"kind": "absence", "key": "volts", "seconds": 1}}
    )
    device = await connect_device(hub, "atm")
    device.publish(Channel.STATE, State(seq=1, ts=now_ms(), state={"lock": "unlocked"}))
    await device.wait_acked(1)
    [lock] = await eventually(lambda: alarms_of(hub, "open-lock"), "the lock alarm")
    assert lock.value == "unlocked"
    [quiet] = await eventually(lambda: alarms_of(hub, "quiet", device.device_id), "absence", 5)
    assert quiet.message == "no volts for 1 s"


async def test_racing_raises_leave_one_open_alarm(empty_engine: AsyncEngine):
    await migrate(empty_engine)
    row = {
        "rule_id": "hot",
        "device_id": "d",
        "severity": "major",
        "state": "active",
        "condition_active": True,
        "raised_at": 1,
        "message": "",
        "updated_at": 1,
    }

    async def attempt() -> int | None:
        async with empty_engine.begin() as conn:
            return await conn.run_sync(lambda c: insert_alarm(c, row))

    first, second = await asyncio.gather(attempt(), attempt())
    assert sorted([first is None, second is None]) == [False, True]
    with pytest.raises(IntegrityError):  # the index itself, not our care, says no
        async with empty_engine.begin() as conn:
            await conn.execute(insert(alarms).values(row))
    async with empty_engine.begin() as conn:  # once cleared, a new one may open
        await conn.execute(alarms.update().values(state="cleared"))
        assert await conn.run_sync(lambda c: insert_alarm(c, row)) is not None


async def test_two_engines_on_one_store_raise_one_alarm(
    make_hub: HubFactory, tmp_path: Path, connect_device: DeviceFactory
):
    from fieldhub.hub.alarms import AlarmEngine
    from fieldhub.hub.store.alarms import AlarmStore

    async with make_hub() as hub:
        await put_rule(hub, HOT)
        twin = AlarmEngine(AlarmStore(hub.engine), hub.alarms._writes, hub.directory)
        await twin.load()
        hub.ingest.on_commit(twin.committed)
        device = await connect_device(hub, "cab")
        device.telemetry(1, temp=90)
        await device.wait_acked(1)
        await asyncio.gather(hub.alarms.engine.evaluate(), twin.evaluate())
        [alarm] = await alarms_of(hub, "hot")
        pairs = [e.pairs[(device.device_id, "hot")].alarm for e in (hub.alarms.engine, twin)]
        assert [p.id if p else None for p in pairs] == [alarm.id, alarm.id]


async def test_a_restart_keeps_open_alarms_and_pending_timers(
    make_hub: HubFactory, tmp_path: Path, connect_device: DeviceFactory
):
    data = tmp_path / "kept"
    async with make_hub(data=data) as hub:
        await put_rule(hub, HOT)
        await put_rule(hub, {**HOT, "id": "slow", "for_s": 3600})
        device = await connect_device(hub, "cab")
        device.telemetry(1, temp=90)
        await device.wait_acked(1)
        [alarm] = await eventually(lambda: alarms_of(hub, "hot"), "the alarm")
        async with hub.engine.connect() as conn:
            pending = (await conn.execute(select(alarm_rule_state))).all()
        assert [(p.rule_id, p.pending_since is not None) for p in pending] == [("slow", True)]
    device.close()
    async with make_hub(data=data) as again:
        engine = again.alarms.engine
        pair = engine.pairs[(device.device_id, "hot")]
        assert pair.alarm is not None
        assert pair.alarm.id == alarm.id
        slow = engine.pairs[(device.device_id, "slow")]
        assert slow.pending_since == pending[0].pending_since
        assert slow.pending_value == (90, "temp = 90 ≥ 50")  # raised with it, when due
        device = await connect_device(again, "cab", register=False)
        device.telemetry(2, temp=95)
        await device.wait_acked(2)
        await engine.evaluate()
        assert [a.id for a in await alarms_of(again, "hot")] == [alarm.id]


async def test_a_failing_hook_undoes_its_change_and_the_next_sighting_raises_it(
    hub: Hub, connect_device: DeviceFactory
):
    await put_rule(hub, HOT)
    failures = [RuntimeError("outbox full")]

    def hook(conn: Connection, changes: list[AlarmChange]) -> None:
        if failures:
            raise failures.pop()

    hub.alarms.engine.on_change(hook)
    device = await connect_device(hub, "cab")
    device.telemetry(1, temp=90)
    await device.wait_acked(1)
    await eventually(lambda: hub.alarms.engine.stats.write_errors, "the failed write")
    assert await alarms_of(hub, "hot") == []  # the hook's transaction took the alarm with it
    device.telemetry(2, temp=91)
    await device.wait_acked(2)
    await eventually(lambda: alarms_of(hub, "hot"), "the alarm on the next sighting")


async def test_keep_firing_for_s_rides_out_a_short_dip(hub: Hub, connect_device: DeviceFactory):
    # 3 s: on a loaded machine the dip (value 2 to value 3) itself can last over a second.
    await put_rule(hub, {**HOT, "keep_firing_for_s": 3})
    seen = recorder(hub)
    device = await connect_device(hub, "cab")
    device.telemetry(1, temp=60)
    device.telemetry(2, temp=40)  # gone, but back within keep_firing_for_s
    await device.wait_acked(2)
    await hub.alarms.engine.evaluate()
    device.telemetry(3, temp=60)
    await device.wait_acked(3)
    await asyncio.sleep(3.5)
    [alarm] = await alarms_of(hub, "hot")
    assert alarm.condition_active
    assert [c.kind for c in seen] == ["raised"]
    assert [h.kind for h in await hub.alarms.history(alarm.id)] == ["raised"]
    device.telemetry(4, temp=40)  # gone for good: latched after the second
    await device.wait_acked(4)

    async def latched() -> bool:
        return not (await hub.alarms.alarm(alarm.id)).condition_active

    await eventually(latched, "the latch after keep_firing_for_s", 10)


async def test_a_deleted_device_takes_its_open_alarms_with_it(
    hub: Hub, connect_device: DeviceFactory
):
    await put_rule(hub, HOT)
    device = await connect_device(hub, "cab")
    device.telemetry(1, temp=60)
    await device.wait_acked(1)
    [alarm] = await eventually(lambda: alarms_of(hub, "hot"), "the alarm")
    device.close()
    await hub.devices.delete(device.device_id, actor="test")

    async def cleared() -> AlarmRecord | None:
        record = await hub.alarms.alarm(alarm.id)
        return record if record.state == "cleared" else None

    gone = await eventually(cleared, "the clear")
    assert gone.clear_reason == "device deleted"
    assert not [k for k in hub.alarms.engine.pairs if k[0] == device.device_id]


async def test_the_engine_stops_when_cancelled_just_as_it_wakes(hub: Hub):
    """The hub's stop takes the engine's lock, then cancels its task and waits for it. A
    cancellation that lands as a committed batch wakes the task must end it, not be lost
    (asyncio.wait_for in 3.11 drops it when the awaited future is done at that moment; the
    task then waited for the lock its canceller held: the demo hung on Ctrl-C)."""
    engine = hub.alarms.engine
    for spins in range(6):
        task = asyncio.create_task(engine.run())
        await asyncio.sleep(0.05)
        async with engine.lock:
            engine._wake.set()
            for _ in range(spins):
                await asyncio.sleep(0)
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=2)
        assert done, f"the engine ignored a cancellation after {spins} spins"
