"""Presence: online, offline or stale, derived from status messages, last wills and data.

Never typed in by anyone: a device is ``online`` after it says so (retained status) or sends
data, ``offline`` when it says so or its last will fires, and ``stale`` when it has been silent
longer than ``stale_after_s`` although it never said goodbye. Each change carries the time it
happened and why, and is recorded as a ``presence.*`` event.

What the hub believes about connections holds only while its own broker connection holds. A
hub that starts (on a restored data folder, after a crash, next to a broker that restarted) or
whose broker connection drops cannot tell which devices are still connected: a device that
died meanwhile left no last will with a broker that was down or is new. So on every start and
every reconnection the hub *doubts* every device it believes connected, and keeps it online
only if the broker confirms it within ``confirm_within_s`` of the new connection: its retained
status (delivered right after the subscription), a status it publishes on reconnecting, or
data. The others go ``offline`` with a reason saying so.

Behind a gateway (``devices/family.py``), a child's presence is what its gateway says of it
(the gateway publishes each child's status), and only while the gateway itself is there: when
the gateway goes offline or stale, its children read ``unreachable`` ("via gw-1: gateway
offline"), not offline, because nobody knows how they are. A child's own status that arrives
while its gateway is away (a retained one at hub start) changes nothing of that; the gateway,
once back, says how each child is. ``unreachable`` raises no alarm of its own (the gateway's
outage is reported once, on the gateway: ``alarms/outages.py``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from fieldhub.clock import now_ms
from fieldhub.hub.devices.events import DeviceAdded, DeviceEvent, DeviceRemoving
from fieldhub.hub.devices.family import Family
from fieldhub.hub.ingest.batch import PresenceChange
from fieldhub.protocol import Status

ONLINE, OFFLINE, STALE, UNKNOWN = "online", "offline", "stale", "unknown"
UNREACHABLE = "unreachable"
_GATEWAY_AWAY = frozenset({OFFLINE, STALE})


@dataclass(slots=True)
class DevicePresence:
    """What the hub currently believes about one device."""

    presence: str = UNKNOWN
    connected: bool | None = None
    since: int | None = None
    reason: str = ""


class PresenceTracker:
    """Keeps presence of all devices in memory and reports every change to ``record``.

    Args:
        record: called with every change (the hub stores it and tells the command service).
        stale_after_s: silence after which an online device is ``stale``.
        confirm_within_s: after the broker connection is (re)established, how long a doubted
            device has to be confirmed before it is shown ``offline`` (see the module doc).
        family: gateways and their children (children of an absent gateway are unreachable).
    """

    def __init__(
        self,
        record: Callable[[PresenceChange], None],
        stale_after_s: float,
        confirm_within_s: float = 5.0,
        family: Family | None = None,
    ) -> None:
        self._record = record
        self._family = family or Family()
        self._stale_after = stale_after_s
        self._confirm_within = confirm_within_s
        self._devices: dict[str, DevicePresence] = {}
        self._last_seen: dict[str, float] = {}  # monotonic seconds of the last accepted data
        self._clock = time.monotonic()
        # Believed connected, not yet confirmed since the hub last (re)connected to the broker.
        self._doubted: set[str] = set()
        self._doubt_reason = ""
        self._confirm_by: float | None = None  # monotonic; None while not (re)connected
        # Shown offline because they were not confirmed, not because they said so: their data
        # alone brings them back (a device that never publishes a status would stay offline).
        self._presumed_offline: set[str] = set()

    def load(self, device_id: str, state: DevicePresence) -> None:
        """Start from what the store remembers (hub restart)."""
        self._devices[device_id] = state
        if state.presence == ONLINE:
            self._last_seen[device_id] = self._clock

    def forget(self, device_id: str) -> None:
        """The device was deleted."""
        self._devices.pop(device_id, None)
        self._last_seen.pop(device_id, None)
        self._doubted.discard(device_id)
        self._presumed_offline.discard(device_id)

    def on_device(self, event: DeviceEvent) -> None:
        """A new device starts where its row says (unknown), unless another hub process has
        told of it already (``elsewhere``: newer than a row read before that process's
        commit); a deleted one is forgotten."""
        if isinstance(event, DeviceAdded) and event.record.id not in self._devices:
            record = event.record
            self.load(
                record.id,
                DevicePresence(
                    record.presence, record.connected, record.presence_since, record.presence_reason
                ),
            )
        elif isinstance(event, DeviceRemoving):
            self.forget(event.device_id)

    def get(self, device_id: str) -> DevicePresence:
        """Current presence of ``device_id`` (``unknown`` if never heard of)."""
        return self._devices.get(device_id) or DevicePresence()

    def counts(self) -> dict[str, int]:
        """How many devices are in each presence state."""
        result = {ONLINE: 0, OFFLINE: 0, STALE: 0, UNKNOWN: 0, UNREACHABLE: 0}
        for state in self._devices.values():
            result[state.presence] = result.get(state.presence, 0) + 1
        return result

    def doubt(self, reason: str) -> None:
        """The hub can no longer vouch for any connection: it has just started, or its broker
        connection dropped. Every device believed connected (online or stale) must be
        confirmed again after :meth:`subscribed`, or it goes offline with ``reason``."""
        self._doubted = {
            device_id
            for device_id, state in self._devices.items()
            if state.presence in (ONLINE, STALE)
        }
        self._doubt_reason = reason
        self._confirm_by = None  # no confirmation can come before the broker is back

    def subscribed(self) -> None:
        """The broker connection is up and the subscriptions are sent: the retained statuses
        come now, and reconnecting devices say they are back. What is still doubted
        ``confirm_within_s`` from now goes offline (at the next clock tick)."""
        if self._doubted:
            self._confirm_by = time.monotonic() + self._confirm_within

    def on_status(self, device_id: str, status: Status) -> None:
        """A (possibly retained) status message or last will arrived."""
        self._doubted.discard(device_id)
        self._presumed_offline.discard(device_id)
        parent = self._family.parent(device_id)
        if parent is not None and self.get(parent).presence in _GATEWAY_AWAY:
            return  # an old word about a child of an absent gateway: still unreachable
        if status.online:
            self._last_seen[device_id] = self._clock
            self._change(device_id, ONLINE, status.reason or "connected", connected=True)
        else:
            self._last_seen.pop(device_id, None)
            self._change(device_id, OFFLINE, status.reason or "disconnected", connected=False)

    def touch(self, device_id: str) -> None:
        """Data from ``device_id`` was accepted: it is fresh (hot path: keep it cheap)."""
        self._last_seen[device_id] = self._clock
        if self._doubted:
            self._doubted.discard(device_id)
        state = self._devices.get(device_id)
        if state is None or state.presence in (UNKNOWN, STALE):
            reason = "data resumed" if state and state.presence == STALE else "data received"
            self._change(device_id, ONLINE, reason, connected=state.connected if state else None)
        elif state.presence == OFFLINE and device_id in self._presumed_offline:
            self._presumed_offline.discard(device_id)
            self._change(device_id, ONLINE, "data received", connected=None)

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

    def check_confirmed(self) -> None:
        """Once the time to confirm is over, show the devices still doubted as offline."""
        if self._confirm_by is None or time.monotonic() < self._confirm_by:
            return
        doubted, self._doubted, self._confirm_by = self._doubted, set(), None
        for device_id in sorted(doubted):
            state = self._devices.get(device_id)
            if state is not None and state.presence in (ONLINE, STALE):
                self._last_seen.pop(device_id, None)
                self._presumed_offline.add(device_id)
                self._change(device_id, OFFLINE, self._doubt_reason, connected=False)

    def elsewhere(self, fresh: Iterable[str], changes: Iterable[PresenceChange]) -> None:
        """What another hub process committed (``cluster/feed.py``): the devices it heard
        from are fresh here too, and the changes it recorded are taken as they are, never
        recorded again.

        A device gone online elsewhere starts its silence here, as with a status heard here
        (:meth:`on_status`): the stale sweep runs in one process only and looks only at the
        devices whose silence it times, and the process that heard the status may not be the
        one sweeping (this one may even have refused the status, from a device registered
        elsewhere that it had not adopted yet)."""
        for change in changes:
            device_id = change.device_id
            state = self._devices.setdefault(device_id, DevicePresence())
            state.presence, state.connected = change.presence, change.connected
            state.since, state.reason = change.since, change.reason
            self._doubted.discard(device_id)
            self._presumed_offline.discard(device_id)
            if change.presence == ONLINE:
                self._last_seen[device_id] = self._clock
            else:
                self._last_seen.pop(device_id, None)
        for device_id in fresh:
            self._last_seen[device_id] = self._clock

    async def run(
        self, interval_s: float = 1.0, *, sweeps: Callable[[], bool] = lambda: True
    ) -> None:
        """Advance the coarse clock, look for unconfirmed devices and (while ``sweeps()``
        says this process does the cluster's singleton work, ``cluster/singletons.py``) for
        stale ones, forever. The clock advances everywhere: data touched here must not look
        old to the sweep once this process takes it over."""
        while True:
            await asyncio.sleep(interval_s)
            self._clock = time.monotonic()
            if sweeps():
                self.check_stale()
            self.check_confirmed()

    def _change(self, device_id: str, presence: str, reason: str, connected: bool | None) -> None:
        state = self._devices.setdefault(device_id, DevicePresence())
        if state.presence == presence and state.connected == connected:
            return
        state.presence, state.connected, state.reason = presence, connected, reason
        state.since = now_ms()
        self._record(PresenceChange(device_id, presence, state.since, reason, connected))
        if presence in _GATEWAY_AWAY:
            for child in sorted(self._family.children(device_id)):
                self._last_seen.pop(child, None)
                self._doubted.discard(child)
                self._change(child, UNREACHABLE, f"via {device_id}: gateway {presence}", None)
