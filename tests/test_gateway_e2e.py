"""The issue's "done when", end to end: a ``fieldhub gateway`` process and three
``fieldhub controller`` processes next to a hub, paired through the hub, values in the hub, a
command round trip; killing the gateway makes the children ``unreachable`` with one alarm, not
three; a restarted gateway brings them back, and SIGTERM stops it cleanly (exit 0)."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from pathlib import Path

import pytest

from fieldhub.hub.app import Hub
from fieldhub.hub.store.alarms import AlarmFilter
from tests.conftest import api_client
from tests.gateway_support import register_gateway
from tests.waiting import eventually

pytestmark = pytest.mark.slow


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _gateway_config(tmp: Path, hub: Hub, gw: str, credentials: tuple[str, str], port: int) -> Path:
    config = tmp / "gateway.yaml"
    config.write_text(
        f"gateway: {{id: {gw}}}\n"
        f"hub:\n  broker: '{hub.broker_url}'\n"
        f"  username: '{credentials[0]}'\n  secret: '{credentials[1]}'\n"
        f"data_dir: '{tmp / 'gateway'}'\n"
        f"lan: {{listen_host: 127.0.0.1, announce_port: {port}, heartbeat_s: 1.0}}\n"
    )
    config.chmod(0o600)
    return config


async def _start(config: Path, program: str = "gateway") -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "fieldhub", program, "--config", str(config)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )


def _controller_config(tmp: Path, controller_id: str, announce_port: int) -> Path:
    """A controller on loopback with a made-up temperature and a relay that writes a log."""
    log = tmp / f"{controller_id}.log"
    config = tmp / f"{controller_id}.yaml"
    config.write_text(
        f"id: {controller_id}\n"
        f"data_dir: '{tmp / controller_id}'\n"
        "listen: 127.0.0.1:0\n"
        f"announce: {{to: 127.0.0.1, port: {announce_port}, every_s: 0.5}}\n"
        "report_every_s: 0.5\n"
        "heartbeat_s: 1\n"
        "values: {temp: {simulate: [20, 21]}}\n"
        "actions:\n"
        "  relay.set:\n"
        f"    command: [/bin/sh, -c, 'echo relay $FIELDHUB_ARG_CLOSED >> {log}']\n"
        "    args: {closed: bool}\n"
        "    timeout_s: 5\n"
    )
    return config


async def test_three_controllers_behind_a_gateway_process(hub: Hub, tmp_path: Path, uid: str):
    gw = f"gw-{uid}"
    children = [f"ctrl{n}-{uid}" for n in (1, 2, 3)]
    await hub.alarms.put_rule(
        {"id": "gone", "condition": {"kind": "presence", "presence": "offline"}},
        actor="test",
        create=True,
    )
    credentials = await register_gateway(hub, gw)
    announce_port = _free_udp_port()
    config = _gateway_config(tmp_path, hub, gw, credentials, announce_port)
    gateway = await _start(config)
    controllers = [
        await _start(_controller_config(tmp_path, child, announce_port), "controller")
        for child in children
    ]
    try:
        async with api_client(hub) as api:
            # Each asks to pair: an event of the gateway in the hub; an admin registers the
            # child under the gateway and approves it with the gateway's command.
            async def requests() -> set[str]:
                page = await api.get(
                    "/api/events", params={"device": gw, "type": "gateway.pairing_requested"}
                )
                return {e["data"]["controller"] for e in page.json()["events"]}

            await eventually(lambda: _all(requests, children), "three pairing requests", 30)
            for child in children:
                made = await api.post("/api/devices", json={"id": child, "parent": gw})
                assert made.status_code == 201, made.text
                approved = await api.post(
                    f"/api/devices/{gw}/commands",
                    json={"action": "gateway.approve_pairing", "args": {"controller": child}},
                )
                assert approved.json()["status"] == "succeeded", approved.text

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
            gateway = await _start(config)
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
        for process in (gateway, *controllers):
            if process.returncode is None:
                process.kill()
                await process.wait()


async def _all(check, wanted: list[str]) -> bool:
    return set(wanted) <= await check()


async def _alarms(hub: Hub) -> list:
    return await hub.alarms.find(AlarmFilter(rule="gone"))
