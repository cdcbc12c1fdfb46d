"""Helpers for the LAN tests: the uplink's side of ``ports.Uplink`` as a recorder, and
controllers and gateways on loopback."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fieldhub.controller.config import ActionConfig, ControllerConfig, ValueSource
from fieldhub.controller.service import Controller
from fieldhub.gateway.lan import LanManager, LanSettings
from fieldhub.gateway.ports import ControllerInfo, ReportChannel

SLEEPER = ActionConfig("hang", ("/bin/sleep", "600"), {}, 1.0)
"""An action that never ends by itself: its timeout (1 s) must kill it."""


@dataclass
class RecordingUplink:
    """The other side's interface (``ports.Uplink``), recording every call; ``hold`` makes
    ``report`` wait, as an uplink whose disk is slow would."""

    online: list[ControllerInfo] = field(default_factory=list)
    offline: list[tuple[str, str]] = field(default_factory=list)
    pairing: list[tuple[str, str]] = field(default_factory=list)
    codes: dict[str, str] = field(default_factory=dict)
    """Pairing codes passed to the display hook (``on_pairing_code``), by controller."""
    reports: list[tuple[str, ReportChannel, dict[str, Any]]] = field(default_factory=list)
    hold: asyncio.Event | None = None

    async def controller_online(self, info: ControllerInfo) -> None:
        self.online.append(info)

    async def controller_offline(self, controller_id: str, reason: str) -> None:
        self.offline.append((controller_id, reason))

    async def pairing_requested(self, controller_id: str, address: str) -> None:
        self.pairing.append((controller_id, address))

    async def report(self, controller_id: str, channel: ReportChannel, body: dict[str, Any]) -> None:
        if self.hold is not None:
            await self.hold.wait()
        self.reports.append((controller_id, channel, body))

    def values_of(self, controller_id: str) -> list[dict[str, Any]]:
        return [b["values"] for c, ch, b in self.reports if c == controller_id and ch == "telemetry"]


def controller_config(
    tmp: Path, controller_id: str, announce_port: int, **changes: Any
) -> ControllerConfig:
    """A controller on loopback announcing to the gateway's port, with a value and actions."""
    config = ControllerConfig(
        controller_id=controller_id,
        data_dir=tmp / controller_id,
        listen_host="127.0.0.1",
        listen_port=0,
        announce_to="127.0.0.1",
        announce_port=announce_port,
        announce_every_s=0.5,
        report_every_s=0.5,
        heartbeat_s=1.0,
        firmware="test 1",
        values={"temp": ValueSource("simulate", low=20, high=21)},
        actions={
            "relay.set": ActionConfig(
                "relay.set",
                ("/bin/sh", "-c", 'echo "relay $FIELDHUB_ARG_ON" >> "$0"', str(tmp / f"{controller_id}.log")),
                {"on": "bool"},
                5.0,
            ),
            "hang": SLEEPER,
        },
    )
    return replace(config, **changes)


@asynccontextmanager
async def running_controller(config: ControllerConfig) -> AsyncIterator[Controller]:
    """A controller serving until the block ends."""
    controller = Controller(config)
    await controller.start()
    task = asyncio.create_task(controller.run())
    try:
        yield controller
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@asynccontextmanager
async def running_gateway(
    tmp: Path, uplink: RecordingUplink, **settings: Any
) -> AsyncIterator[LanManager]:
    """A LAN manager on loopback (announcements on a free port) until the block ends."""
    manager = LanManager(
        LanSettings(
            gateway_id="gw-test",
            key_dir=tmp / "gateway-keys",
            listen_host=settings.pop("listen_host", "127.0.0.1"),
            announce_port=settings.pop("announce_port", 0),
            heartbeat_s=1.0,
            **settings,
        ),
        uplink,
        on_pairing_code=uplink.codes.__setitem__,
    )
    await manager.start()
    try:
        yield manager
    finally:
        await manager.stop()
