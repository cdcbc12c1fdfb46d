"""Real agents (mock pins) for tests that command devices: a small fleet registered on a hub."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec

from fieldhub.agent.actions import SiteAction
from fieldhub.agent.config import AgentConfig, DeviceSection, HubSection, WebSection
from fieldhub.agent.service import Agent
from fieldhub.agent.units import Drivers, SocketConfig, mock_pin_factory
from fieldhub.agent.units.simulate import SwitchPin
from fieldhub.hub.app import Hub
from fieldhub.hub.store.credentials import IssuedCredentials
from tests.waiting import eventually

LOCK_PIN, SOCKET_PIN = 5, 6


class Fleet:
    """Registers devices on a hub and runs each as a real agent (mock pins) on demand."""

    def __init__(self, hub: Hub, tmp_path: Path, uid: str) -> None:
        self.hub = hub
        self._tmp = tmp_path
        self._uid = uid
        self.issued: dict[str, IssuedCredentials] = {}
        self.pins: dict[str, Any] = {}

    async def add(self, name: str, site: str = "berlin") -> str:
        device_id = f"{name}-{self._uid}"
        new = await self.hub.devices.create(device_id, labels={"site": site})
        self.issued[device_id] = new.credentials
        self.pins[device_id] = mock_pin_factory(SwitchPin)
        return device_id

    @asynccontextmanager
    async def agent(
        self,
        device_id: str,
        *,
        actions: Sequence[SiteAction] = (),
        hub: Hub | None = None,
        broker: str | None = None,
        lock: bool = True,
        min_off_s: float = 0,
        **tls: Any,
    ) -> AsyncIterator[Agent]:
        """Run the device's agent, connected to ``broker`` (an ``mqtt://`` URL, e.g. a
        :class:`~tests.support.proxy.TcpProxy` in front of it) or the hub's broker; with a
        lock unit unless ``lock`` is false, its socket off ``min_off_s`` at least; ``tls``
        (``ca_file``, ...) goes to the agent's ``hub`` section."""
        hub = hub or self.hub
        issued = self.issued[device_id]
        units = [SocketConfig(name="socket", pin=SOCKET_PIN, initial="on", min_off_s=min_off_s)]
        if lock:
            units.insert(0, SocketConfig(name="lock", pin=LOCK_PIN, role="lock", locked_when="off"))
        config = AgentConfig(
            device=DeviceSection(id=device_id),
            hub=HubSection(broker=broker or hub.broker_url, username=issued.username, **tls),
            data_folder=str(self._tmp / device_id),
            units=list(units),
            actions=list(actions),
            web=WebSection(enabled=False),
        )
        drivers = Drivers(pin_factory=self.pins[device_id])
        async with Agent(config, issued.secret, drivers=drivers) as agent:
            yield agent

    async def online(self, device_id: str, hub: Hub | None = None) -> None:
        """Until the hub knows the device is there and has its action catalog."""
        hub = hub or self.hub

        async def ready() -> bool:
            record = await hub.registry.get(device_id)
            return hub.presence.get(device_id).presence == "online" and "actions" in record.reported

        await eventually(ready, f"{device_id} online with its actions")

    def level(self, device_id: str, pin: int) -> int:
        return int(self.pins[device_id].pin(pin).state)


def failing() -> SiteAction:
    """A site action that always fails."""
    return msgspec.convert({"name": "site.fail", "command": ["/bin/false"]}, SiteAction)


def slow(seconds: float) -> SiteAction:
    """A site action that takes ``seconds`` and says it was done."""
    return msgspec.convert(
        {"name": "site.slow", "command": ["/bin/sh", "-c", f"sleep {seconds}; echo done"]},
        SiteAction,
    )
