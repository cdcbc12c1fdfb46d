"""What the technician page needs from the agent, as a narrow interface.

The page shows and does only what :class:`AgentView` offers, so it can be tested with a
small fake and the agent decides what "run an action" means (through its action registry,
with whatever logging or event it wants to add for actions run by hand).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from fieldhub.agent.actions import ActionInfo, ActionOutcome
from fieldhub.agent.eventlog import LoggedEvent

__all__ = ["AgentView", "UnitView"]


@dataclass(frozen=True, slots=True)
class UnitView:
    """One hardware unit: its name, its kind (the config ``type``), and ``Unit.status()``."""

    name: str
    kind: str
    status: Mapping[str, object]


class AgentView(Protocol):
    """The agent as the technician page sees it. Called on the event loop; must not block."""

    @property
    def device_id(self) -> str:
        """The device's id, for the page title."""
        ...

    def units(self) -> Sequence[UnitView]:
        """Every unit, in config order."""
        ...

    def uplink_stats(self) -> Mapping[str, object]:
        """Connection and outbox figures (connected, queued, sent, acknowledged, dropped…),
        shown as given, key by key."""
        ...

    def recent_events(self, limit: int) -> Sequence[LoggedEvent]:
        """Up to ``limit`` of the newest events the agent reported, newest first."""
        ...

    def actions(self) -> Sequence[ActionInfo]:
        """The actions to offer as buttons (the built-in ones, usually)."""
        ...

    async def run_action(self, name: str, args: Mapping[str, Any]) -> ActionOutcome:
        """Run an action by hand.

        Raises:
            fieldhub.agent.actions.ActionError: unknown action or invalid arguments.
        """
        ...
