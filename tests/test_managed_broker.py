"""The hub's own Mosquitto: without ``--broker`` and with Mosquitto installed, the hub runs one
as its child (generated configuration, dynamic security, data in DATA/mosquitto), watches it
and stops it; without Mosquitto it says so and runs the embedded broker."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from fieldhub.hub.app import Hub, HubStartError
from tests.conftest import DeviceFactory, HubFactory, api_client
from tests.device_client import TestDevice
from tests.support.servers import free_port
from tests.waiting import eventually

pytestmark = pytest.mark.mosquitto

FIELDHUB = [sys.executable, "-m", "fieldhub"]


async def _stored(hub: Hub, device_id: str, seq: int) -> bool:
    return (hub.ingest.acked_seq(device_id) or 0) >= seq


async def test_the_hub_runs_its_own_mosquitto_which_devices_use_with_their_credentials(
    make_hub: HubFactory, connect_device: DeviceFactory, tmp_path: Path
):
    async with make_hub(local_broker="auto") as hub:
        assert hub.broker_kind == "managed-mosquitto"
        assert hub.broker is None  # not the embedded one
        device = await connect_device(hub, "atm")
        device.telemetry(1, kwh=1.5)
        await device.wait_acked(1)
        async with api_client(hub) as admin:
            health = (await admin.get("/api/health")).json()
        assert health["broker_kind"] == "managed-mosquitto"
        assert health["broker_connected"] is True
        # Anonymous clients are refused, and so is a device with another's password.
        with pytest.raises(ConnectionRefusedError):
            await TestDevice.connect(hub.broker_url, "nobody")
        folder = tmp_path / "data" / "mosquitto"
        assert folder.stat().st_mode & 0o777 == 0o700
        for name in ("mosquitto.conf", "dynamic-security.json", "admin.json"):
            assert (folder / name).stat().st_mode & 0o777 == 0o600, name
        assert "allow_anonymous false" in (folder / "mosquitto.conf").read_text()
        managed = hub.managed_broker
        assert managed is not None
        pid = managed.pid
    assert pid is not None
    with pytest.raises(ProcessLookupError):  # stopped with the hub
        os.kill(pid, 0)
    assert not (folder / "admin.json").exists()
    # Its retained messages, saved at the stop, are the hub's user's alone too.
    assert (folder / "mosquitto.db").stat().st_mode & 0o777 == 0o600


@pytest.mark.slow
async def test_a_killed_mosquitto_is_started_again_and_devices_come_back(
    make_hub: HubFactory, connect_device: DeviceFactory, caplog: pytest.LogCaptureFixture
):
    async with make_hub(local_broker="mosquitto") as hub:
        device = await connect_device(hub, "atm")
        device.telemetry(1, kwh=1.0)
        await device.wait_acked(1)
        managed = hub.managed_broker
        assert managed is not None
        assert managed.pid is not None
        first = managed.pid
        os.kill(first, signal.SIGKILL)
        await eventually(lambda: managed.restarts == 1, "Mosquitto started again", 20)
        assert managed.pid not in (None, first)
        assert "the managed Mosquitto exited (status -9" in caplog.text
        # The device (paho reconnects by itself) and the hub are back: data flows again.
        await eventually(lambda: device.connected and hub.bus.connected, "reconnected", 20)
        device.telemetry(2, kwh=2.0)
        await eventually(lambda: _stored(hub, device.device_id, 2), "seq 2 stored", 20)


async def test_without_mosquitto_the_hub_says_so_and_runs_the_embedded_broker(
    make_hub: HubFactory, connect_device: DeviceFactory, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.WARNING)
    async with make_hub(local_broker="auto", mosquitto_bin="/nonexistent/mosquitto") as hub:
        assert hub.broker_kind == "embedded"
        device = await connect_device(hub, "atm")
        device.telemetry(1, kwh=1.0)
        await device.wait_acked(1)
    assert "no Mosquitto binary '/nonexistent/mosquitto' found" in caplog.text
    assert "the hub runs its embedded amqtt broker" in caplog.text


async def test_insisting_on_a_missing_mosquitto_stops_the_start_with_a_clear_message(
    make_hub: HubFactory,
):
    with pytest.raises(HubStartError, match=r"no Mosquitto binary .* install it, or run"):
        async with make_hub(local_broker="mosquitto", mosquitto_bin="/nonexistent/mosquitto"):
            pass


async def test_a_mosquitto_that_cannot_start_stops_the_hub_with_what_it_said(
    make_hub: HubFactory, tmp_path: Path
):
    broken = tmp_path / "mosquitto"
    broken.write_text("#!/bin/sh\necho 'Error: broken on purpose' >&2\nexit 3\n")
    broken.chmod(0o755)
    with pytest.raises(HubStartError, match="status 3: Error: broken on purpose"):
        async with make_hub(local_broker="auto", mosquitto_bin=str(broken)):
            pass


async def test_a_taken_port_is_named(make_hub: HubFactory):
    port = free_port()
    with _listening(port), pytest.raises(HubStartError, match=f"127.0.0.1:{port}"):
        async with make_hub(local_broker="mosquitto", mqtt=f"127.0.0.1:{port}"):
            pass


@contextmanager
def _listening(port: int) -> Iterator[None]:
    """Something else listening on ``port`` for the block."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", port))
        other.listen()
        yield


@pytest.mark.slow
async def test_devices_added_with_the_cli_connect_before_and_while_the_hub_runs(
    make_hub: HubFactory, tmp_path: Path, uid: str
):
    """Only ``fieldhub device add`` knows the new secret: it hands it to the hub's Mosquitto,
    started for the moment when no hub runs, or the hub's running one."""
    data = tmp_path / "data"
    env = {**os.environ, "FIELDHUB_LOCAL_BROKER": "auto"}

    async def add(device_id: str) -> dict[str, str]:
        added = await asyncio.to_thread(
            subprocess.run,
            [*FIELDHUB, "device", "add", device_id, "--data", str(data)],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert added.returncode == 0, added.stderr
        return dict(line.split(": ", 1) for line in added.stdout.splitlines())

    before = await add(f"early-{uid}")
    async with make_hub(local_broker="auto", data=data) as hub:
        during = await add(f"late-{uid}")
        for credentials in (before, during):
            device_id = credentials["client_id"]
            device = await TestDevice.connect(
                hub.broker_url,
                device_id,
                username=credentials["username"],
                password=credentials["secret"],
            )
            try:
                device.telemetry(1, kwh=1.0)
                await device.wait_acked(1)
            finally:
                await asyncio.to_thread(device.close)
