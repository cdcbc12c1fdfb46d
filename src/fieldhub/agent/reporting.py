"""What hardware units report to, and nothing more: telemetry, events, reported state.

Units do not know about MQTT, the outbox or sequence numbers; they call a ``Reporter``. The
agent's reporter stamps each report, gives it the next ``seq`` and puts it in the outbox, from
where the uplink sends it until the hub confirms storage. gpiozero calls back from its own
threads, so every method must be safe to call from any thread and must never block.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from fieldhub.protocol import MediaRef
from fieldhub.protocol.messages import Severity

Value = bool | int | float | str
"""A telemetry or state value, as the wire contract allows."""
StateValue = Value | Mapping[str, Any] | None
"""A reported-state value: a value, a JSON object (``actions``: the action catalog), or None
to remove the key."""


class Reporter(Protocol):
    """Where a unit's observations go (see the module docstring for the threading rule)."""

    def telemetry(self, values: Mapping[str, Value], ts: int | None = None) -> None:
        """Values measured at ``ts`` (epoch ms; now if None)."""

    def event(
        self,
        type: str,
        severity: Severity = "info",
        message: str = "",
        data: Mapping[str, Any] | None = None,
        *,
        media: Sequence[MediaRef] = (),
        ts: int | None = None,
    ) -> None:
        """Something happened (``door.opened``, ``temperature.high``) at ``ts`` (epoch ms; now
        if None); sent at once. ``media`` announces objects kept in the agent's media spool,
        uploaded once the hub has stored the event (``agent/media``)."""

    def state(self, changes: Mapping[str, StateValue]) -> None:
        """Reported state changed (``{"socket": "on"}``); None removes a key."""
