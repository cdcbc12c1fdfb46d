"""The last events the agent reported, in memory, for the technician page.

The outbox forgets an event once the hub has stored it, and a technician at the device wants
to see what happened lately whether or not the hub is reachable. A small ring buffer is
enough: it is a view, not a record (the record is the hub's event log), so it starts empty
after a restart and costs a few kilobytes.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fieldhub.clock import now_ms
from fieldhub.protocol.messages import Severity

__all__ = ["LoggedEvent", "RecentEvents"]


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    """One reported event as the page shows it."""

    ts: int
    type: str
    severity: Severity
    message: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)


class RecentEvents:
    """The newest ``size`` events; safe to record from any thread (gpiozero's included)."""

    def __init__(self, size: int = 100) -> None:
        self._events: deque[LoggedEvent] = deque(maxlen=size)
        self._lock = threading.Lock()

    def record(
        self,
        type: str,
        severity: Severity = "info",
        message: str = "",
        data: Mapping[str, Any] | None = None,
        ts: int | None = None,
    ) -> None:
        """Remember an event (same arguments as ``Reporter.event``, plus its time)."""
        event = LoggedEvent(ts or now_ms(), type, severity, message, dict(data or {}))
        with self._lock:
            self._events.append(event)

    def newest(self, limit: int) -> list[LoggedEvent]:
        """Up to ``limit`` events, newest first."""
        with self._lock:
            events = list(self._events)
        return events[: -limit - 1 : -1] if limit > 0 else []
