"""The hub's in-memory view of every registered device: its labels and its action catalog
(with the catalog's details: durations, defaults, ranges).

Why it exists: a command request must know whether the caller may see the device (its site
label) and whether the device offers the action (the catalog it reported). Reading the device
row for that costs a database trip on every request (on SQLite six hand-offs to the driver's
thread, about 1.8 ms); the directory answers from memory.

It is kept exact, not cached with an expiry: this hub process writes labels (through ``Hub``'s
registry methods) and reported state (ingest commits), and each write updates the directory
after its commit. A device registered by another process (``fieldhub device add`` while the
hub runs) is taken up when the hub sees its row (``DeviceLifecycle.follow_registry``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fieldhub.hub.devices.events import DeviceAdded, DeviceChanged, DeviceEvent, DeviceRemoving
from fieldhub.hub.ingest.batch import Batch
from fieldhub.hub.store.devices import DeviceRecord
from fieldhub.protocol.actions import ACTION_CATALOG_KEY, ACTION_DETAILS_KEY

_KEYS = (ACTION_CATALOG_KEY, ACTION_DETAILS_KEY)


@dataclass(frozen=True, slots=True)
class DeviceEntry:
    """What the hub keeps in memory of one device."""

    id: str
    labels: Mapping[str, str]
    actions: Any = None
    """The action catalog the device reported (state key ``actions``), or None."""
    details: Any = None
    """What the device said of its actions beyond their types (``action_details``), or None."""

    def matches(self, labels: Mapping[str, str]) -> bool:
        """True when the device carries every one of ``labels``."""
        return all(self.labels.get(k) == v for k, v in labels.items())

    @property
    def reported(self) -> dict[str, Any]:
        """The part of the reported state the command check reads."""
        pairs = ((ACTION_CATALOG_KEY, self.actions), (ACTION_DETAILS_KEY, self.details))
        return {key: value for key, value in pairs if value is not None}


class DeviceDirectory:
    """Every registered device's labels and action catalog, by id."""

    def __init__(self) -> None:
        self._entries: dict[str, DeviceEntry] = {}

    def put(self, record: DeviceRecord) -> None:
        """Take the device as just read or written."""
        self._entries[record.id] = DeviceEntry(
            record.id,
            dict(record.labels),
            record.reported.get(ACTION_CATALOG_KEY),
            record.reported.get(ACTION_DETAILS_KEY),
        )

    def forget(self, device_id: str) -> None:
        """The device was deleted."""
        self._entries.pop(device_id, None)

    def on_device(self, event: DeviceEvent) -> None:
        """Follow the registry (lifecycle events)."""
        if isinstance(event, DeviceAdded | DeviceChanged):
            self.put(event.record)
        elif isinstance(event, DeviceRemoving):
            self.forget(event.device_id)

    def get(self, device_id: str) -> DeviceEntry | None:
        """The device, or None when it is not registered."""
        return self._entries.get(device_id)

    def matching(self, labels: Mapping[str, str]) -> list[DeviceEntry]:
        """Devices carrying every one of ``labels`` (all devices when empty), ordered by id."""
        return sorted(
            (entry for entry in self._entries.values() if entry.matches(labels)),
            key=lambda entry: entry.id,
        )

    def committed(self, batch: Batch) -> None:
        """Follow the reported catalogs (and their details) of a batch ingest has committed (in
        seq order, as the store merged them); one reported as null is gone."""
        for device_id, state in sorted(batch.states, key=lambda item: item[1].seq):
            changed = state.state
            entry = self._entries.get(device_id)
            if entry is None or not any(key in changed for key in _KEYS):
                continue
            self._entries[device_id] = DeviceEntry(
                entry.id,
                entry.labels,
                changed.get(ACTION_CATALOG_KEY, entry.actions),
                changed.get(ACTION_DETAILS_KEY, entry.details),
            )
