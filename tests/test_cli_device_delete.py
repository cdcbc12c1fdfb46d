"""``fieldhub device delete ID`` while a hub runs on the same database, for a device with keys.

The CLI is another process: the running hub hears of the delete only through the database.
Within seconds the device's broker connection is closed and its credentials are refused,
and the hub forgets it as it forgets a device deleted through its API: no presence left, and
the same id registered again starts afresh (its first reports stored, not taken for
repeats of the deleted device's).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator

import pytest

from fieldhub.hub.app import Hub
from tests.conftest import HubFactory
from tests.device_client import TestDevice
from tests.waiting import eventually


@pytest.fixture(
    params=[
        pytest.param("embedded", id="amqtt"),
        pytest.param("mosquitto", id="mosquitto", marks=pytest.mark.mosquitto),
    ]
)
async def hub(request: pytest.FixtureRequest, make_hub: HubFactory) -> AsyncIterator[Hub]:
    """A hub (SQLite) on each broker."""
    async with make_hub(broker=request.param) as running:
        yield running


async def _cli(hub: Hub, *args: str) -> tuple[str, str]:
    """``fieldhub ARGS`` on ``hub``'s data folder and broker; its output (the credentials) and
    its console (the messages for people)."""
    env = {**os.environ, "FIELDHUB_DATA": str(hub.settings.data)}
    if hub.settings.broker:
        env["FIELDHUB_BROKER"] = hub.settings.broker
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fieldhub", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    return out.decode(), err.decode()


async def _added(hub: Hub, device_id: str) -> TestDevice:
    """Register ``device_id`` with the CLI and connect with what it printed, once the running
    hub took the new key."""
    out, _console = await _cli(hub, "device", "add", device_id)
    printed = dict(line.split(": ", 1) for line in out.splitlines())

    async def connected() -> TestDevice | None:
        try:
            return await TestDevice.connect(
                hub.broker_url, device_id, username=printed["username"], password=printed["secret"]
            )
        except ConnectionRefusedError:
            return None

    return await eventually(connected, f"{device_id} connected with the CLI's credentials")


async def _stored(hub: Hub, device: TestDevice, seq: int, value: int) -> None:
    """``device`` reports ``value`` as ``seq`` (again until acknowledged, as agents do) and the
    hub stores it."""

    async def latest() -> bool:
        if device.acked < seq:
            device.telemetry(seq, level=value)
            return False
        values = {point.key: point.value for point in await hub.queries.latest(device.device_id)}
        return values.get("level") == value

    await eventually(latest, f"{device.device_id}'s level {value} stored")


@pytest.mark.slow  # three CLI processes (~2 s each on a loaded machine)
async def test_a_device_deleted_with_the_cli_is_cut_off_and_forgotten_by_the_running_hub(
    hub: Hub, uid: str
) -> None:
    device_id = f"del-{uid}"
    device = await _added(hub, device_id)
    try:
        device.online()
        for seq in (1, 2, 3):
            await _stored(hub, device, seq, seq)
        await eventually(lambda: hub.presence.get(device_id).presence == "online", "online")

        _out, said = await _cli(hub, "device", "delete", device_id)
        assert f"deleted device {device_id} and its keys" in said
        await device.wait_disconnected(within_s=10)  # the broker closed its connection
        await device.wait_refused(within_s=10)  # and refuses its credentials
        await eventually(  # the presence counts (/metrics, the fleet's tiles) hold it no more
            lambda: sum(hub.presence.counts().values()) == 0, "the hub forgetting its presence"
        )
    finally:
        await asyncio.to_thread(device.close)

    again = await _added(hub, device_id)  # a new device under the old id starts afresh
    try:
        await _stored(hub, again, 1, 42)
    finally:
        await asyncio.to_thread(again.close)
