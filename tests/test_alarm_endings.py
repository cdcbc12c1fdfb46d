"""What ends by time or by cause: a flapping alarm is marked and notified once when it
settles; a shelving that runs out is ended by the hub, or by a user before; a device that is
away raises no data alarm for its outage (also after a hub restart during it), and its clocks
start again when it is back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from fieldhub.clock import now_ms
from fieldhub.hub.app import Hub
from fieldhub.hub.store.alarms import AlarmFilter, AlarmRecord
from fieldhub.protocol import Channel, Status
from tests.conftest import DeviceFactory, HubFactory, api_client
from tests.support.receivers import WebhookReceiver, webhook_receiver
from tests.support.subscribe import hear_every_change
from tests.test_alarms_api import door_alarm
from tests.waiting import eventually

FLAPPY = {
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
    "flapping": {"changes": 3, "window_s": 6},  # wide enough for a loaded machine
}


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
async def hub(request: pytest.FixtureRequest, make_hub: HubFactory) -> AsyncIterator[Hub]:
    """A hub on the embedded broker, on each database, retrying notifications fast."""
    async with make_hub(db=request.param, notify_retry_s=0.2, notify_retry_max_s=1.0) as running:
        yield running


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with webhook_receiver() as running:
        yield running


async def latest(hub: Hub, device_id: str) -> AlarmRecord | None:
    found = await hub.alarms.find(AlarmFilter(device=device_id, limit=1))
    return found[0] if found else None


async def test_a_flapping_alarm_is_marked_held_and_notified_once_when_it_settles(
    hub: Hub, connect_device: DeviceFactory, receiver: WebhookReceiver
):
    channel = await hub.notifications.create_channel(
        "ops", "webhook", {"url": receiver.url("/ops")}, actor="test"
    )
    await hear_every_change(hub, channel.id)
    await hub.alarms.put_rule(FLAPPY, actor="test", create=True)
    device = await connect_device(hub, "cab")
    seq = 0

    async def send(temp: int) -> None:
        nonlocal seq
        seq += 1
        device.telemetry(seq, temp=temp)
        await device.wait_acked(seq)

    async def raised() -> AlarmRecord:
        async def open_one() -> AlarmRecord | None:
            alarm = await latest(hub, device.device_id)
            return alarm if alarm is not None and alarm.state == "active" else None

        return await eventually(open_one, "a raise")

    async def cleared(alarm_id: int) -> None:
        async def done() -> bool:
            return (await hub.alarms.alarm(alarm_id)).state == "cleared"

        await eventually(done, "a clear")

    # Raised, cleared, raised, cleared, raised: five changes, more than three in 6 s.
    for _cycle in range(2):
        await send(51)
        alarm = await raised()
        await hub.alarms.acknowledge(alarm.id, actor="user:ann")
        await send(40)
        await cleared(alarm.id)
    await send(51)
    last = await raised()
    async with api_client(hub) as api:
        shown = (await api.get(f"/api/alarms/{last.id}")).json()
    assert shown["flapping"] is True

    async def settled() -> list[Any]:
        got = receiver.to("/ops")
        return got if got and got[-1].headers["x-fieldhub-event"] == "alarm.settled" else []

    sent = await eventually(settled, "the settled notification", 30)
    events = [r.headers["x-fieldhub-event"] for r in sent]
    assert events == ["alarm.raised", "alarm.cleared", "alarm.raised", "alarm.settled"]
    assert sent[-1].json()["data"]["alarm"] == last.id
    assert sent[-1].json()["data"]["state"] == "active"  # what it is now: still raised
    async with api_client(hub) as api:
        shown = (await api.get(f"/api/alarms/{last.id}")).json()
    assert shown["flapping"] is False
    assert [h["kind"] for h in shown["history"]][-1] == "settled"


async def test_a_shelving_that_runs_out_is_ended_by_the_hub_audited(hub: Hub):
    _device, alarm_id = await door_alarm(hub, "berlin")
    await hub.alarms.shelve(alarm_id, until=now_ms() + 1500, actor="user:ann")

    async def back() -> bool:
        return (await hub.alarms.alarm(alarm_id)).shelved_until is None

    await eventually(back, "the hub ends the shelving")
    history = await hub.alarms.history(alarm_id)
    assert [(h.kind, h.actor) for h in history][-1] == ("unshelved", "hub")
    audited = (await hub.audit.query(target=f"alarm:{alarm_id}")).entries
    assert "alarm.unshelved" in [e.action for e in audited]


async def test_a_user_unshelves_an_alarm_before_its_time(hub: Hub):
    _device, alarm_id = await door_alarm(hub, "berlin")
    async with api_client(hub, "operator", sites=["berlin"]) as api:
        shelved = await api.post(
            f"/api/alarms/{alarm_id}/shelve", json={"until": now_ms() + 3_600_000}
        )
        assert shelved.json()["shelved_until"] is not None
        back = await api.post(f"/api/alarms/{alarm_id}/unshelve", json={"comment": "fixed"})
        assert back.status_code == 200, back.text
        assert back.json()["shelved_until"] is None
        again = await api.post(f"/api/alarms/{alarm_id}/unshelve", json={})
        assert again.status_code == 409
    async with api_client(hub, "operator", sites=["paris"]) as api:
        hidden = await api.post(f"/api/alarms/{alarm_id}/unshelve", json={})
        assert hidden.status_code == 404
    history = await hub.alarms.history(alarm_id)
    assert [h.kind for h in history][-2:] == ["shelved", "unshelved"]
    assert history[-1].comment == "fixed"


async def test_an_offline_device_raises_no_absence_alarm_and_its_clock_restarts_when_back(
    hub: Hub, connect_device: DeviceFactory
):
    quiet_s = 4
    await hub.alarms.put_rule(
        {"id": "quiet", "condition": {"kind": "absence", "key": "volts", "seconds": quiet_s}},
        actor="test",
        create=True,
    )
    away = await connect_device(hub, "away")
    away.online()
    away.publish(Channel.STATUS, Status(online=False, reason="power cut"), retain=True)
    witness = await connect_device(hub, "witness")
    witness.online()

    async def offline() -> bool:
        device = await hub.registry.get(away.device_id)
        return device.presence == "offline"

    await eventually(offline, "the device offline")
    # The witness, online and as quiet, gets its absence alarm; by then the other would have.
    await eventually(lambda: latest(hub, witness.device_id), "the witness's absence alarm", 15)
    assert await latest(hub, away.device_id) is None

    back_at = now_ms()
    away.online()
    alarm = await eventually(lambda: latest(hub, away.device_id), "the absence once back", 15)
    assert alarm.raised_at >= back_at + quiet_s * 1000 - 100  # counted from its return


async def test_an_outage_still_suppresses_after_a_hub_restart(
    make_hub: HubFactory, connect_device: DeviceFactory, tmp_path: Path
):
    data = tmp_path / "kept"
    async with make_hub(data=data) as hub:
        await hub.alarms.put_rule(
            {"id": "quiet", "condition": {"kind": "absence", "key": "volts", "seconds": 3}},
            actor="test",
            create=True,
        )
        away = await connect_device(hub, "away")
        away.online()
        away.publish(Channel.STATUS, Status(online=False, reason="power cut"), retain=True)
        await connect_device(hub, "witness")

        async def offline() -> bool:
            return (await hub.registry.get(away.device_id)).presence == "offline"

        await eventually(offline, "the device offline")

    async with make_hub(data=data) as hub:  # restarted during the outage
        witness = await connect_device(hub, "witness", register=False)
        witness.online()
        # As quiet as the witness, which gets its absence alarm; the device away gets none.
        await eventually(lambda: latest(hub, witness.device_id), "the witness's alarm", 15)
        assert await latest(hub, away.device_id) is None
        assert (await hub.registry.get(away.device_id)).presence == "offline"


async def test_a_flapping_pair_settles_after_a_restart(
    make_hub: HubFactory, connect_device: DeviceFactory, tmp_path: Path
):
    data = tmp_path / "kept"
    rule = {**FLAPPY, "flapping": {"changes": 2, "window_s": 4}}  # settles in the next hub
    async with make_hub(data=data) as hub:
        await hub.alarms.put_rule(rule, actor="test", create=True)
        device = await connect_device(hub, "cab")
        device.telemetry(1, temp=51)
        await device.wait_acked(1)
        first = await eventually(lambda: latest(hub, device.device_id), "the raise")
        await hub.alarms.acknowledge(first.id, actor="user:ann")
        device.telemetry(2, temp=40)
        device.telemetry(3, temp=51)  # raised, cleared, raised: three changes, more than two
        await device.wait_acked(3)

        async def second() -> AlarmRecord | None:
            alarm = await latest(hub, device.device_id)
            return alarm if alarm is not None and alarm.id != first.id else None

        alarm = await eventually(second, "the second raise")

        async def flapping() -> bool:
            return (await hub.alarms.alarm(alarm.id)).flapping

        await eventually(flapping, "the pair flapping")
    restarted_at = now_ms()
    async with make_hub(data=data) as again:  # the count and its time were in the database

        async def settled() -> Any:
            history = await again.alarms.history(alarm.id)
            return history[-1] if history[-1].kind == "settled" else None

        entry = await eventually(settled, "the settling, by the next hub")
        assert entry.at >= restarted_at
        assert not (await again.alarms.alarm(alarm.id)).flapping
