"""Presence: online, offline or stale, derived from status messages, last wills and data.

Never typed in by anyone: a device is ``online`` after it says so (retained status) or sends
data, ``offline`` when it says so or its last will fires, and ``stale`` when it has been silent
longer than ``stale_after_s`` although it never said goodbye. Each change carries the time it
happened and why, and is recorded as a ``presence.*`` event.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from fieldhub.clock import now_ms
from fieldhub.hub.ingest.batch import PresenceChange
from fieldhub.protocol import Status

ONLINE, OFFLINE, STALE, UNKNOWN = "online", "offline", "stale", "unknown"


@dataclass(slots=True)
class DevicePresence:
    """What the hub currently believes about one device."""

    presence: str = UNKNOWN
    connected: bool | None = None
    since: int | None = None
    reason: str = ""


class PresenceTracker:
    """Keeps presence of all devices in memory and reports every change to ``record``."""

    def __init__(self, record: Callable[[PresenceChange], None], stale_after_s: float) -> None:
        self._record = record
        self._stale_after = stale_after_s
        self._devices: dict[str, DevicePresence] = {}
        self._last_seen: dict[str, float] = {}  # monotonic seconds of the last accepted data
        self._clock = time.monotonic()

    def load(self, device_id: str, state: DevicePresence) -> None:
        """Start from what the store remembers (hub restart)."""
        self._devices[device_id] = state
        if state.presence == ONLINE:
            self._last_seen[device_id] = self._clock

    def forget(self, device_id: str) -> None:
        """The device was deleted."""
        self._devices.pop(device_id, None)
        self._last_seen.pop(device_id, None)

    def get(self, device_id: str) -> DevicePresence:
        """Current presence of ``device_id`` (``unknown`` if never heard of)."""
        return self._devices.get(device_id) or DevicePresence()

    def counts(self) -> dict[str, int]:
        """How many devices are in each presence state."""
        result = {ONLINE: 0, OFFLINE: 0, STALE: 0, UNKNOWN: 0}
        for state in self._devices.values():
            result[state.presence] = result.get(state.presence, 0) + 1
        return result

    def on_status(self, device_id: str, status: Status) -> None:
        """A (possibly retained) status message or last will arrived."""
        if status.online:
            self._last_seen[device_id] = self._clock
            self._change(device_id, ONLINE, status.reason or "connected", connected=True)
        else:
            self._last_seen.pop(device_id, None)
            self._change(device_id, OFFLINE, status.reason or "disconnected", connected=False)

    def touch(self, device_id: str) -> None:
        """Data from ``device_id`` was accepted: it is fresh (hot path: keep it cheap)."""
        self._last_seen[device_id] = self._clock
        state = self._devices.get(device_id)
        if state is None or state.presence in (UNKNOWN, STALE):
            reason = "data resumed" if state and state.presence == STALE else "data received"
            self._change(device_id, ONLINE, reason, connected=state.connected if state else None)

    def check_stale(self) -> None:
        """Mark devices silent for longer than the limit as stale."""
        self._clock = now = time.monotonic()
        limit = now - self._stale_after
        for device_id, seen in list(self._last_seen.items()):
            if seen < limit:
                del self._last_seen[device_id]
                state = self._devices.get(device_id)
                if state is not None and state.presence == ONLINE:
                    silent = round(now - seen)
                    self._change(device_id, STALE, f"no data for {silent} s", state.connected)

    async def run(self, interval_s: float = 1.0) -> None:
        """Advance the coarse clock and look for stale devices, forever."""
        while True:
            await asyncio.sleep(interval_s)
            self.check_stale()

    def _change(self, device_id: str, presence: str, reason: str, connected: bool | None) -> None:
        state = self._devices.setdefault(device_id, DevicePresence())
        if state.presence == presence and state.connected == connected:
            return
        state.presence, state.connected, state.reason = presence, connected, reason
        state.since = now_ms()
        self._record(PresenceChange(device_id, presence, state.since, reason, connected))
