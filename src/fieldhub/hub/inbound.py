"""Inbound: every message from the broker, routed by its topic to the part it is for.

``fh/v1/<device>/<channel>`` → telemetry, events and state (sequenced data) to ingest;
``status`` to presence; ``reply`` to commands; ``upload`` to media. Here, and only here, a
message is parsed, decoded and refused: a bad topic, an unregistered device, an invalid payload
or a reply nobody waits for is counted (``IngestStats.rejected``), logged at most once a minute
per device and reason, and answered on the device's ``reject`` channel (at most ``replies_per_s``).

Why one router: ingest used to do all of it, so "the data path" also knew presence and
commands. Now ingest sees only sequenced data of registered devices, and a new channel (media,
gateway children) is one more route here.

:meth:`Inbound.submit` runs for every message on the event loop (a synchronous callback of the
MQTT client, ``hub/bus.py``): it stays cheap, with topics parsed once and remembered.

A status from a device this process does not know yet is refused, but kept for a few seconds
(:data:`PARKED_STATUS_S`) and taken once the device is adopted (:meth:`Inbound.on_device`): a
device registered through another process (the CLI, another hub) may connect before this
process's registry sync (once a second) has adopted it, and its retained status comes once
per subscription. Lost, the device would stay ``unknown`` here although it said it is online.
Data needs no such care: the device sends it again until it is acknowledged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Final, Protocol

from fieldhub.hub.devices.events import DeviceAdded, DeviceEvent
from fieldhub.hub.devices.presence import PresenceTracker
from fieldhub.hub.ingest.pipeline import Ingest
from fieldhub.hub.ingest.stats import IngestStats
from fieldhub.logthrottle import LogThrottle, held_back
from fieldhub.protocol import (
    SEQUENCED,
    Channel,
    PayloadError,
    Reject,
    Reply,
    Status,
    TopicError,
    Upload,
    decoder_for,
    encode,
    parse_topic,
    topic_for,
)
from fieldhub.protocol.messages import Decoder

log = logging.getLogger(__name__)

_SEQUENCED: Final = frozenset(c.value for c in SEQUENCED)
_MAX_ROUTES: Final = 200_000  # distinct topics remembered; cleared and relearnt beyond that
_Route = tuple[str, Channel, str, Decoder]
PARKED_STATUS_S: Final = 10.0
"""How long the status of a device not known here yet waits for its adoption (a second or two)."""
_MAX_PARKED: Final = 1000  # statuses kept at most; the oldest goes first

ReplyHandler = Callable[[str, Reply], tuple[str, str] | None]
"""``handler(device_id, reply)``: None when taken, else ``(reason, error)`` to refuse it."""
UploadHandler = Callable[[str, Upload], None]
"""``handler(device_id, upload)``: answers on the device's ``media`` channel itself."""


class RejectPublisher(Protocol):
    """Where refusals go back to devices (the hub's MQTT connection)."""

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        """Queue one message for the broker."""


class Inbound:
    """Topic → handler for every device message; refusals counted and answered."""

    def __init__(
        self,
        ingest: Ingest,
        presence: PresenceTracker,
        replies: ReplyHandler,
        publisher: RejectPublisher,
        stats: IngestStats,
        *,
        uploads: UploadHandler,
        replies_per_s: float = 1.0,
    ) -> None:
        self._ingest = ingest
        self._uploads = uploads
        self._presence = presence
        self._replies = replies
        self._publisher = publisher
        self.stats = stats
        self._min_reply_gap_s = 1 / replies_per_s
        self._routes: dict[str, _Route] = {}
        self._throttle = LogThrottle()
        self._last_reject: dict[str, float] = {}
        self._parked: dict[str, tuple[float, Status]] = {}  # device → (monotonic, its status)

    def submit(self, topic: str, payload: bytes) -> None:
        """Take one message from the broker. Never raises for bad input: it refuses."""
        route = self._routes.get(topic)
        if route is None:
            route = self._route(topic)
            if route is None:
                return
        device_id, channel, name, decode_payload = route
        self.stats.received[name] += 1
        if not payload and channel is Channel.STATUS:
            return  # a retained status being cleared (the hub does so for deleted devices)
        if not self._ingest.accepts(device_id):
            if channel is Channel.STATUS:
                self._park(device_id, payload, decode_payload)
            self.reject(None, "unknown_device", f"message from unregistered device {device_id!r}")
            return
        try:
            message: Any = decode_payload(payload)
        except PayloadError as exc:
            self.reject(device_id, "invalid_payload", str(exc), channel)
            return
        if name in _SEQUENCED:
            self._ingest.accept(device_id, name, message)
        elif channel is Channel.STATUS:
            self._presence.on_status(device_id, message)
        elif channel is Channel.REPLY:
            refused = self._replies(device_id, message)
            if refused is not None:
                self.reject(device_id, refused[0], refused[1], channel)
        elif channel is Channel.UPLOAD:
            self._uploads(device_id, message)
        else:  # a hub → device channel: the hub never subscribes to these
            self.reject(device_id, "bad_topic", f"{channel.value} is not a device channel", channel)

    def on_device(self, event: DeviceEvent) -> None:
        """A device adopted here: the status it sent while unknown here, if recent, is taken
        now (after presence and ingest have heard of the device: register this last)."""
        if not isinstance(event, DeviceAdded):
            return
        parked = self._parked.pop(event.record.id, None)
        if parked is not None and time.monotonic() - parked[0] <= PARKED_STATUS_S:
            self._presence.on_status(event.record.id, parked[1])

    def _park(self, device_id: str, payload: bytes, decode_payload: Decoder) -> None:
        try:
            status = decode_payload(payload)
        except PayloadError:
            return  # refused as unregistered already; nothing to take later
        self._parked.pop(device_id, None)  # the newest status goes last, gone last
        if len(self._parked) >= _MAX_PARKED:
            del self._parked[next(iter(self._parked))]
        self._parked[device_id] = (time.monotonic(), status)

    def reject(
        self, device_id: str | None, reason: str, error: str, channel: Channel | None = None
    ) -> None:
        """Count a refusal, log it (throttled) and tell the device why (rate limited)."""
        self.stats.rejected[reason] += 1
        held = self._throttle.due((device_id, reason))
        if held is not None:
            log.warning("rejected: %s%s", error, held_back(held))
        if device_id is None or channel is None:
            return
        now = time.monotonic()
        if now - self._last_reject.get(device_id, -1e9) < self._min_reply_gap_s:
            return
        self._last_reject[device_id] = now
        reply = Reject(channel=channel.value, error=error[:500])
        self._publisher.publish(topic_for(device_id, Channel.REJECT), encode(reply))

    def _route(self, topic: str) -> _Route | None:
        """Parse a topic not seen before; remember it if it is one of a device's channels."""
        try:
            parsed = parse_topic(topic)
        except TopicError as exc:
            self.reject(None, "bad_topic", str(exc), None)
            return None
        if len(self._routes) >= _MAX_ROUTES:
            self._routes.clear()
        channel = parsed.channel
        route = (parsed.device_id, channel, channel.value, decoder_for(channel))
        self._routes[topic] = route
        return route
