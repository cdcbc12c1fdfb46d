"""Presence: online from a retained status or data, offline from a last will, stale after
silence, each change with its time and reason, on both brokers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from fieldhub.hub.app import Hub
from tests.conftest import DeviceFactory, HubFactory, api_client


@pytest.fixture(
    params=[
        pytest.param("embedded", id="amqtt"),
        pytest.param("mosquitto", id="mosquitto", marks=pytest.mark.mosquitto),
    ]
)
def broker(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def presence_hub(broker: str, make_hub: HubFactory) -> AsyncIterator[Hub]:
    async with make_hub(broker=broker) as hub:
        yield hub


@pytest.fixture
async def impatient_hub(broker: str, make_hub: HubFactory) -> AsyncIterator[Hub]:
    """A hub that calls a device stale after one silent second."""
    async with make_hub(broker=broker, stale_after_s=1.0) as hub:
        yield hub


async def _presence_of(api: httpx.AsyncClient, device_id: str, state: str, within_s: float) -> dict:
    deadline = time.monotonic() + within_s
    while True:
        presence = (await api.get(f"/api/devices/{device_id}")).json()["presence"]
        if presence["state"] == state or time.monotonic() > deadline:
            return presence
        await asyncio.sleep(0.05)


async def test_status_last_will_and_silence(presence_hub: Hub, connect_device: DeviceFactory):
    device = await connect_device(presence_hub, "door")
    async with api_client(presence_hub) as api:
        before = (await api.get(f"/api/devices/{device.device_id}")).json()["presence"]
        assert before["state"] == "unknown"

        device.online()
        online = await _presence_of(api, device.device_id, "online", 5)
        assert online["state"] == "online"
        assert online["connected"] is True

        # The device loses power: no DISCONNECT, the broker fires its last will.
        device.vanish()
        offline = await _presence_of(api, device.device_id, "offline", 10)
        assert offline["state"] == "offline"
        assert offline["reason"] == "connection lost"
        assert offline["since"] >= online["since"]

        events = (await api.get("/api/events", params={"device": device.device_id})).json()
        assert [e["type"] for e in events["events"]] == ["presence.offline", "presence.online"]


async def test_silent_device_goes_stale_and_comes_back(
    impatient_hub: Hub, connect_device: DeviceFactory
):
    device = await connect_device(impatient_hub, "quiet")
    async with api_client(impatient_hub) as api:
        device.telemetry(1, t=1)
        await device.wait_acked(1)
        online = await _presence_of(api, device.device_id, "online", 5)
        assert online["reason"] == "data received"

        stale = await _presence_of(api, device.device_id, "stale", 5)
        assert stale["state"] == "stale"
        assert stale["reason"].startswith("no data for")

        device.telemetry(2, t=2)
        back = await _presence_of(api, device.device_id, "online", 5)
        assert back["reason"] == "data resumed"
        health = (await api.get("/api/health")).json()
        assert health["devices"]["online"] >= 1


async def test_presence_survives_a_hub_restart(
    make_hub: HubFactory, connect_device: DeviceFactory, tmp_path
):
    data = tmp_path / "hubdata"
    async with make_hub(data=data) as hub:
        device = await connect_device(hub, "keep")
        device.online()
        async with api_client(hub) as api:
            first = await _presence_of(api, device.device_id, "online", 5)
        device.close()
    async with make_hub(data=data) as hub, api_client(hub) as api:
        again = (await api.get(f"/api/devices/{device.device_id}")).json()["presence"]
    assert again["state"] == "online"
    assert again["since"] == first["since"]


async def test_a_deleted_device_leaves_no_status_behind(
    broker: str,
    make_hub: HubFactory,
    connect_device: DeviceFactory,
    tmp_path,
    caplog: pytest.LogCaptureFixture,
):
    # Without the hub clearing it, the broker would replay the deleted device's retained
    # status to every later hub start: a message from an unknown device each time.
    data = tmp_path / "hubdata"
    async with make_hub(broker=broker, data=data) as hub:
        device = await connect_device(hub, "gone")
        device.online()
        async with api_client(hub) as api:
            await _presence_of(api, device.device_id, "online", 5)
        device.close()
        await hub.delete_device(device.device_id)
        await asyncio.wait_for(hub.bus.flushed(), 5)
    caplog.clear()
    async with make_hub(broker=broker, data=data):
        await asyncio.sleep(0.5)  # retained messages arrive right after subscribing
    # (The shared test Mosquitto may replay other tests' devices; none may be this one.)
    assert device.device_id not in caplog.text
