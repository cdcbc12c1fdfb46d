"""Counters of the MQTT client: drops are counted, not only logged."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MqttStats"]


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
        last_error: why the last connection attempt failed (a TLS refusal names its reason:
            ``expired``, ``untrusted``, ...); empty once connected.
    """

    received: int = 0
    callback_errors: int = 0
    invalid_topics: int = 0
    dropped_qos0: int = 0
    dropped_qos1: int = 0
    writes: int = 0
    connections: int = 0
    last_error: str = ""
