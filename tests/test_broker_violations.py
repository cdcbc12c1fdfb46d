"""Clients that break MQTT 3.1.1 are disconnected, by the embedded broker as by Mosquitto.

Each case is raw bytes on a socket, as a broken or hostile device would send them: first a
CONNECT (a sound one with the device's credentials, or the broken one under test), then the
packet under test. The broker must close the connection, count the rule that was broken, and
deliver nothing of it: the hub's next message is the one a sound device sends afterwards.
The same bytes go to a real Mosquitto, which must close the connection too, so that both
brokers a fleet may use agree.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import httpx
import pytest

from fieldhub.clock import now_ms
from fieldhub.hub.app import Hub
from fieldhub.hub.broker.embedded import EmbeddedBroker
from fieldhub.hub.broker.keyring import KeyRing, MqttIdentity, hub_identity
from fieldhub.hub.secrets import digest
from fieldhub.hub.store.credentials import CredentialKey
from fieldhub.protocol import Channel, topic_for
from tests.support.servers import Mosquitto

HUB = hub_identity("test")
DEVICE, OTHER = "dev-1", "dev-2"
TOPIC = topic_for(DEVICE, Channel.TELEMETRY)
STATUS = topic_for(DEVICE, Channel.STATUS)


def _length(n: int) -> bytes:
    out = bytearray()
    while True:
        n, byte = divmod(n, 128)
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + _length(len(body)) + body


def string(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return len(raw).to_bytes(2, "big") + raw


def connect(
    who: MqttIdentity,
    *,
    name: bytes = b"MQTT",
    level: int = 4,
    flags: int = 0xC2,  # user name, password, clean session
    will: tuple[str, bytes] = (STATUS, b'{"online":false}'),
    first: int = 0x10,
) -> bytes:
    """A CONNECT with these fields; the payload holds what ``flags`` announce."""
    body = string(name) + bytes((level, flags)) + (60).to_bytes(2, "big") + string(who.client_id)
    if flags & 0x04:
        body += string(will[0]) + string(will[1])
    if flags & 0x80:
        body += string(who.username)
    if flags & 0x40:
        body += string(who.password)
    return packet(first, body)


def publish(topic: str | bytes, *, flags: int = 0, packet_id: int | None = None) -> bytes:
    pid = b"" if packet_id is None else packet_id.to_bytes(2, "big")
    return packet(0x30 | flags, string(topic) + pid + b'{"seq":1}')


def subscribe(*filters: tuple[str | bytes, int], first: int = 0x82, packet_id: int = 1) -> bytes:
    body = packet_id.to_bytes(2, "big") + b"".join(string(f) + bytes((q,)) for f, q in filters)
    return packet(first, body)


def unsubscribe(*filters: str | bytes, first: int = 0xA2, packet_id: int = 1) -> bytes:
    return packet(first, packet_id.to_bytes(2, "big") + b"".join(string(f) for f in filters))


@dataclass(frozen=True)
class Case:
    """Bytes a client sends and the rule they break. ``connect`` replaces the sound CONNECT
    when the CONNECT is what is broken; ``answer`` is the CONNACK code owed before closing."""

    rule: str
    sent: bytes = b""
    connect: dict[str, object] | None = None
    answer: int | None = None
    # Mosquitto closes too. Mosquitto 2.0 lets a few violations pass that MQTT-4.8.0-1 says to
    # close on (any protocol violation), and accepts MQTT 3.1 and 5, which it speaks.
    mosquitto: bool = True


CASES = {
    # Fixed header: packet types and flags (MQTT 3.1.1 §2.2).
    "reserved type 0": Case("MQTT-2.2.1", packet(0x00, b"")),
    "reserved type 15": Case("MQTT-2.2.1", packet(0xF0, b"")),
    "connack from a client": Case("MQTT-2.2.1", packet(0x20, b"\0\0")),
    "suback from a client": Case("MQTT-2.2.1", packet(0x90, b"\0\1\0"), mosquitto=False),
    "pingresp from a client": Case("MQTT-2.2.1", packet(0xD0, b""), mosquitto=False),
    "second connect": Case("MQTT-3.1.0-2", connect(HUB)),
    "pingreq with flags": Case("MQTT-2.2.2-2", packet(0xC1, b""), mosquitto=False),
    "disconnect with flags": Case("MQTT-2.2.2-2", packet(0xE2, b"")),
    "puback with flags": Case("MQTT-2.2.2-2", packet(0x42, b"\0\1"), mosquitto=False),
    "pubrel without its flags": Case("MQTT-2.2.2-2", packet(0x60, b"\0\1")),
    "subscribe without its flags": Case("MQTT-2.2.2-2", subscribe((TOPIC, 1), first=0x80)),
    "unsubscribe without its flags": Case("MQTT-2.2.2-2", unsubscribe(TOPIC, first=0xA0)),
    "remaining length of five bytes": Case("MQTT-2.2.3", b"\x30\xff\xff\xff\xff\x01"),
    "pingreq with a body": Case("MQTT-2.2.3", packet(0xC0, b"\0"), mosquitto=False),
    "puback too short": Case("MQTT-2.2.3", packet(0x40, b"\1")),
    # Packet identifiers (MQTT-2.3.1-1).
    "qos 1 publish with packet id 0": Case("MQTT-2.3.1-1", publish(TOPIC, flags=2, packet_id=0)),
    "qos 2 publish with packet id 0": Case("MQTT-2.3.1-1", publish(TOPIC, flags=4, packet_id=0)),
    "subscribe with packet id 0": Case("MQTT-2.3.1-1", subscribe((TOPIC, 1), packet_id=0)),
    "unsubscribe with packet id 0": Case("MQTT-2.3.1-1", unsubscribe(TOPIC, packet_id=0)),
    "puback with packet id 0": Case("MQTT-2.3.1-1", packet(0x40, b"\0\0")),
    # PUBLISH (§3.3) and its topic (§1.5.3, §4.7).
    "publish with qos 3": Case("MQTT-3.3.1-4", publish(TOPIC, flags=6, packet_id=1)),
    "publish qos 0 with dup": Case("MQTT-3.3.1-2", publish(TOPIC, flags=8), mosquitto=False),
    "publish to a + topic": Case("MQTT-3.3.2-2", publish(f"{TOPIC}/+")),
    "publish to a # topic": Case("MQTT-3.3.2-2", publish(f"{TOPIC}/#", flags=2, packet_id=1)),
    "publish to an empty topic": Case("MQTT-4.7.3-1", publish("")),
    "publish topic with nul": Case("MQTT-1.5.3-2", publish(f"{TOPIC}\0x")),
    "publish topic not utf-8": Case("MQTT-1.5.3-1", publish(TOPIC.encode() + b"\xff")),
    "publish topic with a surrogate": Case("MQTT-1.5.3-1", publish(b"fh/\xed\xa0\x80")),
    "publish topic with a line feed": Case("MQTT-1.5.3", publish(f"{TOPIC}\nx")),
    "publish topic longer than the packet": Case("MQTT-2.2.3", packet(0x30, b"\0\x09fh/v1")),
    # SUBSCRIBE (§3.8) and UNSUBSCRIBE (§3.10), with topic filters (§4.7.1).
    "subscribe to nothing": Case("MQTT-3.8.3-3", subscribe()),
    "subscribe with qos 3": Case("MQTT-3-8.3-4", subscribe((TOPIC, 3))),
    "subscribe with reserved bits": Case("MQTT-3-8.3-4", subscribe((TOPIC, 0x81))),
    "subscribe to a/#/b": Case("MQTT-4.7.1-2", subscribe(("fh/#/ack", 0))),
    "subscribe to a+": Case("MQTT-4.7.1-3", subscribe(("fh/v1+", 0))),
    "subscribe to an empty filter": Case("MQTT-4.7.3-1", subscribe(("", 0))),
    "subscribe filter not utf-8": Case("MQTT-1.5.3-1", subscribe((b"fh/\xc3", 0))),
    "unsubscribe from nothing": Case("MQTT-3.10.3-2", unsubscribe()),
    "unsubscribe from #/a": Case("MQTT-4.7.1-2", unsubscribe("#/a")),
    # CONNECT (§3.1): closed without a CONNACK, or after one when the specification asks.
    "first packet not connect": Case("MQTT-3.1.0-1", connect={"first": 0x82}, mosquitto=False),
    "connect with flags": Case("MQTT-2.2.2-2", connect={"first": 0x11}),
    "forged protocol name": Case("MQTT-3.1.2-1", connect={"name": b"MQTT\n2026 INFO x"}),
    "protocol name MQTS": Case("MQTT-3.1.2-1", connect={"name": b"MQTS"}),
    "connect reserved flag": Case("MQTT-3.1.2-3", connect={"flags": 0xC3}),
    "will qos 3": Case("MQTT-3.1.2-14", connect={"flags": 0xFE}),
    "will qos without a will": Case("MQTT-3.1.2-11", connect={"flags": 0xCA}),
    "will retain without a will": Case("MQTT-3.1.2-11", connect={"flags": 0xE2}),
    "password without user name": Case("MQTT-3.1.2-22", connect={"flags": 0x42}),
    "will topic with a wildcard": Case(
        "MQTT-3.3.2-2", connect={"flags": 0xCE, "will": (f"{STATUS}/#", b"x")}
    ),
    "mqtt 5": Case("MQTT-3.1.2-2", connect={"level": 5}, answer=1, mosquitto=False),
    "mqtt 3.1": Case(
        "MQTT-3.1.2-2", connect={"name": b"MQIsdp", "level": 3}, answer=1, mosquitto=False
    ),
}


def _key(device_id: str) -> tuple[CredentialKey, MqttIdentity]:
    secret, username = f"secret-of-{device_id}", f"{device_id}.00000000"
    key = CredentialKey(username, device_id, digest(secret), now_ms(), None)
    return key, MqttIdentity(username, secret, device_id)


KEYS = dict(_key(device_id) for device_id in (DEVICE, OTHER))
DEVICES = {identity.client_id: identity for identity in KEYS.values()}


class Raw:
    """A TCP connection to a broker, speaking MQTT by the byte."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Raw:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def receive(self, within: float = 5) -> bytes:
        """The next packet, whole; b"" at the end of the stream."""
        async with asyncio.timeout(within):
            try:
                head = await self.reader.readexactly(1)
            except asyncio.IncompleteReadError:
                return b""
            length, shift = 0, 0
            while True:
                byte = await self.reader.readexactly(1)
                head += byte
                length |= (byte[0] & 0x7F) << shift
                shift += 7
                if not byte[0] & 0x80:
                    return head + await self.reader.readexactly(length)

    async def closed_by_broker(self, within: float = 5) -> bool:
        """True when the broker hangs up within ``within`` s; packets it sends first (a
        CONNACK refusal) are read and ignored."""
        try:
            while await self.receive(within):
                pass
        except (ConnectionResetError, TimeoutError):
            return False
        return True

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


Opener = Callable[[int], Awaitable[Raw]]


@pytest.fixture
async def raw() -> AsyncIterator[Opener]:
    """Open raw connections to a broker's port; all are closed after the test."""
    opened: list[Raw] = []

    async def open_to(port: int) -> Raw:
        client = await Raw.open(port)
        opened.append(client)
        return client

    yield open_to
    for client in opened:
        await client.close()


async def _log_in(raw: Opener, port: int, who: MqttIdentity) -> Raw:
    client = await raw(port)
    await client.send(connect(who))
    assert await client.receive() == b"\x20\x02\x00\x00"  # CONNACK: accepted
    return client


@pytest.fixture
async def broker() -> AsyncIterator[EmbeddedBroker]:
    ring = KeyRing(HUB)
    ring.put(KEYS)
    async with EmbeddedBroker(port=0, access=ring) as running:
        yield running


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
async def test_the_embedded_broker_disconnects_a_client_that_breaks_mqtt(
    broker: EmbeddedBroker, raw: Opener, case: Case
) -> None:
    hub = await _log_in(raw, broker.port, HUB)
    await hub.send(subscribe((topic_for("+", Channel.TELEMETRY), 0)))
    assert (await hub.receive())[0] == 0x90  # SUBACK
    device = await raw(broker.port)
    if case.connect is None:
        await device.send(connect(DEVICES[DEVICE]))
        assert await device.receive() == b"\x20\x02\x00\x00"
        await device.send(case.sent)
    else:
        await device.send(connect(DEVICES[DEVICE], **case.connect))  # type: ignore[arg-type]
        if case.answer is not None:
            assert await device.receive() == bytes((0x20, 2, 0, case.answer))

    assert await device.closed_by_broker()
    assert broker.violations == {case.rule: 1}
    other = await _log_in(raw, broker.port, DEVICES[OTHER])
    await other.send(publish(topic_for(OTHER, Channel.TELEMETRY)))
    delivered = await hub.receive()  # the first telemetry the hub gets is the sound one
    assert string(topic_for(OTHER, Channel.TELEMETRY)) in delivered


async def test_mosquitto_disconnects_the_same_clients(mosquitto: Mosquitto, raw: Opener) -> None:
    admin = MqttIdentity(mosquitto.admin_username, mosquitto.admin_password, "violations")
    kept_open = []
    for name, case in CASES.items():
        if not case.mosquitto:
            continue
        client = await raw(mosquitto.port)
        if case.connect is None:
            await client.send(connect(admin))
            assert await client.receive() == b"\x20\x02\x00\x00", name
            await client.send(case.sent)
        else:
            await client.send(connect(admin, **case.connect))  # type: ignore[arg-type]
        if not await client.closed_by_broker(within=2):
            kept_open.append(name)
    assert kept_open == [], ", ".join(kept_open)


@pytest.mark.parametrize("will", [True, False], ids=["with a will", "without a will"])
async def test_a_device_disconnected_for_a_violation_is_announced_offline(
    broker: EmbeddedBroker, raw: Opener, will: bool
) -> None:
    hub = await _log_in(raw, broker.port, HUB)
    await hub.send(subscribe((topic_for("+", Channel.STATUS), 1)))
    assert (await hub.receive())[0] == 0x90  # SUBACK
    device = await raw(broker.port)
    await device.send(connect(DEVICES[DEVICE], flags=0xEE if will else 0xC2))  # will: QoS 1
    assert await device.receive() == b"\x20\x02\x00\x00"

    await device.send(publish(TOPIC, flags=2, packet_id=0))

    assert await device.closed_by_broker()
    announced = await hub.receive()
    assert announced[0] >> 4 == 3  # a PUBLISH
    assert string(STATUS) in announced  # on the device's status
    if will:
        assert announced.endswith(b'{"online":false}')  # its will
    else:
        assert b'"online":false' in announced
        assert b'"reason":"connection lost"' in announced


async def test_a_publish_to_a_dollar_topic_is_dropped_like_any_forbidden_one(
    broker: EmbeddedBroker, raw: Opener
) -> None:
    # Not a protocol violation: no one may publish there (the access policy), so it is
    # dropped and the connection stays, as for any forbidden topic. amqtt would leave its
    # client loop without ending the session or sending the will.
    device = await _log_in(raw, broker.port, DEVICES[DEVICE])

    await device.send(publish("$SYS/broker/uptime", flags=2, packet_id=1))

    assert await device.receive() == b"\x40\x02\x00\x01"  # PUBACK
    await device.send(packet(0xC0, b""))  # PINGREQ
    assert await device.receive() == b"\xd0\x00"  # PINGRESP: still connected
    assert broker.violations == {}


async def test_violations_are_counted_in_the_hubs_metrics(
    hub: Hub, api: httpx.AsyncClient, raw: Opener
) -> None:
    assert hub.broker is not None
    client = await raw(hub.broker.port)
    await client.send(publish(TOPIC))  # a PUBLISH before any CONNECT

    assert await client.closed_by_broker()
    response = await api.get("/metrics")
    line = 'fieldhub_broker_protocol_violations_total{rule="MQTT-3.1.0-1"} 1.0'
    assert line in response.text.splitlines()
