"""The issue's "done when", end to end: a ``fieldhub gateway`` process and three
``fieldhub controller`` processes next to a hub, paired through the hub, values in the hub, a
command round trip; killing the gateway makes the children ``unreachable`` with one alarm, not
three; a restarted gateway brings them back, and SIGTERM stops it cleanly (exit 0)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from fieldhub.hub.app import Hub
from fieldhub.hub.store.alarms import AlarmFilter
from tests.conftest import api_client
from tests.gateway_processes import (
    controller_config,
    free_udp_port,
    gateway_config,
    pair,
    start,
    stop_all,
)
from tests.gateway_support import register_gateway
from tests.waiting import eventually

pytestmark = pytest.mark.slow


async def test_three_controllers_behind_a_gateway_process(hub: Hub, tmp_path: Path, uid: str):
    gw = f"gw-{uid}"
    children = [f"ctrl{n}-{uid}" for n in (1, 2, 3)]
    await hub.alarms.put_rule(
        {"id": "gone", "condition": {"kind": "presence", "presence": "offline"}},
        actor="test",
        create=True,
    )
    credentials = await register_gateway(hub, gw)
    announce_port = free_udp_port()
    config = gateway_config(tmp_path, hub, gw, credentials, announce_port)
    gateway = await start(config)
    controllers = [
        await start(controller_config(tmp_path, child, announce_port), "controller")
        for child in children
    ]
    try:
        async with api_client(hub) as api:
            # Each asks to pair: an event of the gateway in the hub; an admin registers the
            # child under the gateway and approves it with the gateway's command.
            await pair(api, gw, children)

            async def linked() -> bool:
                listed = (await api.get(f"/api/devices/{gw}/children")).json()
                return [d["presence"]["state"] for d in listed] == ["online"] * 3

            await eventually(linked, "three children online under the gateway", 30)

            async def temperature() -> float | None:
                latest = (await api.get(f"/api/devices/{children[0]}/latest")).json()
                return latest.get("temp", {}).get("value")

            assert 20 <= await eventually(temperature, "a value in the hub", 30) <= 21
            command = await api.post(
                f"/api/devices/{children[1]}/commands",
                json={"action": "relay.set", "args": {"closed": True}},
            )
            assert command.json()["status"] == "succeeded", command.text
            assert (tmp_path / f"{children[1]}.log").read_text() == "relay true\n"

            # The gateway dies: its will; the children are unreachable, one alarm is raised.
            gateway.kill()
            await gateway.wait()
            for child in children:
                await eventually(
                    lambda child=child: hub.presence.get(child).presence == "unreachable",
                    f"{child} unreachable",
                    20,
                )
            await eventually(lambda: _alarms(hub), "the gateway's offline alarm", 20)
            await hub.alarms.engine.evaluate(tick=False)
            assert [a.device_id for a in await _alarms(hub)] == [gw]

            # Back, with the keys it kept: no pairing again; then a clean stop.
            gateway = await start(config)
            await eventually(linked, "the children back online", 30)
            gateway.send_signal(signal.SIGTERM)
            assert gateway.stdout is not None
            said = (await asyncio.wait_for(gateway.stdout.read(), 30)).decode()
            assert await gateway.wait() == 0, said
            assert "Traceback" not in said
            await eventually(
                lambda: hub.presence.get(gw).reason == "gateway stopped", "the goodbye", 10
            )
    finally:
        await stop_all(gateway, *controllers)


async def _alarms(hub: Hub) -> list:
    return await hub.alarms.find(AlarmFilter(rule="gone"))
