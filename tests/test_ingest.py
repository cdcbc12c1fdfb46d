"""Ingest end to end: a device publishes over real MQTT, the hub stores, acknowledges after the
commit, stores redeliveries once, and rejects bad input without losing anything else.

Every test here runs on each broker (embedded amqtt, Mosquitto) and database (SQLite,
PostgreSQL) through the ``any_hub`` fixture.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from fieldhub.clock import now_ms
from fieldhub.hub.app import Hub
from fieldhub.protocol import Channel, Event, Sample, State, Telemetry, topic_for
from tests.conftest import DeviceFactory, HubFactory, api_client


async def _stored_points(api: httpx.AsyncClient, device_id: str, key: str) -> list[list[object]]:
    window = {"keys": key, "start": 0, "end": now_ms() + 3_600_000}  # tests stamp ahead of now
    response = await api.get(f"/api/devices/{device_id}/telemetry", params=window)
    assert response.status_code == 200, response.text
    return response.json()["series"][key]


async def test_telemetry_is_stored_then_acknowledged(any_hub: Hub, connect_device: DeviceFactory):
    device = await connect_device(any_hub, "atm")
    start = now_ms() - 10_000
    for seq in range(1, 11):
        device.telemetry(seq, ts=start + seq, temperature=20.0 + seq, door_open=seq % 2 == 0)
    await device.wait_acked(10)

    async with api_client(any_hub) as api:
        points = await _stored_points(api, device.device_id, "temperature")
        assert [p[1] for p in points] == [20.0 + s for s in range(1, 11)]
        latest = (await api.get(f"/api/devices/{device.device_id}/latest")).json()
        assert latest["temperature"]["value"] == 30.0
        assert latest["door_open"]["value"] is True
        device_json = (await api.get(f"/api/devices/{device.device_id}")).json()
        assert device_json["acked_seq"] == 10
        assert device_json["presence"]["state"] == "online"


async def test_redelivered_messages_are_stored_once(any_hub: Hub, connect_device: DeviceFactory):
    device = await connect_device(any_hub, "term")
    ts = now_ms()
    for seq in (1, 2, 3):
        device.telemetry(seq, ts=ts + seq, voltage=12.0 + seq)
    await device.wait_acked(3)
    # The device did not see the acks (say) and sends everything again, plus one new message.
    acks_before = len(device.acks)
    for seq in (1, 2, 3, 4):
        device.telemetry(seq, ts=ts + seq, voltage=12.0 + seq)
    await device.wait_acked(4)
    await asyncio.sleep(0.1)

    async with api_client(any_hub) as api:
        points = await _stored_points(api, device.device_id, "voltage")
    assert [p[1] for p in points] == [13.0, 14.0, 15.0, 16.0]
    assert any_hub.stats.duplicates == 3
    assert len(device.acks) > acks_before  # duplicates are acknowledged again


async def test_ack_waits_for_a_gap_and_oldest_lets_it_go(
    any_hub: Hub, connect_device: DeviceFactory
):
    device = await connect_device(any_hub, "gap")
    ts = now_ms()
    # A device with an outbox says which seq it still holds (`oldest`); 2 is lost in transit.
    device.telemetry(1, ts=ts, oldest=1, t=1)
    device.telemetry(3, ts=ts + 3, oldest=1, t=3)
    await device.wait_acked(1)
    await asyncio.sleep(0.3)
    assert device.acked == 1  # 3 is stored, but 2 is missing: only 1 may be acknowledged
    device.telemetry(2, ts=ts + 2, oldest=2, t=2)  # the resend fills the gap
    await device.wait_acked(3)
    # The device dropped 4 from its outbox for good: `oldest` says so, the watermark moves on.
    device.telemetry(6, ts=ts + 6, oldest=5, t=6)
    device.telemetry(5, ts=ts + 5, oldest=5, t=5)
    await device.wait_acked(6)
    async with api_client(any_hub) as api:
        points = await _stored_points(api, device.device_id, "t")
    assert sorted(p[1] for p in points) == [1, 2, 3, 5, 6]


async def test_batched_samples_events_and_state(any_hub: Hub, connect_device: DeviceFactory):
    device = await connect_device(any_hub, "batch")
    ts = now_ms() - 60_000
    samples = [Sample(ts=ts + i * 1000, values={"temperature": 20 + i / 10}) for i in range(50)]
    device.publish(Channel.TELEMETRY, Telemetry(seq=1, samples=samples))
    device.publish(
        Channel.EVENT,
        Event(
            seq=2, ts=ts, type="door.opened", severity="warning", message="opened", data={"n": 1}
        ),
    )
    device.publish(Channel.STATE, State(seq=3, ts=ts, state={"socket": "on", "fw": "1.0"}))
    device.publish(Channel.STATE, State(seq=4, ts=ts + 1, state={"fw": None, "lock": "locked"}))
    await device.wait_acked(4)

    async with api_client(any_hub) as api:
        points = await _stored_points(api, device.device_id, "temperature")
        assert len(points) == 50
        events = (await api.get("/api/events", params={"device": device.device_id})).json()
        door = [e for e in events["events"] if e["type"] == "door.opened"]
        assert door
        assert door[0]["severity"] == "warning"
        assert door[0]["data"] == {"n": 1}
        state = (await api.get(f"/api/devices/{device.device_id}/state")).json()
        assert state["reported"] == {"socket": "on", "lock": "locked"}


async def test_one_value_per_instant_and_the_last_one_wins(
    any_hub: Hub, connect_device: DeviceFactory
):
    device = await connect_device(any_hub, "instant")
    ts = now_ms() - 60_000
    # Within one message, the same instant twice; other keys and instants beside it.
    twice = [
        Sample(ts=ts, values={"t": 1.0, "v": 12.0}),
        Sample(ts=ts, values={"t": 2.0}),
        Sample(ts=ts + 1, values={"t": 3.0}),
    ]
    device.publish(Channel.TELEMETRY, Telemetry(seq=1, samples=twice))
    device.telemetry(2, ts=ts + 1, t=4.0)  # a later message for an instant of the same batch
    await device.wait_acked(2)
    # A later batch, after the first is committed: an instant already stored, and a new one.
    device.publish(
        Channel.TELEMETRY,
        Telemetry(
            seq=3, samples=[Sample(ts=ts, values={"t": 5.0}), Sample(ts=ts + 2, values={"t": 6.0})]
        ),
    )
    await device.wait_acked(3)

    async with api_client(any_hub) as api:
        points = await _stored_points(api, device.device_id, "t")
        assert points == [[ts, 5.0], [ts + 1, 4.0], [ts + 2, 6.0]]
        assert await _stored_points(api, device.device_id, "v") == [[ts, 12.0]]
        latest = (await api.get(f"/api/devices/{device.device_id}/latest")).json()
        assert latest["t"]["value"] == 6.0


async def test_bad_input_is_rejected_counted_and_harmless(
    any_hub: Hub, connect_device: DeviceFactory, uid: str
):
    device = await connect_device(any_hub, "bad")
    ts = now_ms()
    device.telemetry(1, ts=ts, t=1)
    bad_payloads = [
        b"{not json",
        b'{"seq": "one", "ts": 1, "values": {"t": 1}}',  # wrong type
        b'{"seq": 2, "ts": 1, "values": {"t": [1, 2]}}',  # value of a wrong kind
        b'{"seq": 2, "ts": 1}',  # no values
        b"\xff\xfe\x00garbage",
        b"x" * 300_000,  # oversized
    ]
    for payload in bad_payloads:
        device.publish_raw(Channel.TELEMETRY, payload)
    device.publish_raw(Channel.EVENT, b'{"seq": 2, "ts": 1, "type": "Has Spaces"}')
    # A device that is not registered cannot even connect, and the broker drops what a device
    # publishes outside its own subtree. Ingest refuses both on its own as well (as from a
    # broker that let them through), and counts them.
    with pytest.raises(ConnectionRefusedError):
        await connect_device(any_hub, "stranger", register=False)
    stranger = f"stranger-{uid}"
    sample = b'{"seq":1,"ts":1,"values":{"t":1}}'
    device.publish_raw(f"fh/v1/bad$id-{uid}/telemetry", sample)
    any_hub.inbound.submit(topic_for(stranger, Channel.TELEMETRY), sample)
    any_hub.inbound.submit(f"fh/v1/bad$id-{uid}/telemetry", sample)
    # ... and the hub still stores good data after all that.
    device.telemetry(2, ts=ts + 2, t=2)
    await device.wait_acked(2)
    await device.wait_rejects(1)

    rejected = any_hub.stats.rejected
    assert rejected["invalid_payload"] == len(bad_payloads) + 1
    assert rejected["unknown_device"] == 1
    assert rejected["bad_topic"] == 1
    assert "invalid" in device.rejects[0].error or "JSON" in device.rejects[0].error
    async with api_client(any_hub) as api:
        assert [p[1] for p in await _stored_points(api, device.device_id, "t")] == [1, 2]
        metrics = (await api.get("/metrics")).text
        expected = len(bad_payloads) + 1
        assert f'rejected_total{{reason="invalid_payload"}} {expected}.0' in metrics
        assert (await api.get(f"/api/devices/{stranger}")).status_code == 404


@pytest.mark.mosquitto
async def test_hub_restart_mid_stream_loses_nothing_and_stores_nothing_twice(
    make_hub: HubFactory, connect_device: DeviceFactory, tmp_path
):
    """The broker keeps QoS 1 messages for the hub's persistent session while it restarts; the
    sequence watermark comes back from the database, so redeliveries are recognised."""
    data = tmp_path / "restart"
    async with make_hub(broker="mosquitto", data=data) as hub:
        device = await connect_device(hub, "steady")
        ts = now_ms()
        for seq in range(1, 501):
            device.telemetry(seq, ts=ts + seq, oldest=1, n=seq)
        await device.wait_acked(100)
    # The hub is gone; the device goes on publishing into the broker.
    for seq in range(501, 1001):
        device.telemetry(seq, ts=ts + seq, oldest=1, n=seq)
    await asyncio.sleep(0.5)
    # ... and resends what it holds unacknowledged, as an agent's outbox does after a timeout.
    for seq in range(device.acked + 1, 1001):
        device.telemetry(seq, ts=ts + seq, oldest=device.acked + 1, n=seq)
    async with make_hub(broker="mosquitto", data=data) as hub:
        await device.wait_acked(1000, within_s=20)
        async with api_client(hub) as api:
            points = await _stored_points(api, device.device_id, "n")
        assert [p[1] for p in points] == list(range(1, 1001))
        assert hub.stats.duplicates > 0  # broker redeliveries and resends overlapped
