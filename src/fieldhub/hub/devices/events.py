"""What happens to a device in the registry, as the parts of the hub are told of it.

Published by ``devices/lifecycle.py`` after the change is stored (``DeviceRemoving`` before);
each part that keeps something per device subscribes with an ``on_device`` method. Values
only, so any wing can import them without importing the lifecycle's dependencies.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fieldhub.hub.store.devices import DeviceRecord

__all__ = [
    "DeviceAdded",
    "DeviceChanged",
    "DeviceEvent",
    "DeviceListener",
    "DeviceRemoved",
    "DeviceRemoving",
]


@dataclass(frozen=True, slots=True)
class DeviceAdded:
    """A device joined the registry (created, claimed, or registered by another process)."""

    record: DeviceRecord


@dataclass(frozen=True, slots=True)
class DeviceChanged:
    """A device's name, labels or attributes changed (labels may move it between sites)."""

    record: DeviceRecord


@dataclass(frozen=True, slots=True)
class DeviceRemoving:
    """A device is about to be deleted: accept nothing more from it or for it."""

    device_id: str


@dataclass(frozen=True, slots=True)
class DeviceRemoved:
    """A device and its data are gone: forget what is still remembered of it."""

    device_id: str


DeviceEvent = DeviceAdded | DeviceChanged | DeviceRemoving | DeviceRemoved
DeviceListener = Callable[[DeviceEvent], None]
