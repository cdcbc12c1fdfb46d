"""MQTT: the notification as JSON published on the hub's broker, through the hub's own
connection, under the notification tree (``fh/notify/<channel topic>``, see
``fieldhub.protocol.topics.notify_topic``).

Outside the device tree on purpose: the hub subscribes to ``fh/v1/#`` and would read its own
notifications back as messages of a device, and no device may read them. Delivered means the
broker acknowledged it (QoS 1); who reads it is the broker's ACL's business (docs).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from fieldhub.hub.notify.channels.base import Outcome, envelope
from fieldhub.hub.notify.records import ChannelRecord, NotificationRecord
from fieldhub.protocol.topics import notify_topic

__all__ = ["MqttSender"]

Publish = Callable[[str, bytes], Awaitable[None]]
"""Publish at QoS 1 and return once the broker acknowledged it (raises when it cannot)."""


class MqttSender:
    """Publishes through ``publish``; ``connected`` says whether trying makes sense."""

    def __init__(self, publish: Publish, connected: Callable[[], bool]) -> None:
        self._publish = publish
        self._connected = connected

    async def send(self, notification: NotificationRecord, channel: ChannelRecord) -> Outcome:
        """See :class:`~fieldhub.hub.notify.channels.base.Sender`."""
        if not self._connected():
            return Outcome(False, error="the hub is not connected to its broker")
        payload = json.dumps(envelope(notification), separators=(",", ":")).encode()
        try:
            await self._publish(notify_topic(str(channel.config["topic"])), payload)
        except ConnectionError as exc:
            return Outcome(False, error=f"broker: {exc}")
        return Outcome(True, status="puback")

    async def close(self) -> None:
        """The connection is the hub's."""
