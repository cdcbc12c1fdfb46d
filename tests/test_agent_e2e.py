"""The agent, whole, against a real hub: a door opened on a (mock) pin becomes an event stored
by the hub, and a command from the hub switches the relay once, even when delivered twice."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from fieldhub.agent.config import AgentConfig, DeviceSection, HubSection, WebSection
from fieldhub.agent.service import Agent
from fieldhub.agent.units import DoorConfig, Drivers, SocketConfig, mock_pin_factory
from fieldhub.agent.units.simulate import SwitchPin
from fieldhub.clock import now_ms
from fieldhub.hub.app import Hub
from fieldhub.protocol import Channel, Command, encode, topic_for
from tests.conftest import HubFactory
from tests.waiting import eventually

DOOR_PIN, SOCKET_PIN = 27, 22


def _config(hub: Hub, device_id: str, username: str, data: Path) -> AgentConfig:
    return AgentConfig(
        device=DeviceSection(id=device_id),
        hub=HubSection(broker=hub.broker_url, username=username),
        data_folder=str(data),
        units=[
            DoorConfig(name="door", pin=DOOR_PIN, debounce_s=0.02),
            SocketConfig(name="socket", pin=SOCKET_PIN, initial="on", min_off_s=0),
        ],
        web=WebSection(enabled=False),
    )


@pytest.mark.parametrize(
    "broker", ["embedded", pytest.param("mosquitto", marks=pytest.mark.mosquitto)]
)
async def test_door_event_reaches_the_hub_and_a_command_runs_once(
    broker: str, make_hub: HubFactory, tmp_path: Path, uid: str
):
    async with make_hub(broker=broker) as hub:
        device_id = f"atm-{uid}"
        issued = (await hub.devices.create(device_id, labels={"site": "berlin"})).credentials
        config = _config(hub, device_id, issued.username, tmp_path / "agent")
        pins = mock_pin_factory(SwitchPin)  # keeps a driven level when the pull is set
        pins.pin(DOOR_PIN).drive_low()  # closed
        async with Agent(config, issued.secret, drivers=Drivers(pin_factory=pins)) as agent:
            record = await eventually(
                lambda: _reported(hub, device_id, "socket", "on"), "socket reported on"
            )
            assert record.reported["door"] == "closed"

            pins.pin(DOOR_PIN).drive_high()  # someone opens the door
            await eventually(lambda: _has_event(hub, device_id, "door.opened"), "door event")

            command = Command(
                id=f"cmd-{uid}",
                action="socket.set",
                args={"on": False},
                expires=now_ms() + 60_000,
                reply=hub.settings.instance,
            )
            for _ in range(2):  # delivered twice: runs once
                hub.bus.publish(topic_for(device_id, Channel.CMD), encode(command), qos=1)
            await eventually(lambda: _reported(hub, device_id, "socket", "off"), "socket off")
            assert pins.pin(SOCKET_PIN).state == 0
            await eventually(
                lambda: agent.commands and agent.commands.stats.received >= 2, "the second delivery"
            )
            assert agent.commands is not None
            assert agent.commands.stats.executed == 1
        await _forget(hub, device_id)


async def _forget(hub: Hub, device_id: str) -> None:
    """Delete the device, which clears its retained status on the broker: the test Mosquitto
    is shared, and other tests count messages from devices their hub does not know."""
    await hub.devices.delete(device_id)
    await asyncio.wait_for(hub.bus.flushed(), 5)


async def _reported(hub: Hub, device_id: str, key: str, value: str) -> Any:
    record = await hub.registry.get(device_id)
    return record if record.reported.get(key) == value else None


async def _has_event(hub: Hub, device_id: str, event_type: str) -> bool:
    page = await hub.queries.events(device_ids=[device_id], types=[event_type])
    return bool(page.events)


async def test_the_status_led_follows_the_connection(
    make_hub: HubFactory, tmp_path: Path, uid: str
):
    from fieldhub.agent.units import LedConfig
    from fieldhub.agent.units.led import Blink

    led_pin = 17
    async with make_hub() as hub:
        device_id = f"led-{uid}"
        issued = (await hub.devices.create(device_id)).credentials
        config = _config(hub, device_id, issued.username, tmp_path / "agent")
        config = AgentConfig(
            device=config.device,
            hub=config.hub,
            data_folder=config.data_folder,
            units=[LedConfig(name="status", pin=led_pin, patterns={"offline": Blink(0.05, 0.05)})],
            web=config.web,
        )
        pins = mock_pin_factory(SwitchPin)
        async with Agent(config, issued.secret, drivers=Drivers(pin_factory=pins)) as agent:
            await eventually(lambda: agent.health() == "ok", "connected")
            led = agent.units[0]
            await eventually(lambda: led.status()["mode"] == "ok", "the ok pattern")
            await hub.devices.revoke_credentials(device_id)  # the hub drops it for good
            await eventually(lambda: agent.health() == "offline", "offline")
            await eventually(lambda: led.status()["mode"] == "offline", "the offline pattern")
            states = set()
            for _ in range(40):  # blinking: both levels within two seconds
                states.add(pins.pin(led_pin).state)
                await asyncio.sleep(0.05)
            assert states == {0, 1}
        await _forget(hub, device_id)
