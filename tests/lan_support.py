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
from tests.waiting import eventually


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
    failures: int = 0
    """How many reports to refuse (``OSError``) before taking them, as a full disk would."""

    async def controller_online(self, info: ControllerInfo) -> None:
        self.online.append(info)

    async def controller_offline(self, controller_id: str, reason: str) -> None:
        self.offline.append((controller_id, reason))

    async def pairing_requested(self, controller_id: str, address: str) -> None:
        self.pairing.append((controller_id, address))

    async def report(
        self, controller_id: str, channel: ReportChannel, body: dict[str, Any]
    ) -> None:
        if self.hold is not None:
            await self.hold.wait()
        if self.failures:
            self.failures -= 1
            raise OSError(28, "No space left on device")
        self.reports.append((controller_id, channel, body))

    def is_online(self, controller_id: str) -> bool:
        """Online now: its last online call is later than its last offline call."""
        ups = sum(1 for info in self.online if info.controller_id == controller_id)
        downs = sum(1 for cid, _ in self.offline if cid == controller_id)
        return ups > downs

    def values_of(self, controller_id: str) -> list[dict[str, Any]]:
        return [
            b["values"] for c, ch, b in self.reports if c == controller_id and ch == "telemetry"
        ]


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
                (
                    "/bin/sh",
                    "-c",
                    'echo "relay $FIELDHUB_ARG_ON" >> "$0"',
                    str(tmp / f"{controller_id}.log"),
                ),
                {"on": "bool"},
                5.0,
            ),
            "hang": ActionConfig(  # never ends by itself: its timeout must kill it
                "hang",
                (
                    "/bin/sh",
                    "-c",
                    'echo $$ > "$0"; exec sleep 600',
                    str(tmp / f"{controller_id}.pid"),
                ),
                {},
                1.0,
            ),
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


@asynccontextmanager
async def paired_controller(
    tmp: Path, uplink: RecordingUplink, gateway: LanManager, controller_id: str, **changes: Any
) -> AsyncIterator[Controller]:
    """A controller that announced itself to ``gateway``, was approved and is linked."""
    config = controller_config(tmp, controller_id, gateway.announce_port, **changes)
    async with running_controller(config) as controller:
        await eventually(lambda: controller_id in uplink.codes, f"{controller_id}'s pairing code")
        assert await gateway.approve_pairing(controller_id)
        await eventually(lambda: uplink.is_online(controller_id), f"{controller_id} online")
        yield controller
