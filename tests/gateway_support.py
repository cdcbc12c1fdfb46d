"""A gateway uplink on a test hub, and a stand-in of the LAN side (``ports.Lan``).

The stand-in keeps the LAN side's promise the uplink relies on: a command id runs once, and a
repeated id gets the first outcome. It records what ran, so tests can count runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fieldhub.agent.uplink import UplinkSettings
from fieldhub.gateway.ports import CommandOutcome
from fieldhub.gateway.uplink import GatewayUplink
from fieldhub.hub.app import Hub
from fieldhub.mqtt.address import broker_address


@dataclass
class StandInLan:
    """Runs ``relay.toggle`` (flips ``on``) and ``state.set``; ``slow_s`` delays every run."""

    runs: list[tuple[str, str, str, dict[str, Any]]] = field(default_factory=list)
    outcomes: dict[tuple[str, str], CommandOutcome] = field(default_factory=dict)
    waiting: set[str] = field(default_factory=set)
    on: bool = False
    slow_s: float = 0.0

    async def run_command(
        self,
        controller_id: str,
        command_id: str,
        action: str,
        args: dict[str, Any],
        timeout_s: float,
    ) -> CommandOutcome:
        key = (controller_id, command_id)
        if key in self.outcomes:
            return self.outcomes[key]
        self.runs.append((controller_id, command_id, action, args))
        await asyncio.sleep(self.slow_s)
        if action == "relay.toggle":
            self.on = not self.on
            outcome = CommandOutcome("succeeded", {"on": self.on})
        elif action == "state.set":
            outcome = CommandOutcome("succeeded", {"errors": {}})
        else:
            outcome = CommandOutcome("failed", error=f"no action {action!r}")
        self.outcomes[key] = outcome
        return outcome

    async def approve_pairing(self, controller_id: str) -> bool:
        if controller_id not in self.waiting:
            return False
        self.waiting.discard(controller_id)
        return True

    def link_states(self) -> dict[str, str]:
        return {}


async def register_gateway(hub: Hub, gateway_id: str, **labels: str) -> tuple[str, str]:
    """The gateway's user name and secret."""
    issued = (await hub.devices.create(gateway_id, labels=labels)).credentials
    return issued.username, issued.secret


@asynccontextmanager
async def gateway_on(
    hub: Hub, gateway_id: str, credentials: tuple[str, str], data_dir: Path, lan: StandInLan
) -> AsyncIterator[GatewayUplink]:
    """A running gateway uplink for ``gateway_id`` on ``hub``'s broker, serving ``lan``."""
    address = broker_address(hub.broker_url)
    uplink = GatewayUplink(
        gateway_id=gateway_id,
        host=address.host,
        port=address.port,
        username=credentials[0],
        password=credentials[1],
        data_dir=data_dir,
        settings=UplinkSettings(ack_timeout_s=1.0, max_ack_timeout_s=2.0, reconnect_max_s=1.0),
    )
    uplink.serve(lan)
    async with uplink:
        yield uplink
