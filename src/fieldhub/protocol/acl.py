"""Who may use which topics: the access rules of the topic tree, for both brokers.

A device may publish only its own device→hub channels and subscribe only to its own hub→device
channels; the hub may publish every device's hub→device channels (and clear its retained
status) and read the whole tree. The
sets come from ``topics.DEVICE_TO_HUB`` / ``HUB_TO_DEVICE``, so a new channel changes the ACLs
with the contract. The embedded broker asks the ``*_may_*`` functions on every packet; the
Mosquitto manager turns the ``*_filters`` lists into dynamic-security roles. Both say the same.

A gateway also speaks for its children (LAN controllers without credentials of their own,
docs/gateway.md): it may use each child's subtree as if it were its own, so the device id stays
at the third level and every consumer reads a child like any device. ``children`` is the set
the hub keeps for that gateway; for any other device it is empty.

Subscriptions are matched exactly, not by MQTT wildcard semantics: a device that asks for
``fh/v1/<id>/#`` or ``#`` is refused, because those filters also cover topics it may not read.
"""

from __future__ import annotations

from collections.abc import Collection

from fieldhub.protocol.errors import TopicError
from fieldhub.protocol.topics import (
    DEVICE_TO_HUB,
    HUB_TO_DEVICE,
    NOTIFY_PREFIX,
    PREFIX,
    Channel,
    notify_topic,
    parse_topic,
    topic_for,
)

__all__ = [
    "FORBIDDEN_IN_IDS",
    "NOTIFY_FILTER",
    "TREE_FILTER",
    "device_may_publish",
    "device_may_receive",
    "device_may_subscribe",
    "device_publish_filters",
    "device_subscribe_filters",
    "hub_may_publish",
    "hub_may_receive",
    "hub_may_subscribe",
    "hub_publish_filters",
    "is_safe_identifier",
]

TREE_FILTER = f"{PREFIX}/#"
"""Everything under the tree: what the hub subscribes to and receives."""

FORBIDDEN_IN_IDS = frozenset("+#/$\x00")
"""Characters refused in MQTT client ids and user names: wildcards, the level separator,
``$`` and NUL. An ACL pattern built from an id that held one could match other devices."""

_TREE = f"{PREFIX}/"
NOTIFY_FILTER = f"{NOTIFY_PREFIX}/#"
"""The notification tree: the hub publishes there, devices never read it."""
_NOTIFY_TREE = f"{NOTIFY_PREFIX}/"
_WILDCARD = "+"
_DEVICE_TO_HUB = frozenset(c.value for c in DEVICE_TO_HUB)
_HUB_TO_DEVICE = frozenset(c.value for c in HUB_TO_DEVICE)
# The hub also publishes on a device's ``status``, only ever an empty retained message: it
# clears the last presence a deleted device left on the broker, which would otherwise be
# replayed to every hub start as a message from an unknown device.
_HUB_PUBLISHES = (*HUB_TO_DEVICE, Channel.STATUS)
_HUB_PUBLISH_NAMES = frozenset(c.value for c in _HUB_PUBLISHES)


def is_safe_identifier(value: str) -> bool:
    """True when ``value`` (a client id or user name) holds none of ``FORBIDDEN_IN_IDS``."""
    return not FORBIDDEN_IN_IDS.intersection(value)


_NO_CHILDREN: frozenset[str] = frozenset()


def device_publish_filters(device_id: str, children: Collection[str] = ()) -> list[str]:
    """The topics (``reply`` as a one-level filter) ``device_id`` may publish to, its
    children's included."""
    return sorted(
        topic_for(owner, c, _WILDCARD if c is Channel.REPLY else "")
        for owner in (device_id, *children)
        for c in DEVICE_TO_HUB
    )


def device_subscribe_filters(device_id: str, children: Collection[str] = ()) -> list[str]:
    """The exact filters ``device_id`` may subscribe to (and the topics it may receive), its
    children's included."""
    return sorted(topic_for(owner, c) for owner in (device_id, *children) for c in HUB_TO_DEVICE)


def hub_publish_filters() -> list[str]:
    """The filters the hub may publish to: every device's hub→device channels and status,
    and the notification tree (MQTT notification channels)."""
    return sorted([*(topic_for(_WILDCARD, c) for c in _HUB_PUBLISHES), NOTIFY_FILTER])


def _channel_of(
    device_id: str, topic: str, allowed: frozenset[str], children: Collection[str]
) -> bool:
    """True when ``topic`` is ``fh/v1/<device_id or a child>/<one of allowed>`` (plus a valid
    suffix)."""
    try:
        parsed = parse_topic(topic)
    except TopicError:
        return False
    owner = parsed.device_id
    return (owner == device_id or owner in children) and parsed.channel.value in allowed


def device_may_publish(
    device_id: str, topic: str, children: Collection[str] = _NO_CHILDREN
) -> bool:
    """True when ``device_id`` may publish to ``topic`` (its own or its children's
    device→hub channels)."""
    return _channel_of(device_id, topic, _DEVICE_TO_HUB, children)


def device_may_subscribe(
    device_id: str, topic_filter: str, children: Collection[str] = _NO_CHILDREN
) -> bool:
    """True when ``topic_filter`` is exactly one of the hub→device channels of ``device_id``
    or of one of its children."""
    return _channel_of(device_id, topic_filter, _HUB_TO_DEVICE, children)


def device_may_receive(
    device_id: str, topic: str, children: Collection[str] = _NO_CHILDREN
) -> bool:
    """True when ``device_id`` may be sent a message on ``topic``."""
    return _channel_of(device_id, topic, _HUB_TO_DEVICE, children)


def hub_may_publish(topic: str) -> bool:
    """True when ``topic`` is a hub→device channel or the status of some device, or lies in
    the notification tree."""
    if topic.startswith(_NOTIFY_TREE):
        try:
            notify_topic(topic[len(_NOTIFY_TREE) :])
        except TopicError:
            return False
        return True
    try:
        parsed = parse_topic(topic)
    except TopicError:
        return False
    return parsed.channel.value in _HUB_PUBLISH_NAMES


def hub_may_subscribe(topic_filter: str) -> bool:
    """True when ``topic_filter`` lies inside the tree (wildcards allowed after the prefix)."""
    return topic_filter.startswith(_TREE)


def hub_may_receive(topic: str) -> bool:
    """True when ``topic`` lies inside the tree."""
    return topic.startswith(_TREE)
