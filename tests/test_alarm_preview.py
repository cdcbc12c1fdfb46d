"""Rule preview: on stored history it finds the alarms the live engine raised on the same data,
replays timers at their exact times, sees only the caller's sites, stays within its bounds and
says what it cannot preview; the CLI prints the same as a table."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from fieldhub.clock import now_ms
from fieldhub.hub.alarms import preview as preview_module
from fieldhub.hub.app import Hub
from fieldhub.hub.store.alarms import AlarmFilter, AlarmRecord
from fieldhub.protocol import Channel, Event, Status
from tests.conftest import DeviceFactory, HubFactory, api_client
from tests.device_client import TestDevice
from tests.waiting import eventually

HOT = {"kind": "threshold", "key": "temp", "direction": "above", "raise": 50, "clear": 45}
HOT_3_OF_5: dict[str, Any] = {"condition": {**HOT, "count": {"n": 3, "of": 5}}}
FIELDHUB = [sys.executable, "-m", "fieldhub"]
PIN: dict[str, Any] = {
    "condition": {"kind": "event", "match": "pin.*", "count": {"n": 3, "within_s": 300}},
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


class Stamps:
    """Strictly increasing device times near now: one stored sample per value (two in the
    same millisecond of one key would be one row, the later)."""

    def __init__(self) -> None:
        self.given: list[int] = [0]

    def __call__(self) -> int:
        self.given.append(max(now_ms(), self.given[-1] + 1))
        return self.given[-1]


async def send(device: TestDevice, stamps: Stamps, seq: int, *temps: float) -> int:
    for value in temps:
        device.telemetry(seq, ts=stamps(), temp=value)
        seq += 1
    await device.wait_acked(seq - 1)
    return seq


async def preview(hub: Hub, rule: dict[str, Any], hours: int = 1, **client: Any) -> Any:
    async with api_client(hub, **client) as api:
        answer = await api.post(f"/api/alarm-rules/preview?hours={hours}", json=rule)
    assert answer.status_code == 200, answer.text
    return answer.json()


async def live_alarms(hub: Hub, rule: str) -> list[AlarmRecord]:
    return sorted(await hub.alarms.find(AlarmFilter(rule=rule)), key=lambda a: a.id)


async def test_the_preview_finds_what_the_live_engine_raised(
    hub: Hub, connect_device: DeviceFactory
):
    await hub.alarms.put_rule({"id": "hot", **HOT_3_OF_5}, actor="test", create=True)
    await hub.alarms.put_rule({"id": "pin", **PIN}, actor="test", create=True)
    device = await connect_device(hub, "cab")
    stamps = Stamps()
    seq = await send(device, stamps, 1, 40, 51, 52, 40, 53)  # raises at 53
    [first] = await eventually(lambda: live_alarms(hub, "hot"), "the first alarm")
    await hub.alarms.acknowledge(first.id, actor="user:ann")
    seq = await send(device, stamps, seq, 48, 44, 43)  # clears at 43

    async def cleared() -> bool:
        return (await hub.alarms.alarm(first.id)).state == "cleared"

    await eventually(cleared, "the clear")
    seq = await send(device, stamps, seq, 55, 56, 57)  # raises again at 57, stays open
    for _ in range(3):
        device.publish(Channel.EVENT, Event(seq=seq, ts=stamps(), type="pin.failed"))
        seq += 1
    await device.wait_acked(seq - 1)
    await eventually(lambda: _count(live_alarms(hub, "hot"), 2), "the second alarm")
    await eventually(lambda: live_alarms(hub, "pin"), "the pin alarm")

    for rule_id, rule in (("hot", HOT_3_OF_5), ("pin", PIN)):
        live = await live_alarms(hub, rule_id)
        answer = await preview(hub, {"id": f"{rule_id}-draft", **rule})
        assert answer["cut"] is None
        found = answer["alarms"]
        assert [(a["device_id"], a["value"], a["message"]) for a in found] == [
            (a.device_id, a.value, a.message) for a in live
        ]
        assert [a["cleared_at"] is None for a in found] == [a.cleared_at is None for a in live]
        for previewed, raised in zip(found, live, strict=True):
            # the preview's clock is the device's, the live engine's the hub's: near, not equal
            assert abs(previewed["raised_at"] - raised.raised_at) < 10_000
        assert answer["raised"] == len(live)
    assert {s.rule.id for s in await hub.alarms.rules()} == {"hot", "pin"}  # nothing stored


async def _count(found: Any, count: int) -> Any:
    rows = await found
    return rows if len(rows) >= count else None


async def test_timers_are_replayed_at_their_times(hub: Hub, connect_device: DeviceFactory):
    device = await connect_device(hub, "cab")
    start = now_ms() - 600_000  # ten minutes ago, sent late (as an outbox does)
    for seq, (offset_s, value) in enumerate([(0, 51), (10, 52), (20, 40), (40, 60)], start=1):
        device.telemetry(seq, ts=start + offset_s * 1000, temp=value)
    await device.wait_acked(4)
    answer = await preview(hub, {"condition": HOT, "for_s": 15, "keep_firing_for_s": 5})
    assert [(a["raised_at"], a["cleared_at"], a["value"]) for a in answer["alarms"]] == [
        (start + 15_000, start + 25_000, 51),  # held 15 s; gone at 20 s, for good 5 s later
        (start + 55_000, None, 60),  # nothing since 60 at 40 s: it still holds 15 s later
    ]
    assert answer["open"] == 1
    assert answer["rows"] == 4


async def test_absence_is_looked_at_every_minute_of_history(
    hub: Hub, connect_device: DeviceFactory
):
    device = await connect_device(hub, "cab")
    start = now_ms() - 600_000
    device.telemetry(1, ts=start, temp=20)
    device.telemetry(2, ts=start + 300_000, temp=21)
    await device.wait_acked(2)
    answer = await preview(hub, {"condition": {"kind": "absence", "key": "temp", "seconds": 120}})
    since = answer["since"]
    assert [(a["raised_at"], a["cleared_at"]) for a in answer["alarms"]] == [
        (since + 120_000, start),  # counted from the span's start, as live from the hub's
        (start + 120_000, start + 300_000),
        (start + 420_000, None),  # nothing since: still open
    ]


async def test_the_preview_sees_only_the_callers_sites(hub: Hub, connect_device: DeviceFactory):
    berlin = await connect_device(hub, "cab-b", site="berlin")
    paris = await connect_device(hub, "cab-p", site="paris")
    for device in (berlin, paris):
        await send(device, Stamps(), 1, 51, 52, 53)
    mine = await preview(hub, HOT_3_OF_5, role="operator", sites=["berlin"])
    assert [a["device_id"] for a in mine["alarms"]] == [berlin.device_id]
    assert mine["devices"] == 1
    everyone = await preview(hub, HOT_3_OF_5)
    assert sorted(a["device_id"] for a in everyone["alarms"]) == sorted(
        [berlin.device_id, paris.device_id]
    )


async def test_the_preview_is_bounded_and_says_where_it_stopped(
    hub: Hub, connect_device: DeviceFactory, monkeypatch: pytest.MonkeyPatch
):
    device = await connect_device(hub, "cab")
    stamps = Stamps()
    await send(device, stamps, 1, 51, 52, 53)
    all_rows = preview_module.MAX_ROWS
    monkeypatch.setattr(preview_module, "MAX_ROWS", 2)
    answer = await preview(hub, HOT_3_OF_5)
    assert answer["cut"] == "more than 2 rows"
    assert (answer["rows"], answer["alarms"]) == (2, [])  # the third value was not read
    assert answer["until"] == stamps.given[2] + 1  # the span ends after the second value
    monkeypatch.setattr(preview_module, "MAX_ROWS", all_rows)
    monkeypatch.setattr(preview_module, "MAX_WORK_S", 0)
    late = await preview(hub, HOT_3_OF_5)
    assert late["cut"] == "longer than 0 s of work"
    assert late["alarms"] == []
    async with api_client(hub) as api:
        too_long = await api.post("/api/alarm-rules/preview?hours=169", json=HOT_3_OF_5)
        bad_rule = await api.post(
            "/api/alarm-rules/preview", json={"condition": {**HOT, "count": {"n": 9, "of": 5}}}
        )
    assert too_long.status_code == 422
    assert [e["loc"] for e in too_long.json()["detail"]] == [["query", "hours"]]
    assert bad_rule.status_code == 422
    assert [e["loc"] for e in bad_rule.json()["detail"]] == [["body", "condition", "count", "n"]]


async def test_presence_is_previewed_from_its_events_and_state_is_not(
    hub: Hub, connect_device: DeviceFactory
):
    device = await connect_device(hub, "atm")
    device.online()
    device.publish(Channel.STATUS, Status(online=False, reason="power cut"), retain=True)
    offline = {"condition": {"kind": "presence", "presence": "offline"}}

    async def previewed() -> Any:
        answer = await preview(hub, offline)
        return answer if answer["alarms"] else None

    answer = await eventually(previewed, "the offline alarm in the preview")
    [alarm] = answer["alarms"]
    assert (alarm["device_id"], alarm["value"]) == (device.device_id, "offline")
    assert "power cut" in alarm["message"]
    assert any("presence" in note for note in answer["notes"])
    state = await preview(hub, {"condition": {"kind": "state", "key": "door", "equals": "open"}})
    assert state["alarms"] == []
    assert any("no history" in note for note in state["notes"])


async def test_the_cli_prints_the_preview_as_a_table(
    make_hub: HubFactory, connect_device: DeviceFactory, tmp_path: Path
):
    data = tmp_path / "data"
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "rules:\n  - id: hot\n    condition: {kind: threshold, key: temp, direction: above,"
        " raise: 50, clear: 45, count: {n: 3, of: 5}}\n"
    )
    async with make_hub(data=data) as hub:
        device = await connect_device(hub, "cab")
        await send(device, Stamps(), 1, 51, 52, 53)
        shown = await asyncio.to_thread(
            subprocess.run,
            [*FIELDHUB, "rules", "preview", str(rules), "--hours", "2", "--data", str(data)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "COLUMNS": "200"},
        )
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout + shown.stderr
    assert "rule hot" in out
    assert device.device_id in out
    assert "temp = 53 ≥ 50 (3 of the last 5)" in out
    assert "1 raised, 1 open; 1 devices, 3 stored rows" in out
    refused = await asyncio.to_thread(
        subprocess.run,
        [*FIELDHUB, "rules", "preview", str(rules), "--hours", "999"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode != 0
    assert "--hours" in refused.stderr
    nowhere = await asyncio.to_thread(
        subprocess.run,
        [*FIELDHUB, "rules", "preview", str(rules), "--data", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert nowhere.returncode == 1
    assert "no hub data here" in nowhere.stderr
