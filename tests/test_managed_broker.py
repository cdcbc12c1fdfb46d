"""The hub's own Mosquitto: without ``--broker`` and with Mosquitto installed, the hub runs one
as its child (generated configuration, dynamic security, data in DATA/mosquitto), watches it
and stops it; without Mosquitto it says so and runs the embedded broker."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest

from fieldhub.hub.app import Hub, HubStartError
from fieldhub.hub.broker.managed import find_mosquitto
from tests.conftest import DeviceFactory, HubFactory, _unavailable, api_client
from tests.device_client import TestDevice
from tests.support.servers import ServerUnavailable, free_port
from tests.waiting import eventually

pytestmark = pytest.mark.mosquitto

FIELDHUB = [sys.executable, "-m", "fieldhub"]


@pytest.fixture(autouse=True)
def _mosquitto_installed() -> None:
    """Without Mosquitto these tests cannot run: a skip on a developer's machine, a failure in
    CI (which installs it), as for the other servers (tests/conftest.py)."""
    found = find_mosquitto("mosquitto")
    if isinstance(found, str):
        _unavailable(ServerUnavailable(found))


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
        assert "Mosquitto applied it" in added.stderr  # the hub's, running or started for it
        return dict(line.split(": ", 1) for line in added.stdout.splitlines())

    before = await add(f"early-{uid}")
    async with make_hub(local_broker="auto", data=data) as hub:
        during = await add(f"late-{uid}")
        for credentials in (before, during):
            device_id = credentials["client_id"]
            # The hub adopts a device the CLI added within a second; Mosquitto may let it in
            # before that, and its first messages are then refused (an agent resends them).
            await eventually(lambda d=device_id: hub.ingest.accepts(d), "adopted", 15)
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


def _hub_process(data: Path, port: int, env: dict[str, str]) -> subprocess.Popen[str]:
    """``fieldhub hub`` in a session of its own (as in a terminal), once it has said where it
    serves; it must say it runs its own Mosquitto."""
    hub = subprocess.Popen(
        [*FIELDHUB, "hub", "--data", str(data), "--http", "127.0.0.1:0",
         "--mqtt", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        start_new_session=True,
    )  # fmt: skip
    assert hub.stdout is not None
    said: list[str] = []
    while not any("hub at http" in line for line in said):
        line = hub.stdout.readline()
        assert line, "".join(said)
        said.append(line)
    assert "(the hub's Mosquitto)" in said[-1]
    return hub


@pytest.mark.slow
@pytest.mark.parametrize(
    "stop", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c-to-the-terminal-group"]
)
def test_fieldhub_hub_on_its_mosquitto_stops_cleanly(tmp_path: Path, stop: signal.Signals):
    """``fieldhub hub`` with no --broker, as a process: its own Mosquitto carries the load;
    SIGTERM (systemd) or Ctrl-C (SIGINT to the terminal's whole process group) stops it with
    everything taken stored and acknowledged, the retained messages saved, exit status 0."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from fieldhub.clock import now_ms
    from fieldhub.protocol import Channel, Status, Telemetry, decode, encode, topic_for

    data, count, port = tmp_path / "data", 200, free_port()
    env = {**os.environ, "FIELDHUB_LOCAL_BROKER": "auto", "COLUMNS": "200"}
    added = subprocess.run(
        [*FIELDHUB, "device", "add", "meter-1", "--data", str(data)],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    device = dict(line.split(": ", 1) for line in added.stdout.splitlines())
    acked: list[int] = []
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=device["client_id"], protocol=mqtt.MQTTv311
    )
    client.username_pw_set(device["username"], device["secret"])
    client.on_message = lambda _c, _u, m: acked.append(decode(Channel.ACK, m.payload).seq)
    hub = _hub_process(data, port, env)
    assert hub.stdout is not None
    try:
        client.connect("127.0.0.1", port)
        client.loop_start()
        client.subscribe(topic_for("meter-1", Channel.ACK), qos=1)
        start = now_ms()
        sent = [
            client.publish(
                topic_for("meter-1", Channel.TELEMETRY),
                encode(Telemetry(seq=seq, ts=start + seq, values={"kwh": seq})),
                qos=1,
            )
            for seq in range(1, count + 1)
        ]
        status = encode(Status(online=True, ts=start, reason="retained-check"))
        sent.append(client.publish(topic_for("meter-1", Channel.STATUS), status, 1, True))
        for message in sent:
            message.wait_for_publish(10)
        if stop == signal.SIGINT:
            os.killpg(hub.pid, stop)
        else:
            hub.send_signal(stop)
        rest = hub.stdout.read()
        assert hub.wait(30) == 0, rest
    finally:
        if hub.poll() is None:
            hub.kill()
            hub.wait()
        hub.stdout.close()
        client.loop_stop()
    assert "Traceback" not in rest
    with closing(sqlite3.connect(data / "fieldhub.db")) as db:
        stored = db.execute("SELECT count(*) FROM samples").fetchone()[0]
        acked_seq = db.execute("SELECT acked_seq FROM devices WHERE id = 'meter-1'").fetchone()[0]
    assert (stored, acked_seq) == (count, count)
    assert max(acked, default=0) == count  # the device heard it before the broker went
    saved = data / "mosquitto" / "mosquitto.db"  # Mosquitto saved its retained messages
    assert b"retained-check" in saved.read_bytes()
