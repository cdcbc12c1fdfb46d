"""Commands lost on the way are delivered again until the device takes them, and run once.

A broker that dies takes every message it held with it: commands the hub had handed to it for
a device, and the device's session. The device comes back without the hub noticing that it was
gone (a dead broker publishes no last will), so nothing "comes online" again. The device's link
stays cut here until the hub is back on the restarted broker, so that whatever the hub sends at
once is lost for sure, as it was for the commands of the issue that ended ``timed_out`` without
ever running.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from fieldhub.clock import now_ms
from fieldhub.hub.app import Hub
from fieldhub.hub.config import HubSettings
from fieldhub.hub.store.commands import CommandRecord
from fieldhub.protocol import Channel, Reply, encode, topic_for
from tests.conftest import DeviceFactory
from tests.fleet import LOCK_PIN, Fleet, eventually, slow
from tests.support.proxy import TcpProxy
from tests.support.servers import Mosquitto


@pytest.fixture
def broker(tmp_path: Path) -> Mosquitto:
    """A Mosquitto of this test's own: the test kills it."""
    server = Mosquitto(tmp_path / "broker")
    server.start()
    try:
        yield server  # type: ignore[misc]
    finally:
        server.stop()


def _settings(tmp_path: Path, broker: Mosquitto, uid: str) -> HubSettings:
    return HubSettings(
        data=tmp_path / "hub",
        broker=broker.url,
        instance=f"t{uid}",
        mqtt="127.0.0.1:0",
        http="127.0.0.1:0",
    )


def _kill(broker: Mosquitto) -> None:
    """SIGKILL: no goodbye to anyone, no last will published."""
    if broker.pid is not None:
        os.kill(broker.pid, signal.SIGKILL)
    broker.stop()  # reaps it


async def _succeeded(hub: Hub, command_id: str) -> CommandRecord | None:
    record = hub.commands.current(command_id) or await hub.commands.store.get(command_id)
    return record if record.status == "succeeded" else None


async def _all_finished(hub: Hub, ids: list[str]) -> list[CommandRecord] | None:
    records = [hub.commands.current(i) or await hub.commands.store.get(i) for i in ids]
    return records if all(record.finished for record in records) else None


@pytest.mark.mosquitto
async def test_commands_lost_with_the_broker_run_once_when_the_device_is_back(
    broker: Mosquitto, tmp_path: Path, uid: str, fleet_of: Callable[[Hub], Fleet]
) -> None:
    async with Hub(_settings(tmp_path, broker, uid)) as hub, TcpProxy(*_at(broker)) as link:
        fleet = fleet_of(hub)
        device = await fleet.add("door")
        async with fleet.agent(device, broker=link.url) as agent:
            await fleet.online(device)
            await asyncio.to_thread(_kill, broker)
            link.cut()  # the device stays away until the hub has sent everything
            ids = []
            for action in ("lock.unlock", "lock.lock", "lock.unlock"):
                _batch, [command] = await hub.commands.submit(
                    [device], action, {}, timeout_s=3, ttl_s=60, actor="test"
                )
                ids.append(command.id)
            await asyncio.to_thread(broker.start)
            await eventually(lambda: hub.bus.connected, "the hub back on the broker")
            await hub.bus.flushed()  # the broker took the commands, and had no one to give them
            assert hub.presence.get(device).presence == "online"  # it never heard otherwise
            link.restore()

            done = await eventually(lambda: _all_finished(hub, ids), "every command", 20)
            assert [record.status for record in done] == ["succeeded"] * 3
            assert all(record.deliveries >= 2 for record in done)
            assert fleet.level(device, LOCK_PIN) == 1  # unlock, lock, unlock: in that order
            assert agent.commands is not None
            assert agent.commands.stats.executed == 3  # each once, however often delivered


@pytest.mark.mosquitto
async def test_commands_lost_with_the_broker_and_the_hub_run_once_after_both_restart(
    broker: Mosquitto, tmp_path: Path, uid: str, fleet_of: Callable[[Hub], Fleet]
) -> None:
    settings = _settings(tmp_path, broker, uid)
    first = Hub(settings)
    async with TcpProxy(*_at(broker)) as link, AsyncExitStack() as stack:
        hub = await stack.enter_async_context(first)
        fleet = fleet_of(hub)
        device = await fleet.add("door")
        agent = await stack.enter_async_context(
            fleet.agent(device, actions=[slow(1.0)], broker=link.url)
        )
        await fleet.online(device)
        _batch, [started] = await hub.commands.submit(
            [device], "site.slow", {}, timeout_s=10, ttl_s=60, actor="test"
        )
        await eventually(lambda: hub.commands.current(started.id).status == "acknowledged", "taken")
        await asyncio.to_thread(_kill, broker)
        link.cut()
        _batch, [lost] = await hub.commands.submit(
            [device], "lock.unlock", {}, timeout_s=3, ttl_s=60, actor="test"
        )
        # The hub stops while the broker is down; both come back before the device does.
        await first.__aexit__(None, None, None)
        await asyncio.to_thread(broker.start)
        async with Hub(settings) as hub:
            fleet.hub = hub
            await hub.bus.flushed()
            link.restore()
            done = await eventually(lambda: _all_finished(hub, [started.id, lost.id]), "both", 20)
            assert [record.status for record in done] == ["succeeded", "succeeded"]
            assert fleet.level(device, LOCK_PIN) == 1
            assert agent.commands is not None
            assert agent.commands.stats.executed == 2  # each once, however often delivered


async def test_a_command_not_taken_is_sent_again_until_its_ttl_then_times_out(
    hub: Hub, connect_device: DeviceFactory
) -> None:
    # A device that is there but never takes its command: timeout_s does not apply yet (it
    # counts from taking); the hub asks again until the TTL, the deadline for taking it.
    device = await connect_device(hub, "mute")
    await device.subscribe(topic_for(device.device_id, Channel.CMD))
    device.online()
    await eventually(lambda: hub.presence.get(device.device_id).presence == "online", "online")
    _batch, [command] = await hub.commands.submit(
        [device.device_id], "lock.unlock", {}, timeout_s=0.5, ttl_s=3, actor="test"
    )
    commands = f"fh/v1/{device.device_id}/cmd"
    await eventually(
        lambda: sum(topic == commands for topic, _ in device.messages) >= 2, "a second delivery"
    )
    assert hub.commands.current(command.id).status == "sent"  # past timeout_s, not taken
    ended = await eventually(lambda: _all_finished(hub, [command.id]), "the TTL")
    assert (ended[0].status, ended[0].error) == (
        "timed_out",
        "the device did not take it before its TTL ran out",
    )
    # It did run after all (its answer was lost, say): the outcome is kept, as late.
    device.publish_raw(
        f"fh/v1/{device.device_id}/reply/{hub.settings.instance}",
        encode(Reply(id=command.id, ok=True, ts=now_ms(), result={"state": "unlocked"})),
    )
    late = await eventually(lambda: _succeeded(hub, command.id), "the late outcome")
    assert late.late


def _at(broker: Mosquitto) -> tuple[str, int]:
    return broker.host, broker.port
