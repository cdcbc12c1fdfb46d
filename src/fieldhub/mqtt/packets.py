"""MQTT 3.1.1 packets: pure encode and decode functions, and the package's errors.

Only what a client needs: it writes CONNECT, SUBSCRIBE, PUBLISH, PUBACK, PINGREQ and
DISCONNECT, and reads CONNACK, SUBACK, PUBLISH (QoS 0 and 1), PUBACK and PINGRESP. Nothing here
touches a socket, so every byte layout is unit-tested on its own; ``client.py`` does the I/O.

Decoders work on a buffer and an offset rather than on slices, so the client's read loop can
parse many packets out of one ``data_received`` chunk without copying it.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

__all__ = [
    "CONNACK",
    "CONNECT_REFUSALS",
    "DISCONNECT",
    "MAX_PACKET_ID",
    "MAX_REMAINING_LENGTH",
    "PINGREQ",
    "PINGRESP",
    "PUBACK",
    "PUBLISH",
    "SUBACK",
    "SUBACK_FAILURE",
    "ConnectRefused",
    "MqttError",
    "MqttProtocolError",
    "SubscribeRefused",
    "Will",
    "check_filter",
    "check_topic",
    "connect",
    "decode_remaining_length",
    "encode_remaining_length",
    "parse_connack",
    "parse_puback",
    "parse_publish",
    "parse_suback",
    "puback",
    "publish",
    "read_fixed_header",
    "subscribe",
]

# Packet types: the high nibble of the first byte (MQTT 3.1.1 §2.2.1).
CONNACK: Final = 2
PUBLISH: Final = 3
PUBACK: Final = 4
SUBACK: Final = 9
PINGRESP: Final = 13

PINGREQ: Final = b"\xc0\x00"
DISCONNECT: Final = b"\xe0\x00"

MAX_REMAINING_LENGTH: Final = 268_435_455
"""Four bytes of 7 bits: the largest body MQTT can express (256 MiB - 1)."""
MAX_PACKET_ID: Final = 0xFFFF
SUBACK_FAILURE: Final = 0x80

CONNECT_REFUSALS: Final[dict[int, str]] = {
    1: "unacceptable protocol version",
    2: "client identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorised",
}
"""CONNACK return codes (MQTT 3.1.1 §3.2.2.3) and what they mean, for error messages."""

_PROTOCOL_NAME: Final = b"\x00\x04MQTT"
_PROTOCOL_LEVEL: Final = 4  # 3.1.1
_MAX_STRING: Final = 0xFFFF
_PUBACK_PACK: Final = struct.Struct(">BBH").pack


class MqttError(ConnectionError):
    """Root of the MQTT client's errors; a ``ConnectionError``, so callers that handle lost
    connections already handle these."""


class MqttProtocolError(MqttError, ValueError):
    """The bytes are not MQTT 3.1.1 as this client speaks it: the connection is unusable."""


class ConnectRefused(MqttError):
    """The broker answered CONNECT with a non-zero return code.

    Attributes:
        code: the CONNACK return code (1-5 are defined, see ``CONNECT_REFUSALS``).
    """

    def __init__(self, code: int, broker: str = "the broker") -> None:
        self.code = code
        reason = CONNECT_REFUSALS.get(code, "unknown reason")
        super().__init__(f"{broker} refused the connection: {reason} (CONNACK code {code})")


class SubscribeRefused(MqttError):
    """The broker refused one or more topic filters (SUBACK return code 0x80).

    Attributes:
        filters: the refused filters, in the order they were asked for.
    """

    def __init__(self, filters: Sequence[str]) -> None:
        self.filters = list(filters)
        super().__init__(f"the broker refused the subscription to {', '.join(self.filters)}")


@dataclass(frozen=True, slots=True)
class Will:
    """The message the broker publishes for a client whose connection ends without DISCONNECT.

    Retained at QoS 1 by default: presence (DESIGN §3) wants whoever subscribes later to see
    that a device went away, not only those listening at that moment.
    """

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True

    def __post_init__(self) -> None:
        check_topic(self.topic)
        if self.qos not in (0, 1, 2):
            raise ValueError(f"Will QoS must be 0, 1 or 2, not {self.qos!r}.")


def check_topic(topic: str) -> None:
    """Raise ``ValueError`` unless ``topic`` may be published to (no wildcards, not empty)."""
    if not topic or "+" in topic or "#" in topic or "\x00" in topic:
        raise ValueError(f"Topic {topic!r} is empty or contains a wildcard (+ #) or NUL.")


def check_filter(topic_filter: str) -> None:
    """Raise ``ValueError`` unless ``topic_filter`` is non-empty and has no NUL (the broker
    judges the rest and may refuse it in its SUBACK)."""
    if not topic_filter or "\x00" in topic_filter:
        raise ValueError(f"Topic filter {topic_filter!r} is empty or contains NUL.")


# encoding


def encode_remaining_length(n: int) -> bytes:
    """The fixed header's "remaining length": 7 bits per byte, least significant first.

    Raises:
        ValueError: ``n`` is negative or above ``MAX_REMAINING_LENGTH`` (256 MiB - 1).
    """
    if not 0 <= n <= MAX_REMAINING_LENGTH:
        raise ValueError(f"MQTT packet body of {n} bytes is outside 0..{MAX_REMAINING_LENGTH}.")
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | 0x80 if n else digit)
        if not n:
            return bytes(out)


def _string(value: str | bytes, what: str) -> bytes:
    """Two-byte big-endian length, then the bytes (UTF-8 for ``str``)."""
    raw = value.encode() if isinstance(value, str) else value
    if len(raw) > _MAX_STRING:
        raise ValueError(f"MQTT {what} is {len(raw)} bytes long; at most {_MAX_STRING} fit.")
    return len(raw).to_bytes(2, "big") + raw


def _packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + encode_remaining_length(len(body)) + body


def connect(
    client_id: str,
    *,
    clean_session: bool = True,
    keepalive_s: int = 30,
    username: str | None = None,
    password: str | None = None,
    will: Will | None = None,
) -> bytes:
    """CONNECT (§3.1) for protocol level 4 (MQTT 3.1.1).

    Raises:
        ValueError: a password without a user name (§3.1.2.9 forbids it), a keep-alive outside
            0..65535 s, or a string too long for MQTT.
    """
    if password is not None and username is None:
        raise ValueError("MQTT 3.1.1 allows a password only together with a user name.")
    if not 0 <= keepalive_s <= 0xFFFF:
        raise ValueError(f"Keep-alive must be 0..65535 s, not {keepalive_s!r}.")
    flags = 0x02 if clean_session else 0
    payload = [_string(client_id, "client id")]
    if will is not None:
        flags |= 0x04 | will.qos << 3 | (0x20 if will.retain else 0)
        payload += (_string(will.topic, "will topic"), _string(will.payload, "will payload"))
    if username is not None:
        flags |= 0x80
        payload.append(_string(username, "user name"))
    if password is not None:
        flags |= 0x40
        payload.append(_string(password, "password"))
    header = _PROTOCOL_NAME + bytes([_PROTOCOL_LEVEL, flags]) + keepalive_s.to_bytes(2, "big")
    return _packet(0x10, header + b"".join(payload))


def subscribe(packet_id: int, filters: Sequence[tuple[str, int]]) -> bytes:
    """SUBSCRIBE (§3.8) for ``(filter, qos)`` pairs, in one packet."""
    if not filters:
        raise ValueError("SUBSCRIBE needs at least one topic filter.")
    body = [packet_id.to_bytes(2, "big")]
    for topic_filter, qos in filters:
        body += (_string(topic_filter, "topic filter"), bytes([qos]))
    return _packet(0x82, b"".join(body))


def publish(
    topic: str,
    payload: bytes,
    qos: int = 0,
    retain: bool = False,
    packet_id: int = 0,
    dup: bool = False,
) -> bytes:
    """PUBLISH (§3.3). ``packet_id`` is required (1..65535) for QoS 1 and ignored for QoS 0.

    Raises:
        ValueError: a topic with wildcards, QoS other than 0/1, a missing packet id, or a
            packet larger than MQTT allows.
    """
    check_topic(topic)
    first = 0x30 | qos << 1 | (0x08 if dup else 0) | (0x01 if retain else 0)
    name = _string(topic, "topic")
    if qos == 0:
        return bytes([first]) + encode_remaining_length(len(name) + len(payload)) + name + payload
    if qos != 1:
        raise ValueError(f"This client publishes at QoS 0 or 1, not {qos!r}.")
    if not 1 <= packet_id <= MAX_PACKET_ID:
        raise ValueError(f"QoS 1 needs a packet id in 1..65535, not {packet_id!r}.")
    head = bytes([first]) + encode_remaining_length(len(name) + 2 + len(payload))
    return head + name + packet_id.to_bytes(2, "big") + payload


def puback(packet_id: int) -> bytes:
    """PUBACK (§3.4) for a received QoS 1 PUBLISH."""
    return _PUBACK_PACK(0x40, 2, packet_id)


# decoding


def read_fixed_header(data: bytes, pos: int = 0) -> tuple[int, int, int] | None:
    """Locate the packet starting at ``data[pos]``: ``(first_byte, body_start, body_end)``.

    Returns ``None`` when ``data`` ends before the whole packet does (a stream reader keeps
    the rest and waits for more); ``body_end`` is then beyond ``len(data)`` or unknown.

    Raises:
        MqttProtocolError: the remaining length runs past four bytes (more than 256 MiB).
    """
    size = len(data)
    if size - pos < 2:
        return None
    length = data[pos + 1]
    start = pos + 2
    if length & 0x80:
        length = length & 0x7F
        shift = 7
        while True:
            if start == size:
                return None
            if shift > 21:
                raise MqttProtocolError(
                    "MQTT remaining length longer than 4 bytes (over 256 MiB): "
                    f"{bytes(data[pos + 1 : start + 1]).hex()}"
                )
            digit = data[start]
            start += 1
            length |= (digit & 0x7F) << shift
            if not digit & 0x80:
                break
            shift += 7
    end = start + length
    if end > size:
        return None
    return data[pos], start, end


def decode_remaining_length(data: bytes, offset: int = 0) -> tuple[int, int]:
    """Decode a complete remaining length at ``data[offset]``: ``(value, next_offset)``.

    Raises:
        MqttProtocolError: the bytes end inside the number, or it runs past four bytes.
    """
    value = shift = 0
    pos = offset
    while True:
        if pos == len(data):
            raise MqttProtocolError(
                f"MQTT remaining length truncated after {pos - offset} byte(s): "
                f"{bytes(data[offset:pos]).hex() or '(nothing)'}"
            )
        if pos - offset == 4:
            raise MqttProtocolError(
                "MQTT remaining length longer than 4 bytes (over 256 MiB): "
                f"{bytes(data[offset : pos + 1]).hex()}"
            )
        digit = data[pos]
        pos += 1
        value |= (digit & 0x7F) << shift
        if not digit & 0x80:
            return value, pos
        shift += 7


def parse_publish(data: bytes, first: int, start: int, end: int) -> tuple[bytes, int, int]:
    """Split the PUBLISH body ``data[start:end]``: ``(topic_bytes, packet_id, payload_start)``.

    ``packet_id`` is 0 at QoS 0. The topic stays bytes: what to do with invalid UTF-8 is the
    caller's policy (the client still acknowledges such a message, so the broker moves on).

    Raises:
        MqttProtocolError: QoS 2 or 3 (this client never subscribes at QoS 2), or a topic or packet
            id that does not fit in the body.
    """
    qos = (first >> 1) & 3
    if end - start < 2:
        raise MqttProtocolError(f"PUBLISH body of {end - start} bytes has no topic length.")
    topic_end = start + 2 + (data[start] << 8 | data[start + 1])
    if qos == 0:
        payload_start = topic_end
    elif qos == 1:
        payload_start = topic_end + 2
    else:
        raise MqttProtocolError(f"PUBLISH at QoS {qos}; this client subscribes at QoS 0 or 1 only.")
    if payload_start > end:
        raise MqttProtocolError(f"PUBLISH topic and packet id overrun its {end - start}-byte body.")
    packet_id = data[topic_end] << 8 | data[topic_end + 1] if qos else 0
    return bytes(data[start + 2 : topic_end]), packet_id, payload_start


def parse_connack(body: bytes) -> tuple[bool, int]:
    """CONNACK body: ``(session_present, return_code)``."""
    if len(body) != 2:
        raise MqttProtocolError(f"CONNACK body must be 2 bytes, not {len(body)}.")
    return bool(body[0] & 1), body[1]


def parse_puback(body: bytes) -> int:
    """PUBACK body: the packet id acknowledged."""
    if len(body) != 2:
        raise MqttProtocolError(f"PUBACK body must be 2 bytes, not {len(body)}.")
    return body[0] << 8 | body[1]


def parse_suback(body: bytes) -> tuple[int, bytes]:
    """SUBACK body: ``(packet_id, return_codes)``, one code per filter (0x80 = refused)."""
    if len(body) < 3:
        raise MqttProtocolError(f"SUBACK body must be at least 3 bytes, not {len(body)}.")
    codes = bytes(body[2:])
    if any(code not in (0, 1, 2, SUBACK_FAILURE) for code in codes):
        raise MqttProtocolError(f"SUBACK has an undefined return code: {codes.hex()}")
    return body[0] << 8 | body[1], codes
