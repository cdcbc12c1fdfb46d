"""N-of-M counts: a threshold raised by n of the last m values and cleared by n safe ones, an
event rule raised by n events within a window, the windows kept over a restart, and every bad
count refused naming its field."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select

from fieldhub.clock import now_ms
from fieldhub.hub.alarms import AlarmEngine
from fieldhub.hub.alarms.counting import CountWindows, EventCount
from fieldhub.hub.alarms.rules import ThresholdCondition, parse_rule
from fieldhub.hub.app import Hub
from fieldhub.hub.errors import Invalid
from fieldhub.hub.ingest.batch import Batch
from fieldhub.hub.store.alarms import AlarmFilter, AlarmRecord, AlarmStore
from fieldhub.hub.store.schema import alarm_count_windows
from fieldhub.protocol import Channel, Event, Telemetry
from tests.conftest import DeviceFactory, HubFactory, api_client
from tests.waiting import eventually

HOT = {"kind": "threshold", "key": "temp", "direction": "above", "raise": 50, "clear": 45}
HOT_3_OF_5: dict[str, Any] = {"id": "hot", "condition": {**HOT, "count": {"n": 3, "of": 5}}}
PIN = {
    "id": "pin",
    "severity": "critical",
    "condition": {"kind": "event", "match": "pin.failed", "count": {"n": 3, "within_s": 300}},
    "auto_clear_s": 3600,
}


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
async def hub(request: pytest.FixtureRequest, make_hub: HubFactory) -> AsyncIterator[Hub]:
    async with make_hub(db=request.param) as running:
        yield running


async def alarms_of(hub: Hub, rule: str) -> list[AlarmRecord]:
    return await hub.alarms.find(AlarmFilter(rule=rule))


async def test_three_of_five_values_raise_and_three_safe_ones_clear(
    hub: Hub, connect_device: DeviceFactory
):
    await hub.alarms.put_rule(HOT_3_OF_5, actor="test", create=True)
    device = await connect_device(hub, "cab")
    for seq, value in enumerate([40, 51, 52, 40], start=1):  # two of the last five: nothing
        device.telemetry(seq, temp=value)
    await device.wait_acked(4)
    await hub.alarms.engine.evaluate()
    assert await alarms_of(hub, "hot") == []
    device.telemetry(5, temp=53)  # the third beyond 50 among the last five
    [alarm] = await eventually(lambda: alarms_of(hub, "hot"), "the alarm at the third value")
    assert alarm.value == 53
    assert alarm.message == "temp = 53 ≥ 50 (3 of the last 5)"
    await hub.alarms.acknowledge(alarm.id, actor="user:ann")

    device.telemetry(6, temp=48)  # between: counts for neither side
    device.telemetry(7, temp=44)  # safe: with the 40 still in the window, two safe ones
    await device.wait_acked(7)
    await hub.alarms.engine.evaluate()
    assert (await hub.alarms.alarm(alarm.id)).state == "acknowledged"
    device.telemetry(8, temp=43)  # the third safe one among the last five

    async def cleared() -> bool:
        return (await hub.alarms.alarm(alarm.id)).state == "cleared"

    await eventually(cleared, "the clear at the third safe value")


async def test_three_failed_pins_within_the_window_raise_one_alarm(
    hub: Hub, connect_device: DeviceFactory
):
    await hub.alarms.put_rule(PIN, actor="test", create=True)
    device = await connect_device(hub, "atm")
    for seq in (1, 2):
        device.publish(Channel.EVENT, Event(seq=seq, ts=now_ms(), type="pin.failed"))
    await device.wait_acked(2)
    await hub.alarms.engine.evaluate()
    assert await alarms_of(hub, "pin") == []
    for seq in (3, 4, 5):  # the third raises; the next ones fall on the open alarm
        device.publish(Channel.EVENT, Event(seq=seq, ts=now_ms(), type="pin.failed"))
    await device.wait_acked(5)
    [alarm] = await eventually(lambda: alarms_of(hub, "pin"), "the alarm at the third event")
    await hub.alarms.engine.evaluate()
    assert [a.id for a in await alarms_of(hub, "pin")] == [alarm.id]
    assert alarm.message == "event pin.failed (3 within 300 s)"
    assert alarm.severity == "critical"


def test_events_outside_the_window_do_not_count_and_a_raise_uses_its_events_up():
    windows = CountWindows()
    count = EventCount(n=3, within_s=60)
    key = ("atm", "pin")
    assert not windows.event(key, count, 0)
    assert not windows.event(key, count, 30_000)
    assert not windows.event(key, count, 61_000)  # the first is 61 s old: two in the window
    assert windows.event(key, count, 62_000)  # 30 s, 61 s, 62 s: three within 60 s
    assert not windows.event(key, count, 63_000)  # used up: counting starts over
    assert [row.window for row in windows.take_changed()] == [[63_000]]


async def test_count_windows_survive_a_restart(hub: Hub, connect_device: DeviceFactory):
    await hub.alarms.put_rule(HOT_3_OF_5, actor="test", create=True)
    device = await connect_device(hub, "cab")
    device.telemetry(1, temp=51)
    device.telemetry(2, temp=52)
    await device.wait_acked(2)
    await hub.alarms.engine.evaluate()
    async with hub.engine.connect() as conn:
        [stored] = (await conn.execute(select(alarm_count_windows))).all()
    assert (stored.device_id, stored.rule_id, stored.window) == (device.device_id, "hot", [1, 1])

    restarted = AlarmEngine(AlarmStore(hub.engine), hub.alarms._writes, hub.directory)
    await restarted.load()  # what a restarted hub does
    third = Telemetry(seq=3, ts=now_ms(), values={"temp": 53})
    restarted.committed(Batch(telemetry=[(device.device_id, third)]))
    await restarted.evaluate()
    [alarm] = await alarms_of(hub, "hot")
    assert alarm.value == 53  # two values before the restart, one after: three of five


async def test_a_changed_rule_starts_its_windows_over(hub: Hub, connect_device: DeviceFactory):
    await hub.alarms.put_rule(HOT_3_OF_5, actor="test", create=True)
    device = await connect_device(hub, "cab")
    device.telemetry(1, temp=51)
    device.telemetry(2, temp=52)
    await device.wait_acked(2)
    await hub.alarms.engine.evaluate()
    changed = {**HOT_3_OF_5, "condition": {**HOT, "raise": 51, "count": {"n": 3, "of": 5}}}
    await hub.alarms.put_rule(changed, actor="test", rule_id="hot", create=False)
    await hub.alarms.engine.evaluate()
    async with hub.engine.connect() as conn:
        assert (await conn.execute(select(alarm_count_windows))).all() == []
    device.telemetry(3, temp=53)
    await device.wait_acked(3)
    await hub.alarms.engine.evaluate()
    assert await alarms_of(hub, "hot") == []  # one value since the change, not three


@pytest.mark.parametrize(
    ("condition", "loc", "words"),
    [
        ({**HOT, "count": {"n": 6, "of": 5}}, ["condition", "count", "n"], "from 1 to 5"),
        ({**HOT, "count": {"n": 1, "of": 101}}, ["condition", "count", "of"], "from 1 to 100"),
        ({**HOT, "count": {"n": 0, "of": 5}}, ["condition", "count", "n"], "0"),
        ({**HOT, "count": {"n": 3}}, ["condition", "count", "of"], "None"),
        ({**HOT, "count": {"n": 3, "of": 5, "x": 1}}, ["condition", "count", "x"], "x"),
        ({**HOT, "count": {"n": 3, "within_s": 60}}, ["condition", "count", "within_s"], "n"),
        ({**HOT, "count": [3, 5]}, ["condition", "count"], "an object"),
        (
            {"kind": "event", "match": "pin.*", "count": {"n": 3, "within_s": 0}},
            ["condition", "count", "within_s"],
            "from 1 to 604800",
        ),
        (
            {"kind": "event", "match": "pin.*", "count": {"n": 101, "within_s": 60}},
            ["condition", "count", "n"],
            "from 1 to 100",
        ),
        (
            {"kind": "presence", "presence": "offline", "count": {"n": 2, "of": 3}},
            ["condition", "count"],
            "not a field of a presence condition",
        ),
        (
            {"kind": "state", "key": "door", "equals": "open", "count": {"n": 2, "of": 3}},
            ["condition", "count"],
            "not a field of a state condition",
        ),
    ],
)
def test_bad_counts_are_refused_naming_the_field(
    condition: dict[str, Any], loc: list[str], words: str
):
    with pytest.raises(Invalid) as refused:
        parse_rule({"id": "r", "condition": condition, "clearable_by_user": True})
    assert list(refused.value.loc) == loc
    assert words in str(refused.value)


async def test_a_bad_count_is_a_422_naming_the_field(hub: Hub):
    async with api_client(hub) as api:
        answer = await api.post(
            "/api/alarm-rules", json={"condition": {**HOT, "count": {"n": 6, "of": 5}}}
        )
    assert answer.status_code == 422, answer.text
    assert [e["loc"] for e in answer.json()["detail"]] == [["body", "condition", "count", "n"]]


def test_a_count_reads_back_as_it_was_written():
    rule = parse_rule(PIN)
    assert rule.to_dict()["condition"]["count"] == {"n": 3, "within_s": 300}
    assert parse_rule(rule.to_dict()) == rule
    plain = parse_rule({"id": "hot", "condition": HOT})
    assert "count" not in plain.to_dict()["condition"]  # rules stored before counts: the same


@pytest.mark.parametrize("direction", ["above", "below"])
def test_the_sides_a_count_marks_are_the_ones_hysteresis_uses(direction: str):
    band = {"raise": 50, "clear": 45} if direction == "above" else {"raise": 45, "clear": 50}
    condition = parse_rule({"id": "r", "condition": {**HOT, **band, "direction": direction}})
    threshold = condition.condition
    assert isinstance(threshold, ThresholdCondition)
    for tenth in range(400, 560):
        value = tenth / 10
        assert threshold.next_state(False, value) == threshold.beyond(value)
        assert threshold.next_state(True, value) == (not threshold.safe(value))
