"""The MQTT 3.1.1 rules a client's packets must keep, checked before amqtt parses them.

amqtt 0.12 parses what a client sends leniently: it stores a QoS 1 PUBLISH with packet id 0,
takes a will of QoS 3 it later cannot send, reads past the end of a packet whose lengths
disagree, logs and *skips* packets it cannot parse (and from then on reads the stream out of
step), and keeps the connection open after nearly every protocol violation. Mosquitto closes
the connection on all of them, as the specification says it must.

So the embedded broker reads every packet whole (:func:`read_packet`) and hands it to amqtt
only after :func:`check_connect` (the first packet) or :func:`check` (every later one) found
nothing wrong; on a :class:`Violation` the connection is closed (MQTT-4.8.0-1: on every
protocol violation). Each check cites the normative statement of MQTT 3.1.1 it enforces
(``MQTT-3.3.2-2``), or the section that states the rule without numbering it
(``MQTT-2.2.1``: packet types, ``MQTT-2.2.3``: lengths, ``MQTT-1.5.3``: control characters).
The checks are pure functions of the bytes, about 5 µs for a telemetry PUBLISH: cheap enough
for every packet on the event loop.

What is *not* checked here is left to those who know: who may connect (``admission``), and
which topics a client may use (the access policy, in ``embedded``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

__all__ = [
    "MAX_PACKET_BYTES",
    "UNACCEPTABLE_PROTOCOL_VERSION",
    "Violation",
    "check",
    "check_connect",
    "read_packet",
]

MAX_PACKET_BYTES = 268_435_455  # the largest remaining length four bytes can encode (§2.2.3)
UNACCEPTABLE_PROTOCOL_VERSION = 1  # CONNACK return code of MQTT 3.1.1 §3.2.2.3

_CONNECT, _PUBLISH, _PUBREL, _SUBSCRIBE, _UNSUBSCRIBE = 1, 3, 6, 8, 10
_PUBACK, _PUBREC, _PUBCOMP, _PINGREQ, _DISCONNECT = 4, 5, 7, 12, 14
# MQTT-2.2.2-1/-2: the flag bits of every packet type a client may send, but PUBLISH's.
_FLAGS = {
    _CONNECT: 0,
    _PUBACK: 0,
    _PUBREC: 0,
    _PUBREL: 2,
    _PUBCOMP: 0,
    _SUBSCRIBE: 2,
    _UNSUBSCRIBE: 2,
    _PINGREQ: 0,
    _DISCONNECT: 0,
}
_ACKS = (_PUBACK, _PUBREC, _PUBREL, _PUBCOMP)
_PROTOCOL, _LEVEL = b"MQTT", 4  # MQTT 3.1.1, the one protocol this broker speaks
_PROTOCOLS = frozenset({_PROTOCOL, b"MQIsdp"})  # and the name of the 3.1 it replaced
# Control characters a UTF-8 string SHOULD NOT hold, which the receiver MAY refuse
# (MQTT 3.1.1 §1.5.3); Mosquitto refuses them, and so does fieldhub: they have no place in a
# topic and could forge lines in a log.
_CONTROL = frozenset(chr(c) for c in (*range(0x01, 0x20), *range(0x7F, 0xA0)))


@dataclass(frozen=True, slots=True)
class Violation:
    """A broken rule: which one (``MQTT-3.3.2-2``, for counting), and what was wrong (for the
    log). ``connack`` is the return code to answer a CONNECT with before closing, when the
    specification asks for one; 0 means close without an answer."""

    rule: str
    why: str
    connack: int = 0


class _Malformed(Exception):
    """Raised inside the checks; becomes the :class:`Violation` it carries."""

    def __init__(self, rule: str, why: str) -> None:
        super().__init__(why)
        self.violation = Violation(rule, why)


class _Unsupported(Exception):
    """A sound CONNECT for a protocol level this broker does not speak."""


async def read_packet(reader: asyncio.StreamReader, limit: int = MAX_PACKET_BYTES) -> bytes:
    """The next packet from ``reader``, whole: fixed header, remaining length and body.

    Raises:
        asyncio.IncompleteReadError: the connection ended, also in the middle of a packet.
        ValueError: the remaining length takes more than four bytes (MQTT 3.1.1 §2.2.3), or
            exceeds ``limit``; the text says which.
    """
    header = bytearray(await reader.readexactly(1))
    length, multiplier = 0, 1
    for _ in range(4):
        byte = (await reader.readexactly(1))[0]
        header.append(byte)
        length += (byte & 0x7F) * multiplier
        multiplier *= 128
        if not byte & 0x80:
            break
    else:
        raise ValueError("remaining length longer than four bytes")
    if length > limit:
        raise ValueError(f"packet of {length} bytes, more than the {limit} allowed")
    return bytes(header) + await reader.readexactly(length)


def check_connect(packet: bytes) -> Violation | None:
    """What is wrong with ``packet`` as a client's first packet; None if it is a sound CONNECT.

    Whether its client may connect is not judged here (``admission`` does that).
    """
    if packet[0] >> 4 != _CONNECT:
        return Violation("MQTT-3.1.0-1", f"first packet of type {packet[0] >> 4}, not CONNECT")
    try:
        _check_connect(packet)
    except _Malformed as exc:
        return exc.violation
    except _Unsupported as exc:
        return Violation("MQTT-3.1.2-2", str(exc), UNACCEPTABLE_PROTOCOL_VERSION)
    return None


def check(packet: bytes) -> Violation | None:
    """What is wrong with ``packet``, sent by a client after its CONNECT; None if nothing."""
    kind, flags = packet[0] >> 4, packet[0] & 0x0F
    try:
        if kind == _CONNECT:
            raise _Malformed("MQTT-3.1.0-2", "a second CONNECT")
        if kind == _PUBLISH:
            _check_publish(flags, _Body(packet))
            return None
        if kind not in _FLAGS:
            raise _Malformed("MQTT-2.2.1", f"packet type {kind}, which a client may not send")
        if flags != _FLAGS[kind]:
            raise _Malformed("MQTT-2.2.2-2", f"packet type {kind} with flags {flags:#06b}")
        body = _Body(packet)
        if kind in _ACKS:
            _packet_id(body)
        elif kind == _SUBSCRIBE:
            _check_subscribe(body)
        elif kind == _UNSUBSCRIBE:
            _check_unsubscribe(body)
        body.end()
    except _Malformed as exc:
        return exc.violation
    return None


class _Body:
    """The bytes after a packet's fixed header, read front to back."""

    def __init__(self, packet: bytes) -> None:
        start = 1
        while packet[start] & 0x80:
            start += 1
        self._data = packet
        self._at = start + 1

    def take(self, n: int) -> bytes:
        end = self._at + n
        if end > len(self._data):
            raise _Malformed("MQTT-2.2.3", "a field runs past the end of the packet")
        data, self._at = self._data[self._at : end], end
        return data

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def binary(self) -> bytes:
        return self.take(self.u16())

    def string(self, what: str) -> str:
        """A UTF-8 encoded string (§1.5.3)."""
        raw = self.binary()
        try:
            text = raw.decode("utf-8")  # refuses surrogates and overlong forms: MQTT-1.5.3-1
        except UnicodeDecodeError:
            raise _Malformed("MQTT-1.5.3-1", f"{what} is not valid UTF-8") from None
        if "\0" in text:
            raise _Malformed("MQTT-1.5.3-2", f"{what} holds U+0000")
        if not _CONTROL.isdisjoint(text):
            raise _Malformed("MQTT-1.5.3", f"{what} holds a control character")
        return text

    @property
    def left(self) -> int:
        return len(self._data) - self._at

    def end(self) -> None:
        if self.left:
            raise _Malformed("MQTT-2.2.3", f"{self.left} bytes after the end of the packet")


def _packet_id(body: _Body) -> int:
    packet_id = body.u16()
    if packet_id == 0:
        raise _Malformed("MQTT-2.3.1-1", "packet identifier 0")
    return packet_id


def _check_connect(packet: bytes) -> None:
    if packet[0] & 0x0F:
        raise _Malformed("MQTT-2.2.2-2", f"CONNECT with flags {packet[0] & 0x0F:#06b}")
    body = _Body(packet)
    name = body.binary()  # compared as bytes: anything else is refused, decodable or not
    level = body.u8()
    if name not in _PROTOCOLS:
        raise _Malformed("MQTT-3.1.2-1", f"protocol name {name!r}")
    if name != _PROTOCOL or level != _LEVEL:  # MQTT-3.1.2-2: answered, then closed
        raise _Unsupported(f"protocol {name!r} level {level}; this broker speaks MQTT 3.1.1")
    flags = body.u8()
    if flags & 0x01:
        raise _Malformed("MQTT-3.1.2-3", "CONNECT reserved flag set")
    will, will_qos, will_retain = flags & 0x04, (flags >> 3) & 0x03, flags & 0x20
    username, password = flags & 0x80, flags & 0x40
    if will_qos == 3:
        raise _Malformed("MQTT-3.1.2-14", "will QoS 3")
    if not will and (will_qos or will_retain):
        raise _Malformed("MQTT-3.1.2-11", "will QoS or retain set without a will")
    if password and not username:
        raise _Malformed("MQTT-3.1.2-22", "password without user name")
    body.u16()  # keep alive
    body.string("client id")
    if will:
        _check_topic(body.string("will topic"), "will topic")
        body.binary()
    if username:
        body.string("user name")
    if password:
        body.binary()
    body.end()


def _check_publish(flags: int, body: _Body) -> None:
    qos = (flags >> 1) & 0x03
    if qos == 3:
        raise _Malformed("MQTT-3.3.1-4", "PUBLISH with QoS 3")
    if qos == 0 and flags & 0x08:
        raise _Malformed("MQTT-3.3.1-2", "PUBLISH with DUP set on QoS 0")
    _check_topic(body.string("PUBLISH topic"), "PUBLISH topic")
    if qos:
        _packet_id(body)


def _check_topic(topic: str, what: str) -> None:
    if not topic:
        raise _Malformed("MQTT-4.7.3-1", f"{what} empty")
    if "+" in topic or "#" in topic:
        raise _Malformed("MQTT-3.3.2-2", f"{what} holds a wildcard")


def _check_filter(topic_filter: str) -> None:
    if not topic_filter:
        raise _Malformed("MQTT-4.7.3-1", "topic filter empty")
    levels = topic_filter.split("/")
    for n, level in enumerate(levels):
        if "#" in level and (level != "#" or n != len(levels) - 1):
            raise _Malformed("MQTT-4.7.1-2", "'#' not alone in the last level of a filter")
        if "+" in level and level != "+":
            raise _Malformed("MQTT-4.7.1-3", "'+' not alone in its level of a filter")


def _check_subscribe(body: _Body) -> None:
    _packet_id(body)
    if not body.left:
        raise _Malformed("MQTT-3.8.3-3", "SUBSCRIBE without a topic filter")
    while body.left:
        _check_filter(body.string("topic filter"))
        if body.u8() > 2:  # QoS 3, or a reserved bit set
            raise _Malformed("MQTT-3-8.3-4", "SUBSCRIBE with an invalid requested QoS")


def _check_unsubscribe(body: _Body) -> None:
    _packet_id(body)
    if not body.left:
        raise _Malformed("MQTT-3.10.3-2", "UNSUBSCRIBE without a topic filter")
    while body.left:
        _check_filter(body.string("topic filter"))
