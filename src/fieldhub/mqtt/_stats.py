"""Counters and log throttling of the MQTT client: drops are counted, and logged sparingly."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Final

__all__ = ["MqttStats"]

_LOG_EVERY_S: Final = 60.0


@dataclass(slots=True)
class MqttStats:
    """Counters of one client, for logs and ``/metrics``: drops are counted, not only logged.

    Attributes:
        received: PUBLISH packets handed to ``on_message``.
        callback_errors: of those, how many made ``on_message`` raise.
        invalid_topics: PUBLISH packets skipped because the topic was not UTF-8 (still acked).
        dropped_qos0: QoS 0 publishes dropped: no connection, or over 1 MiB already waiting.
        dropped_qos1: QoS 1 publishes dropped, the oldest first, because the queue was full.
        writes: ``transport.write`` calls, i.e. send syscalls at most; compare with
            ``received`` to see how well PUBACKs coalesce.
        connections: successful connections, the first one included.
    """

    received: int = 0
    callback_errors: int = 0
    invalid_topics: int = 0
    dropped_qos0: int = 0
    dropped_qos1: int = 0
    writes: int = 0
    connections: int = 0


class _OncePerMinute:
    """Says when to log a recurring problem again: once per key per minute, with a count of
    what was left out meanwhile, so a broken callback cannot flood the log at 10k msg/s."""

    def __init__(self) -> None:
        self._last: dict[object, float] = {}
        self._skipped: dict[object, int] = {}

    def due(self, key: object) -> int | None:
        """Return how many were skipped since the last log if ``key`` is due now, else None."""
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < _LOG_EVERY_S:
            self._skipped[key] = self._skipped.get(key, 0) + 1
            return None
        self._last[key] = now
        return self._skipped.pop(key, 0)
