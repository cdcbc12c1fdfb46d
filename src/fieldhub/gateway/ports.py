"""What the gateway's LAN side and its uplink promise each other.

The LAN side (`fieldhub.gateway.lan`) finds, pairs and talks to controllers; the uplink
(`fieldhub.gateway.uplink`) carries their reports to the hub and the hub's commands to them.
Neither imports the other: `fieldhub gateway` wires them together through these protocols, so
either side can be tested alone against a small stand-in of the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

ReportChannel = Literal["telemetry", "event", "state"]
"""The sequenced device → hub channels a controller's reports travel on (docs/protocol.md)."""


@dataclass(frozen=True, slots=True)
class ControllerInfo:
    """A paired controller as the gateway last saw it.

    `controller_id` follows the device id rules of `fieldhub.protocol` and is the child
    device's id in the hub. `actions` has the shape agents report (`fieldhub.protocol.actions`).
    """

    controller_id: str
    address: str
    actions: dict[str, Any] = field(default_factory=dict)
    firmware: str = ""


@dataclass(frozen=True, slots=True)
class CommandOutcome:
    """How one command ended on a controller; `unreachable` means it was never delivered."""

    status: Literal["succeeded", "failed", "timed_out", "unreachable"]
    result: dict[str, Any] = field(default_factory=dict)
    error: str = ""


class Uplink(Protocol):
    """Implemented by the uplink, called by the LAN side."""

    async def controller_online(self, info: ControllerInfo) -> None:
        """A paired controller's authenticated link is up (first time or again)."""

    async def controller_offline(self, controller_id: str, reason: str) -> None:
        """The link to one controller is lost; `reason` says why, for the hub and the display."""

    async def pairing_requested(self, controller_id: str, address: str) -> None:
        """An unpaired controller asks to pair; the hub's dashboard may approve it."""

    async def report(self, controller_id: str, channel: ReportChannel, body: dict[str, Any]) -> None:
        """Take one report of a controller.

        `body` is the channel's payload of docs/protocol.md without `seq` (the uplink numbers
        each child's reports). Returns once the report is durable in the gateway's outbox; only
        then does the LAN side acknowledge it to the controller, so nothing is lost between them.
        """


class Lan(Protocol):
    """Implemented by the LAN side, called by the uplink."""

    async def run_command(
        self, controller_id: str, command_id: str, action: str, args: dict[str, Any], timeout_s: float
    ) -> CommandOutcome:
        """Run one action on a controller, at most once: the controller remembers the command
        ids it has run and answers a repeated id with the first outcome, never a second run."""

    async def approve_pairing(self, controller_id: str) -> bool:
        """Pair a controller that asked (approval from the hub); False if none is waiting."""

    def link_states(self) -> dict[str, str]:
        """Each known controller's link: `linked`, `pairing`, or `lost: <reason>`."""
