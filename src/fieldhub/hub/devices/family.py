"""Gateways and their children: who speaks for whom, in memory.

A child (a LAN controller behind a gateway, docs/gateway.md) has no broker credentials: its
gateway publishes its reports on the child's own topics and takes its commands. So the
broker must let the gateway use its children's subtrees, and presence must know that a
child is only as reachable as its gateway. Both ask this map, kept current from the
registry's device events (``devices/events.py``), and the broker is told of every change
(``on_change``) so that its ACL follows the registry.
"""

from __future__ import annotations

from collections.abc import Callable

from fieldhub.hub.devices.events import DeviceAdded, DeviceChanged, DeviceEvent, DeviceRemoved

__all__ = ["Family"]

_NONE: frozenset[str] = frozenset()


class Family:
    """Parent of each child, children of each gateway.

    Args:
        on_change: called with a gateway and its children whenever they change (the broker's
            ACL for that gateway).
    """

    def __init__(self, on_change: Callable[[str, frozenset[str]], None] | None = None) -> None:
        self._parent: dict[str, str] = {}
        self._children: dict[str, frozenset[str]] = {}
        self._on_change = on_change

    def parent(self, device_id: str) -> str | None:
        """The gateway ``device_id`` speaks through, or None."""
        return self._parent.get(device_id)

    def children(self, device_id: str) -> frozenset[str]:
        """The children of gateway ``device_id`` (empty for any other device)."""
        return self._children.get(device_id, _NONE)

    def on_device(self, event: DeviceEvent) -> None:
        """Follow the registry: a child added or removed changes its gateway's children."""
        if isinstance(event, DeviceAdded | DeviceChanged):
            parent = event.record.parent_id
            if parent is not None and self._parent.get(event.record.id) != parent:
                self._parent[event.record.id] = parent
                self._set(parent, self.children(parent) | {event.record.id})
        elif isinstance(event, DeviceRemoved):
            parent = self._parent.pop(event.device_id, None)
            if parent is not None:
                self._set(parent, self.children(parent) - {event.device_id})
            self._children.pop(event.device_id, None)

    def _set(self, parent: str, children: frozenset[str]) -> None:
        if children:
            self._children[parent] = children
        else:
            self._children.pop(parent, None)
        if self._on_change is not None:
            self._on_change(parent, children)
