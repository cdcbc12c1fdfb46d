"""The demo's fleet: real agents, in the hub's process, on simulated hardware.

Each demo device is the agent a Raspberry Pi runs (``fieldhub.agent.service.Agent``) with a
FocusPro cabinet's units (status LED, door, socket and its check, two thermometers, supply
voltage; ATMs and lockers also a door lock, terminals none), its own outbox and command log
under ``DATA/demo-agents/<id>/``, and gpiozero's mock
pins driven by :class:`~fieldhub.agent.units.simulate.Simulation`: people open doors, the
temperature drifts with the time of day, the supply dips now and then. What the hub sees is
what it would see from the field, over MQTT with the device's own credentials.

Credentials: the hub stores only a hash of a device's secret, so each agent keeps its own in its
data folder (``credentials.json``, mode 0600) and uses it again after a restart if the hub
still accepts it; otherwise (a new data folder for the hub, a revoked key) the demo issues new
ones. The technician page is off: twenty pages would need twenty ports.

The ATMs also have a camera (``camera``, simulated: a generated picture of the time and the
device id). Their service hours begin an hour after the demo starts (``service_hours``), so
until then every door opening is outside hours: the camera takes a picture and the agent
reports ``stranger.detected`` with it, which the hub stores, shows and offers for download. An
ATM's first door opening comes a few seconds after the start (``FIRST_VISIT_S``), so the
first stranger picture is on the dashboard within seconds.

One cabinet in twenty (``demo-002``, ``demo-022``, …) has a failed fan and runs about 30 °C
hotter than the others, so the demo's default rule ``over-temperature`` (``demo_rules.yaml``)
raises an alarm within a minute of the start, and its notification shows on the console.

The locks make the README's ``fieldhub send --all lock.lock`` do what it says: every ATM and
locker locks, and the terminals are reported ``unsupported`` (they have no lock). The socket's
minimum off time is 10 s, so ``socket.cycle`` takes 10 s (the hub waits 20 s for it, from the
duration the agent declares) and a shorter ``off_s`` comes back lengthened, and says so.

Every demo device is a ``pi`` (``device.type``, what a bundle's target names) and trusts the
demo's signing key (``demo_bundles``), so the README's bundle walk-through installs.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from fieldhub.agent.config import AgentConfig
from fieldhub.agent.service import run_with_bundles
from fieldhub.agent.units.simulate import Physics, Simulation
from fieldhub.cli.demo_bundles import DEMO_KEY_NAME, register_demo_key
from fieldhub.private_files import private_dir, write_private

__all__ = ["DemoDevice", "demo_config", "demo_devices", "hub_url", "run_demo_fleet", "runs_hot"]

SITES = ("berlin", "paris", "madrid", "warsaw")
KINDS = ("atm", "terminal", "locker")
WITH_LOCK = frozenset({"atm", "locker"})
"""Cabinets with a door lock (a strike on a second relay): some, not all, as in the field."""
LOCK_PIN = 5
WITH_CAMERA = frozenset({"atm"})
"""Cabinets with a camera that pictures a door opened outside service hours."""
FIRST_VISIT_S = 5.0
"""When an ATM's door first opens after the start: a stranger picture within seconds."""
CREDENTIALS_FILE = "credentials.json"
DEVICE_TYPE = "pi"
"""What every demo device is, to a bundle's target (``--device-type pi``)."""
HEAT_C = 30.0
"""How much hotter a cabinet with a failed fan runs: 48-65 °C, past the rule's 50 °C."""


class _Credentials(msgspec.Struct, frozen=True):
    username: str
    secret: str


@dataclass(frozen=True)
class DemoDevice:
    """One demo device: who it is on the hub, and where its agent keeps its files."""

    device_id: str
    name: str
    labels: dict[str, str]
    data_dir: Path


def demo_devices(count: int, data: Path) -> list[DemoDevice]:
    """``demo-001`` … ``demo-NNN``, spread over four sites and three kinds of cabinet."""
    devices = []
    for n in range(1, count + 1):
        kind = KINDS[n % len(KINDS)]
        device_id = f"demo-{n:03d}"
        devices.append(
            DemoDevice(
                device_id=device_id,
                name=f"{kind.upper()} {n}",
                labels={"site": SITES[n % len(SITES)], "group": kind},
                data_dir=data / "demo-agents" / device_id,
            )
        )
    return devices


def runs_hot(device: DemoDevice) -> bool:
    """Whether the device's cabinet has a failed fan: one in twenty, ``demo-002`` first (so
    that a fleet of two already has one)."""
    return int(device.device_id.rsplit("-", 1)[1]) % 20 == 2


def demo_config(
    device: DemoDevice, broker_url: str, username: str, trusted_keys: tuple[str, ...] = ()
) -> AgentConfig:
    """The agent.yaml of a FocusPro cabinet (as ``deploy/agent.example.yaml``), for ``device``,
    installing bundles signed by one of ``trusted_keys``.

    Each device gets its own 1-Wire ids, so the simulated cabinets differ in temperature.
    """
    number = int(device.device_id.rsplit("-", 1)[1])
    return msgspec.convert(
        {
            "device": {"id": device.device_id, "name": device.name, "type": DEVICE_TYPE},
            "hub": {"broker": broker_url, "username": username},
            "data_dir": str(device.data_dir),
            "outbox": {"max_messages": 100_000},
            "units": [
                {"type": "led", "name": "status", "pin": 17},
                {
                    "type": "door",
                    "name": "door",
                    "pin": 27,
                    "debounce_s": 0.05,
                    "open_too_long_s": 300,
                },
                {"type": "socket", "name": "socket", "pin": 22, "initial": "on", "min_off_s": 10},
                {"type": "socket_check", "name": "socket_power", "socket": "socket", "pin": 23},
                *_lock(device),
                *_camera(device),
                {
                    "type": "temperature",
                    "name": "temperature",
                    "sensors": {
                        "cabinet": {"id": f"28.{number:06X}A50000", "high": 45, "low": 0},
                        "dispenser": {"id": f"28.{number:06X}B50000", "high": 50},
                    },
                },
                {
                    "type": "voltage",
                    "name": "supply",
                    "adc": {"chip": "MCP3008", "channel": 0, "vref": 3.3, "scale": 2.0},
                    "low": 4.75,
                    "high": 5.25,
                    "under_voltage": True,
                },
            ],
            "web": {"enabled": False},
            "bundles": {"trusted_keys": list(trusted_keys)},
        },
        AgentConfig,
    )


def _lock(device: DemoDevice) -> list[dict[str, Any]]:
    """The door lock of an ATM or a locker (``lock.lock``, ``lock.unlock``); none for others."""
    if device.labels["group"] not in WITH_LOCK:
        return []
    return [{"type": "socket", "name": "lock", "pin": LOCK_PIN, "role": "lock"}]


def _camera(device: DemoDevice) -> list[dict[str, Any]]:
    """An ATM's camera: a door opened outside service hours is a ``stranger.detected`` event
    with a picture (docs/agent-media.md); none for other cabinets."""
    if device.labels["group"] not in WITH_CAMERA:
        return []
    trigger = {
        "event": "door.opened",
        "unit": "door",
        "outside_hours": service_hours(time.time()),
        "report": "stranger.detected",
    }
    return [
        {"type": "camera", "name": "camera", "width": 320, "height": 240, "capture_on": [trigger]}
    ]


def service_hours(started: float) -> str:
    """The demo's service hours (local time): from an hour after ``started`` (epoch s) for
    eight hours, so the demo's first hour is all outside them."""
    begin = time.localtime(started + 3600)
    end = time.localtime(started + 9 * 3600)
    return f"{begin.tm_hour:02d}:{begin.tm_min:02d}-{end.tm_hour:02d}:{end.tm_min:02d}"


async def _credentials(hub: Any, device: DemoDevice) -> _Credentials:
    """The device's credentials: the ones its agent kept, if the hub still accepts them; else
    new ones (registering the device first if the hub does not know it)."""
    from fieldhub.hub.store.devices import DeviceNotFound

    path = device.data_dir / CREDENTIALS_FILE
    try:
        await hub.registry.get(device.device_id)
    except DeviceNotFound:
        issued = (
            await hub.devices.create(
                device.device_id, name=device.name, labels=device.labels, actor="demo"
            )
        ).credentials
    else:
        kept = await asyncio.to_thread(_read_credentials, path)
        if kept is not None and await hub.credentials.verify(
            kept.username, kept.secret, device.device_id
        ):
            return kept
        issued = await hub.devices.rotate_credentials(device.device_id, 0, actor="demo")
    fresh = _Credentials(issued.username, issued.secret)
    await asyncio.to_thread(_write_credentials, path, fresh)
    return fresh


def _read_credentials(path: Path) -> _Credentials | None:
    try:
        return msgspec.json.decode(path.read_bytes(), type=_Credentials)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return None


def _write_credentials(path: Path, credentials: _Credentials) -> None:
    """Write the file readable by its owner only, from its first byte on, in a folder of the
    agent's that only its owner may enter."""
    private_dir(path.parent)
    write_private(path, msgspec.json.encode(credentials))


async def _run_agent(config: AgentConfig, secret: str, physics: Physics) -> None:
    """One demo device: its simulated hardware and its agent, which installs bundles as a
    real one does (docs/bundles.md), signed by the demo's key."""
    simulation = Simulation(
        config.units, config.data_dir / "simulated-hardware", physics, label=config.device.id
    )
    async with asyncio.TaskGroup() as group:
        group.create_task(simulation.run(), name=f"simulate:{config.device.id}")
        group.create_task(
            run_with_bundles(config, lambda _running: secret, drivers=simulation.drivers),
            name=f"agent:{config.device.id}",
        )


def hub_url(hub: Any) -> str:
    """The hub's address as a browser on this machine reaches it (``http://localhost:8080/``),
    or words saying where it is when the port was chosen by the system."""
    host, port = hub.settings.http_address
    shown = "localhost" if host in ("127.0.0.1", "0.0.0.0", "::") else host
    return f"http://{shown}:{port}/" if port else "the hub's address above"


def _say_dashboard(hub: Any) -> None:
    """Point at the dashboard, where the fleet is to be seen (docs/dashboard.md)."""
    from fieldhub.cli.common import console

    console.print(f"dashboard: open [bold]{hub_url(hub)}[/bold] in a browser and log in")


async def _demo_key(hub: Any, data: Path) -> str:
    """The demo's public signing key, registered on the hub; where its private half is said."""
    from fieldhub.cli.common import console

    key, accepted = await register_demo_key(hub, data)
    private = data / f"{DEMO_KEY_NAME}.key"
    if accepted:
        console.print(
            f"bundles: the demo agents trust key {key.public.key_id}; sign with "
            f"[bold]{private}[/bold] (README, 'A bundle to the demo fleet')"
        )
    else:
        console.print(
            f"[yellow]bundles:[/yellow] key {key.public.key_id} ({private}) was revoked on this "
            "hub: its bundles are refused; remove the key files to get a new one"
        )
    return key.public.to_text()


async def run_demo_fleet(hub: Any, count: int, data: Path, *, door_every_s: float) -> None:
    """Register ``count`` demo devices on ``hub`` and run their agents until cancelled.

    Args:
        hub: the running hub (``fieldhub.hub.app.Hub``).
        count: how many devices.
        data: the demo's data folder; the agents live in ``demo-agents/`` inside it.
        door_every_s: mean time between two openings of one cabinet's door.
    """
    _say_dashboard(hub)
    trusted = (await _demo_key(hub, data),)
    async with asyncio.TaskGroup() as group:
        for device in demo_devices(count, data):
            credentials = await _credentials(hub, device)
            config = demo_config(device, hub.broker_url, credentials.username, trusted)
            physics = Physics(
                door_every_s=door_every_s,
                first_door_s=FIRST_VISIT_S if device.labels["group"] in WITH_CAMERA else None,
                heat_c=HEAT_C if runs_hot(device) else 0,
            )
            group.create_task(
                _run_agent(config, credentials.secret, physics), name=f"demo:{device.device_id}"
            )
