"""fieldhub's own MQTT client: its packets, and its behaviour against real brokers.

Broker tests run against both the embedded amqtt broker and Mosquitto; the other side of each
conversation is paho-mqtt, a different implementation, so the client never only tests itself.
Two small stand-ins cover what a real broker cannot be made to do on cue: ``Proxy`` cuts the
network between client and broker (an outage, or a client that dies without DISCONNECT, as
the broker sees it), and ``ScriptedBroker`` sends bytes no real broker sends (QoS 2, malformed
lengths, a SUBACK refusal) and shows exactly what the client wrote back.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from fieldhub.hub.broker.embedded import EmbeddedBroker
from fieldhub.hub.broker.keyring import BrokerPrincipal
from fieldhub.mqtt import (
    ConnectRefused,
    MqttClient,
    MqttError,
    MqttProtocolError,
    SubscribeRefused,
    Will,
    packets,
)
from tests.support.servers import Mosquitto, ServerUnavailable

# packets, without a socket


@pytest.mark.parametrize(
    ("value", "size"),
    [(0, 1), (127, 1), (128, 2), (16_383, 2), (16_384, 3), (2_097_151, 3), (2_097_152, 4),
     (packets.MAX_REMAINING_LENGTH, 4)],
)  # fmt: skip
def test_remaining_length_round_trips_at_its_byte_boundaries(value: int, size: int) -> None:
    encoded = packets.encode_remaining_length(value)

    assert len(encoded) == size
    assert packets.decode_remaining_length(encoded + b"rest") == (value, size)


@pytest.mark.parametrize("remaining", [127, 128, 16_383, 16_384])
@pytest.mark.parametrize("qos", [0, 1])
def test_publish_round_trips_with_bodies_at_the_length_boundaries(remaining: int, qos: int) -> None:
    topic = "fh/v1/dev-1/telemetry"
    payload = b"x" * (remaining - 2 - len(topic) - 2 * qos)
    packet = packets.publish(topic, payload, qos, retain=True, packet_id=513 if qos else 0)

    header = packets.read_fixed_header(packet + b"\xd0\x00")  # a PINGRESP behind it

    assert header is not None
    first, start, end = header
    assert end == len(packet)
    assert end - start == remaining
    assert first == 0x31 | qos << 1  # PUBLISH, retain
    topic_bytes, packet_id, payload_start = packets.parse_publish(packet, first, start, end)
    assert (topic_bytes, packet_id, packet[payload_start:end]) == (
        topic.encode(),
        513 if qos else 0,
        payload,
    )
    # A stream reader asks for more, whether the cut is in the header, its length or the body.
    for cut in (1, 2, start - 1, start, end - 1):
        assert packets.read_fixed_header(packet[:cut]) is None


def test_a_truncated_remaining_length_is_a_clear_error() -> None:
    with pytest.raises(MqttProtocolError, match="truncated after 2 byte"):
        packets.decode_remaining_length(b"\x80\x80")


def test_a_remaining_length_over_four_bytes_is_a_clear_error() -> None:
    with pytest.raises(MqttProtocolError, match="longer than 4 bytes"):
        packets.decode_remaining_length(b"\xff\xff\xff\xff\x01")
    with pytest.raises(MqttProtocolError, match="longer than 4 bytes"):
        packets.read_fixed_header(b"\x30\xff\xff\xff\xff\x01")
    assert packets.read_fixed_header(b"\x30\xff\xff\xff") is None  # only not complete yet
    with pytest.raises(ValueError, match="outside"):
        packets.encode_remaining_length(packets.MAX_REMAINING_LENGTH + 1)


def test_connect_with_will_and_credentials_is_laid_out_as_the_spec_says() -> None:
    packet = packets.connect(
        "dev",
        clean_session=True,
        keepalive_s=30,
        username="u",
        password="p",
        will=Will("t", b"bye"),  # QoS 1, retained
    )

    assert packet == (
        b"\x10\x1d"  # CONNECT, 29 bytes
        b"\x00\x04MQTT\x04"  # protocol name and level 4 (3.1.1)
        b"\xee"  # user name, password, will retain, will QoS 1, will, clean session
        b"\x00\x1e"  # keep-alive 30 s
        b"\x00\x03dev\x00\x01t\x00\x03bye\x00\x01u\x00\x01p"
    )
    with pytest.raises(ValueError, match="password only together with a user name"):
        packets.connect("dev", password="p")


def test_subscribe_puback_and_one_byte_packets() -> None:
    assert packets.subscribe(7, [("a/+", 1), ("b/#", 0)]) == (
        b"\x82\x0e\x00\x07\x00\x03a/+\x01\x00\x03b/#\x00"
    )
    assert packets.puback(0x1234) == b"\x40\x02\x12\x34"
    assert packets.parse_puback(b"\x12\x34") == 0x1234
    assert packets.parse_suback(b"\x00\x07\x01\x80") == (7, b"\x01\x80")
    assert packets.parse_connack(b"\x01\x00") == (True, 0)
    assert (packets.PINGREQ, packets.DISCONNECT) == (b"\xc0\x00", b"\xe0\x00")


def test_malformed_bodies_and_bad_arguments_are_refused() -> None:
    qos2 = packets.publish("t", b"x", 1, packet_id=1)
    with pytest.raises(MqttProtocolError, match="QoS 2"):
        packets.parse_publish(qos2, 0x34, 2, len(qos2))
    with pytest.raises(MqttProtocolError, match="overrun"):
        packets.parse_publish(b"\x30\x03\x00\x09a", 0x30, 2, 5)
    with pytest.raises(MqttProtocolError, match="undefined return code"):
        packets.parse_suback(b"\x00\x01\x03")
    with pytest.raises(MqttProtocolError, match="2 bytes"):
        packets.parse_connack(b"\x00")
    with pytest.raises(ValueError, match="wildcard"):
        packets.publish("a/+/b", b"")
    with pytest.raises(ValueError, match="packet id"):
        packets.publish("a", b"", qos=1)


# brokers and helpers


@dataclass(frozen=True)
class Address:
    host: str
    port: int
    username: str | None = None  # what clients log in with
    password: str | None = None


class _Anyone:
    """May do anything with any topic."""

    name = "tester"

    def may_publish(self, topic: str) -> bool:
        return True

    def may_subscribe(self, topic_filter: str) -> bool:
        return True

    def may_receive(self, topic: str) -> bool:
        return True


class OpenAccess:
    """A fake access policy for testing the client, not the broker's identity rules: anyone
    with the user name ``tester`` may connect and use every topic (devices and their topic
    rules are ``test_device_identity.py``'s subject)."""

    def authenticate(
        self, client_id: str, username: str | None, password: str | None
    ) -> BrokerPrincipal | None:
        return self.principal(client_id, username)

    def principal(self, client_id: str, username: str | None) -> BrokerPrincipal | None:
        return _Anyone() if username == TESTER else None


TESTER = "tester"


def embedded_broker(host: str = "127.0.0.1", port: int = 0) -> EmbeddedBroker:
    return EmbeddedBroker(host, port, access=OpenAccess())


def login(where: Where) -> dict[str, str | None]:
    """The user name and password a client of ``where`` logs in with (none for fakes)."""
    return {
        "username": getattr(where, "username", None),
        "password": getattr(where, "password", None),
    }


def _unavailable(exc: ServerUnavailable) -> None:
    if os.environ.get("CI"):
        raise exc
    pytest.skip(str(exc))


@pytest.fixture(
    params=[pytest.param("amqtt"), pytest.param("mosquitto", marks=pytest.mark.mosquitto)]
)
async def broker(request: pytest.FixtureRequest) -> AsyncIterator[Address]:
    """A running broker: a fresh embedded one, or the session's Mosquitto (shared: tests use
    their own client ids and topics)."""
    if request.param == "mosquitto":
        server: Mosquitto = request.getfixturevalue("mosquitto")
        yield Address(server.host, server.port, server.admin_username, server.admin_password)
    else:
        async with embedded_broker() as embedded:
            yield Address(embedded.host, embedded.port, TESTER)


class RestartableBroker:
    """A broker of the test's own that can go down and come back on the same port."""

    def __init__(self, kind: str, workdir: Path) -> None:
        self.kind = kind
        self.host = "127.0.0.1"
        self.port = 0
        self._embedded: EmbeddedBroker | None = None
        self._mosquitto = Mosquitto(workdir) if kind == "mosquitto" else None
        self.username: str | None = TESTER
        self.password: str | None = None
        if self._mosquitto is not None:
            self.username = self._mosquitto.admin_username
            self.password = self._mosquitto.admin_password

    async def start(self) -> None:
        if self._mosquitto is not None:
            await asyncio.to_thread(self._mosquitto.start)
            self.port = self._mosquitto.port
        else:
            self._embedded = embedded_broker(self.host, self.port)
            await self._embedded.__aenter__()
            self.port = self._embedded.port

    async def stop(self) -> None:
        if self._mosquitto is not None:
            await asyncio.to_thread(self._mosquitto.stop)
        elif self._embedded is not None:
            embedded, self._embedded = self._embedded, None
            await embedded.__aexit__(None, None, None)


@pytest.fixture(
    params=[pytest.param("amqtt"), pytest.param("mosquitto", marks=pytest.mark.mosquitto)]
)
async def own_broker(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[RestartableBroker]:
    try:
        server = RestartableBroker(request.param, tmp_path / "mosquitto")
    except ServerUnavailable as exc:
        _unavailable(exc)
    await server.start()
    yield server
    await server.stop()


class Paho:
    """A paho-mqtt client (MQTT 3.1.1) on its own thread; what it receives lands in a queue."""

    def __init__(self, where: Where, client_id: str, *, clean_session: bool = True) -> None:
        self._loop = asyncio.get_running_loop()
        self._where = (where.host, where.port)
        self.messages: asyncio.Queue[mqtt.MQTTMessage] = asyncio.Queue()
        self._connected = asyncio.Event()
        self._subacks: dict[int, asyncio.Future[None]] = {}
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv311,
            clean_session=clean_session,
        )
        self.client.max_inflight_messages_set(200)
        credentials = login(where)
        if credentials["username"] is not None:
            self.client.username_pw_set(credentials["username"], credentials["password"])
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    # paho's network thread calls these; they hand over to the event loop and return at once.
    def _on_connect(self, *_: object) -> None:
        self._loop.call_soon_threadsafe(self._connected.set)

    def _on_subscribe(self, _client: object, _userdata: object, mid: int, *_: object) -> None:
        self._loop.call_soon_threadsafe(self._suback(mid).set_result, None)

    def _on_message(self, _client: object, _userdata: object, message: mqtt.MQTTMessage) -> None:
        self._loop.call_soon_threadsafe(self.messages.put_nowait, message)

    def _suback(self, mid: int) -> asyncio.Future[None]:
        return self._subacks.setdefault(mid, self._loop.create_future())

    async def connect(self) -> Paho:
        await asyncio.to_thread(self.client.connect, *self._where, 30)
        self.client.loop_start()
        await asyncio.wait_for(self._connected.wait(), 5)
        return self

    async def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        result, mid = self.client.subscribe(topic_filter, qos)
        if result != mqtt.MQTT_ERR_SUCCESS or mid is None:
            raise ConnectionError(f"paho could not subscribe to {topic_filter!r}: {result}")
        await asyncio.wait_for(self._suback(mid), 5)

    async def publish(self, topic: str, payloads: list[bytes], qos: int = 1) -> None:
        """Publish in paho's thread and wait until the broker has the last one."""

        def publish_all() -> None:
            info = None
            for payload in payloads:
                info = self.client.publish(topic, payload, qos=qos)
            if info is not None:
                info.wait_for_publish(30)

        await asyncio.to_thread(publish_all)

    async def receive(self, count: int, within: float = 10) -> list[bytes]:
        return [
            bytes((await asyncio.wait_for(self.messages.get(), within)).payload)
            for _ in range(count)
        ]

    async def nothing_arrives(self, within: float = 0.5) -> bool:
        try:
            await asyncio.wait_for(self.messages.get(), within)
        except TimeoutError:
            return True
        return False

    async def close(self) -> None:
        self.client.disconnect()
        await asyncio.to_thread(self.client.loop_stop)


@pytest.fixture
async def paho() -> AsyncIterator[Callable[..., Paho]]:
    made: list[Paho] = []

    def make(where: Where, client_id: str, **options: bool) -> Paho:
        made.append(Paho(where, client_id, **options))
        return made[-1]

    yield make
    await asyncio.gather(*(client.close() for client in made))


class Received:
    """An ``on_message`` that records (topic, payload) and can be waited on."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []

    def __call__(self, topic: str, payload: bytes) -> None:
        self.messages.append((topic, payload))

    @property
    def payloads(self) -> list[bytes]:
        return [payload for _topic, payload in self.messages]

    async def wait_for(self, count: int, within: float = 10) -> list[bytes]:
        await wait_until(lambda: len(self.messages) >= count, within, f"{count} messages")
        return self.payloads


async def wait_until(predicate: Callable[[], bool], within: float = 5, what: str = "it") -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {within} s for {what}")
        await asyncio.sleep(0.01)


class Where(Protocol):
    """Anything with a broker's address: brokers, the proxy, the scripted broker."""

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...


@pytest.fixture
async def clients() -> AsyncIterator[Callable[..., MqttClient]]:
    """Make MqttClients; every one is closed after the test."""
    made: list[MqttClient] = []

    def make(where: Where, **options: object) -> MqttClient:
        options.setdefault("on_message", Received())
        for key, value in login(where).items():
            options.setdefault(key, value)
        client = MqttClient(where.host, where.port, **options)  # type: ignore[arg-type]
        made.append(client)
        return client

    yield make
    await asyncio.gather(*(client.close() for client in made))


def numbered(count: int) -> list[bytes]:
    return [b"%d" % i for i in range(count)]


class Proxy:
    """A TCP relay in front of a broker. ``cut()`` drops every connection at once, as a network
    outage or a crashed client would (no DISCONNECT), and refuses new ones until ``restore()``."""

    def __init__(self, target: Where) -> None:
        self._target = (target.host, target.port)
        self.username, self.password = login(target).values()
        self.host = "127.0.0.1"
        self.port = 0
        self.up = True
        self._links: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Proxy:
        self._server = await asyncio.start_server(self._relay, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def cut(self) -> None:
        self.up = False
        for writer in self._links:
            writer.transport.abort()
        self._links.clear()

    def restore(self) -> None:
        self.up = True

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            if not self.up:
                return
            broker_r, broker_w = await asyncio.open_connection(*self._target)
            self._links |= {client_w, broker_w}
            await asyncio.gather(self._pipe(client_r, broker_w), self._pipe(broker_r, client_w))
            broker_w.close()
        except OSError:
            pass
        finally:
            client_w.transport.abort()
            if task is not None:
                self._tasks.discard(task)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof() and not writer.is_closing():
                writer.write_eof()  # pass a clean close on as one
        except OSError:
            writer.transport.abort()


async def read_packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    first = (await reader.readexactly(1))[0]
    length = b""
    while not length or length[-1] & 0x80:
        length += await reader.readexactly(1)
    return first, await reader.readexactly(packets.decode_remaining_length(length)[0])


class ScriptedBroker:
    """Accepts connections, answers CONNECT with ``connack`` (if any) and hands each connection
    to the test, which then writes what it likes and reads what the client sends."""

    def __init__(self, connack: bytes | None = b"\x20\x02\x00\x00") -> None:
        self.host = "127.0.0.1"
        self.port = 0
        self._connack = connack
        self.connections: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.Queue()
        )
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> ScriptedBroker:
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        for writer in self._writers:
            writer.transport.abort()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        first, _body = await read_packet(reader)
        if first == 0x10 and self._connack is not None:
            writer.write(self._connack)
        await self.connections.put((reader, writer))

    async def accept(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.wait_for(self.connections.get(), 5)


# receiving


async def test_qos0_and_qos1_from_paho_arrive_in_order(
    broker: Address, paho: Callable[..., Paho], clients: Callable[..., MqttClient], uid: str
) -> None:
    received = Received()
    client = clients(broker, client_id=f"sub-{uid}", on_message=received)
    await client.connect()
    await client.subscribe([(f"t/{uid}/#", 1)])
    publisher = await paho(broker, f"pub-{uid}").connect()

    await publisher.publish(f"t/{uid}/zero", numbered(100), qos=0)
    await publisher.publish(f"t/{uid}/one", numbered(100), qos=1)

    await received.wait_for(200)
    by_topic = {
        topic: [p for t, p in received.messages if t == topic]
        for topic in (f"t/{uid}/zero", f"t/{uid}/one")
    }
    assert by_topic == {f"t/{uid}/zero": numbered(100), f"t/{uid}/one": numbered(100)}
    assert client.stats.received == 200


async def test_many_qos1_messages_all_arrive_and_are_all_acknowledged(
    broker: Address,
    request: pytest.FixtureRequest,
    paho: Callable[..., Paho],
    clients: Callable[..., MqttClient],
    uid: str,
) -> None:
    # amqtt keeps one message in flight per subscriber and waits for its PUBACK: 20,000 would
    # take 15 s there, and each read holds a single message, so nothing could coalesce anyway.
    mosquitto = "mosquitto" in request.node.callspec.id
    count = 20_000 if mosquitto else 2_000
    received = Received()
    session = {"client_id": f"sub-{uid}", "clean_session": False}
    client = clients(broker, on_message=received, **session)
    await client.connect()
    await client.subscribe([(f"t/{uid}", 1)])
    publisher = await paho(broker, f"pub-{uid}").connect()

    await publisher.publish(f"t/{uid}", numbered(count), qos=1)

    assert await received.wait_for(count, within=30) == numbered(count)
    await asyncio.sleep(0.2)  # no duplicates trailing behind
    assert len(received.messages) == count
    if mosquitto:  # it sends up to 20 messages before waiting for PUBACKs: one write each
        # read, not one per message. How many a read holds depends on the machine's load
        # (under load, 3.4 on average was seen): coalescing is what is checked, not its rate.
        assert client.stats.writes < count / 2
    await client.close()
    # The same persistent session again: anything not acknowledged would be redelivered now.
    again = paho(broker, f"sub-{uid}", clean_session=False)
    await again.connect()
    assert await again.nothing_arrives(within=0.5)


async def test_all_pubacks_of_one_read_and_the_callbacks_publishes_go_out_in_one_write(
    clients: Callable[..., MqttClient],
) -> None:
    async with ScriptedBroker() as fake:
        client: MqttClient

        def echo(topic: str, payload: bytes) -> None:
            client.publish("echo", payload)

        client = clients(fake, client_id="c", on_message=echo)
        await client.connect()
        reader, writer = await fake.accept()
        writes = client.stats.writes

        writer.write(
            b"".join(packets.publish("t", b"%d" % i, 1, packet_id=i) for i in range(1, 101))
        )

        expected = b"".join(
            packets.puback(i) + packets.publish("echo", b"%d" % i) for i in range(1, 101)
        )
        assert await asyncio.wait_for(reader.readexactly(len(expected)), 5) == expected
        assert client.stats.writes == writes + 1


async def test_a_topic_that_is_not_utf8_is_skipped_but_acknowledged(
    clients: Callable[..., MqttClient],
) -> None:
    received = Received()
    async with ScriptedBroker() as fake:
        client = clients(fake, client_id="c", on_message=received)
        await client.connect()
        reader, writer = await fake.accept()
        bad = b"\x32\x07\x00\x02\xff\xfe\x00\x05x"  # QoS 1, topic b"\xff\xfe", packet id 5

        writer.write(bad + packets.publish("good", b"y", 1, packet_id=6))

        assert (
            await asyncio.wait_for(reader.readexactly(8), 5) == b"\x40\x02\x00\x05\x40\x02\x00\x06"
        )
        assert received.messages == [("good", b"y")]
        assert client.stats.invalid_topics == 1
        assert client.connected


@pytest.mark.parametrize(
    "garbage",
    [
        pytest.param(b"\x34\x06\x00\x01t\x00\x01x", id="qos2-publish"),
        pytest.param(b"\x30\xff\xff\xff\xff\x01", id="5-byte-length"),
        pytest.param(b"\x82\x06\x00\x01\x00\x01t\x01", id="subscribe-from-broker"),
    ],
)
async def test_a_protocol_violation_drops_the_connection_and_it_reconnects(
    garbage: bytes, clients: Callable[..., MqttClient]
) -> None:
    lost: list[BaseException | None] = []
    async with ScriptedBroker() as fake:
        client = clients(fake, client_id="c", on_disconnect=lost.append)
        await client.connect()
        _reader, writer = await fake.accept()

        writer.write(garbage)

        await fake.accept()  # the client came back by itself
        await wait_until(lambda: client.connected and bool(lost), what="reconnection")
        assert isinstance(lost[0], MqttProtocolError)


async def test_a_subscription_the_broker_refuses_raises_and_names_the_filter(
    clients: Callable[..., MqttClient],
) -> None:
    async with ScriptedBroker() as fake:
        client = clients(fake, client_id="c")
        await client.connect()
        reader, writer = await fake.accept()

        subscribing = asyncio.create_task(client.subscribe([("ok/#", 1), ("secret/#", 1)]))
        first, body = await asyncio.wait_for(read_packet(reader), 5)
        assert first == 0x82
        writer.write(b"\x90\x04" + body[:2] + b"\x01\x80")

        with pytest.raises(SubscribeRefused, match="secret/#") as refused:
            await subscribing
        assert refused.value.filters == ["secret/#"]


# publishing


async def test_publishes_reach_a_paho_subscriber_and_flushed_returns(
    broker: Address, paho: Callable[..., Paho], clients: Callable[..., MqttClient], uid: str
) -> None:
    subscriber = await paho(broker, f"sub-{uid}").connect()
    await subscriber.subscribe(f"t/{uid}/#", qos=1)
    client = clients(broker, client_id=f"pub-{uid}", max_inflight=5)
    await client.connect()

    for payload in numbered(50):
        client.publish(f"t/{uid}/zero", payload, qos=0)
    for payload in numbered(200):
        client.publish(f"t/{uid}/one", payload, qos=1)
    await asyncio.wait_for(client.flushed(), 10)

    messages = [await asyncio.wait_for(subscriber.messages.get(), 5) for _ in range(250)]
    assert [m.payload for m in messages if m.topic.endswith("zero")] == numbered(50)
    assert [m.payload for m in messages if m.topic.endswith("one")] == numbered(200)


async def test_qos1_published_while_the_network_is_down_arrives_after_it(
    broker: Address, paho: Callable[..., Paho], clients: Callable[..., MqttClient], uid: str
) -> None:
    subscriber = await paho(broker, f"sub-{uid}").connect()
    await subscriber.subscribe(f"t/{uid}", qos=1)
    lost: list[BaseException | None] = []
    async with Proxy(broker) as network:
        client = clients(network, client_id=f"pub-{uid}", on_disconnect=lost.append)
        await client.connect()
        network.cut()
        await wait_until(lambda: not client.connected and bool(lost), what="the loss")

        for payload in numbered(50):
            client.publish(f"t/{uid}", payload, qos=1)
        client.publish(f"t/{uid}", b"lost", qos=0)
        network.restore()
        await asyncio.wait_for(client.flushed(), 10)

    assert await subscriber.receive(50) == numbered(50)
    assert client.stats.dropped_qos0 == 1
    assert isinstance(lost[0], ConnectionError)


async def test_unacknowledged_qos1_is_resent_with_dup_after_resubscribing(
    clients: Callable[..., MqttClient],
) -> None:
    async with ScriptedBroker() as fake:
        client = clients(fake, client_id="c", reconnect_min_s=0.01)
        await client.connect()
        reader, writer = await fake.accept()
        subscribing = asyncio.create_task(client.subscribe([("cmd/#", 1)]))
        _first, subscribe = await asyncio.wait_for(read_packet(reader), 5)
        writer.write(b"\x90\x03" + subscribe[:2] + b"\x01")
        await subscribing
        for payload in (b"a", b"b", b"c"):
            client.publish("t", payload, qos=1)
        sent = [await asyncio.wait_for(read_packet(reader), 5) for _ in range(3)]
        ids = [publish[3:5] for _first, publish in sent]  # after the topic "t"

        writer.write(b"\x40\x02" + ids[1])  # only "b" is acknowledged
        await asyncio.sleep(0.1)
        writer.transport.abort()
        reader, _writer = await fake.accept()

        again = [await asyncio.wait_for(read_packet(reader), 5) for _ in range(3)]
        assert again[0][0] == 0x82  # SUBSCRIBE first, so that nothing is missed
        assert again[0][1][2:] == subscribe[2:]  # the same filters (a new packet id)
        assert again[1:] == [(0x3A, sent[0][1]), (0x3A, sent[2][1])]  # DUP, QoS 1, in order


async def test_a_full_queue_drops_the_oldest_and_counts_it(
    broker: Address, paho: Callable[..., Paho], clients: Callable[..., MqttClient], uid: str
) -> None:
    subscriber = await paho(broker, f"sub-{uid}").connect()
    await subscriber.subscribe(f"t/{uid}", qos=1)
    client = clients(broker, client_id=f"pub-{uid}", max_queued=3)
    for payload in numbered(5):  # not connected yet: QoS 1 waits in the queue
        client.publish(f"t/{uid}", payload, qos=1)
    client.publish(f"t/{uid}", b"dropped", qos=0)

    await client.connect()
    await asyncio.wait_for(client.flushed(), 5)

    assert await subscriber.receive(3) == [b"2", b"3", b"4"]
    assert (client.stats.dropped_qos1, client.stats.dropped_qos0) == (2, 1)


# staying connected


async def test_after_a_broker_restart_it_reconnects_resubscribes_and_resends(
    own_broker: RestartableBroker,
    paho: Callable[..., Paho],
    clients: Callable[..., MqttClient],
    uid: str,
) -> None:
    received = Received()
    ups: list[None] = []
    downs: list[BaseException | None] = []
    client = clients(
        own_broker,
        client_id=f"c-{uid}",
        on_message=received,
        on_connect=lambda: ups.append(None),
        on_disconnect=downs.append,
        reconnect_max_s=0.5,
    )
    await client.connect()
    await client.subscribe([(f"t/{uid}/#", 1)])
    await (await paho(own_broker, f"p1-{uid}").connect()).publish(f"t/{uid}/in", [b"before"])
    await received.wait_for(1)

    await own_broker.stop()
    await wait_until(lambda: not client.connected and len(downs) == 1, what="the loss")
    client.publish(f"t/{uid}/own", b"during", qos=1)  # to itself: needs the subscription back
    await own_broker.start()
    await wait_until(lambda: client.connected, 10, "reconnection")
    await asyncio.wait_for(client.flushed(), 5)
    await (await paho(own_broker, f"p2-{uid}").connect()).publish(f"t/{uid}/in", [b"after"])

    assert sorted(await received.wait_for(3)) == [b"after", b"before", b"during"]
    assert isinstance(downs[0], ConnectionError)
    assert len(ups) == 2


@pytest.mark.mosquitto
async def test_session_present_says_whether_the_broker_kept_what_it_held_for_us(
    tmp_path: Path, clients: Callable[..., MqttClient], uid: str
) -> None:
    # The hub asks devices to send again what reached no one (docs/protocol.md, ack
    # "resend") only when the broker lost its session: a network blip keeps it, a broker
    # restart does not.
    server = RestartableBroker("mosquitto", tmp_path / "mosquitto")
    await server.start()
    try:
        async with Proxy(server) as network:
            client = clients(
                network, client_id=f"s-{uid}", clean_session=False, reconnect_max_s=0.2
            )
            await client.connect()
            assert not client.session_present  # a new session
            network.cut()
            await wait_until(lambda: not client.connected, what="the loss")
            network.restore()
            await wait_until(lambda: client.connected, 10, "reconnection")
            assert client.session_present  # the broker kept it

            network.cut()
            await server.stop()
            await server.start()
            network.restore()
            await wait_until(lambda: client.connected, 10, "reconnection")
            assert not client.session_present  # gone with the broker
    finally:
        await server.stop()


async def test_a_healthy_connection_resets_the_reconnect_back_off(
    clients: Callable[..., MqttClient],
) -> None:
    # Connections that die soon after they were made let the delay grow (a broker that
    # accepts and then kicks us is not hammered: 0.1-0.2 s, then 0.2-0.4, ... 6.4-12.8 s
    # before the 8th connection), unless the application says the connection worked (the
    # agent: the hub acknowledged something through it). Then it starts from the shortest.
    async with ScriptedBroker() as fake:
        client = clients(fake, client_id="c", reconnect_min_s=0.2, reconnect_max_s=60)
        await client.connect()
        for _ in range(7):
            _reader, writer = await fake.accept()  # within 5 s each time
            await wait_until(lambda: client.connected, what="connected")
            client.healthy()
            writer.transport.abort()
            await wait_until(lambda: not client.connected, what="the loss")
        await fake.accept()
        assert client.stats.connections == 8


async def test_keepalive_pings_keep_an_idle_connection_up(
    clients: Callable[..., MqttClient],
) -> None:
    # The embedded broker drops a client silent for 1.5 x its keep-alive (and says so).
    downs: list[BaseException | None] = []
    async with embedded_broker() as embedded:
        where = Address(embedded.host, embedded.port, TESTER)
        client = clients(where, client_id="idle", keepalive_s=1, on_disconnect=downs.append)
        await client.connect()

        await asyncio.sleep(4)

        assert client.connected
        assert (client.stats.connections, downs) == (1, [])


async def test_a_silent_broker_is_dropped_after_one_and_a_half_keepalives(
    clients: Callable[..., MqttClient],
) -> None:
    downs: list[BaseException | None] = []
    async with ScriptedBroker() as fake:
        client = clients(fake, client_id="c", keepalive_s=1, on_disconnect=downs.append)
        await client.connect()
        reader, _writer = await fake.accept()
        started = time.monotonic()

        assert await asyncio.wait_for(reader.readexactly(2), 2) == packets.PINGREQ  # unanswered
        await wait_until(lambda: bool(downs), 3, "the drop")

        assert 1.4 <= time.monotonic() - started < 2.5  # 1.5 s, give or take scheduling
        assert "silent" in str(downs[0])


# presence: will and retain


async def test_the_will_is_published_when_the_connection_dies_but_not_after_close(
    broker: Address, paho: Callable[..., Paho], clients: Callable[..., MqttClient], uid: str
) -> None:
    status = f"t/{uid}/status"
    watcher = await paho(broker, f"w-{uid}").connect()
    await watcher.subscribe(f"t/{uid}/#", qos=1)
    async with Proxy(broker) as network:
        dying = clients(network, client_id=f"d-{uid}", will=Will(status, b"gone"))
        await dying.connect()

        network.cut()  # no DISCONNECT: the broker sees a dead client

        assert await watcher.receive(1) == [b"gone"]
    later = await paho(broker, f"l-{uid}").connect()
    await later.subscribe(status)
    message = await asyncio.wait_for(later.messages.get(), 5)
    assert (message.payload, message.retain) == (b"gone", True)

    polite = clients(broker, client_id=f"p-{uid}", will=Will(f"t/{uid}/other", b"gone"))
    await polite.connect()
    await polite.close()
    await polite.close()  # idempotent
    assert await watcher.nothing_arrives(within=0.5)


# refusals and back-pressure


async def test_a_refused_connect_raises_connect_refused_saying_why(
    broker: Address, clients: Callable[..., MqttClient]
) -> None:
    # MQTT 3.1.1 §3.1.3.1: an empty client id needs a clean session; both brokers refuse it.
    client = clients(broker, client_id="", clean_session=False)

    with pytest.raises(ConnectRefused, match="client identifier rejected") as refused:
        await client.connect()

    assert refused.value.code == 2
    assert not client.connected


@pytest.mark.mosquitto
async def test_a_broker_that_wants_credentials_refuses_an_anonymous_client(
    tmp_path: Path, clients: Callable[..., MqttClient]
) -> None:
    try:
        server = Mosquitto(tmp_path / "mosquitto", extra_config="allow_anonymous false")
    except ServerUnavailable as exc:
        _unavailable(exc)
    await asyncio.to_thread(server.start)
    try:
        with pytest.raises(ConnectRefused, match=r"not authorised \(CONNACK code 5\)"):
            await clients(server, client_id="anonymous").connect()
    finally:
        await asyncio.to_thread(server.stop)


async def test_connect_fails_at_once_without_a_broker(clients: Callable[..., MqttClient]) -> None:
    async with ScriptedBroker(connack=None) as mute:
        with pytest.raises(TimeoutError, match="no CONNACK"):
            await clients(mute, client_id="c").connect(timeout_s=0.3)
        port = mute.port
    with pytest.raises(ConnectionRefusedError):
        await clients(Address("127.0.0.1", port), client_id="c").connect()


async def test_paused_reading_holds_messages_back_until_resumed(
    broker: Address, paho: Callable[..., Paho], clients: Callable[..., MqttClient], uid: str
) -> None:
    received = Received()
    client = clients(broker, client_id=f"sub-{uid}", on_message=received)
    await client.connect()
    await client.subscribe([(f"t/{uid}", 1)])
    publisher = await paho(broker, f"pub-{uid}").connect()

    client.pause_reading()
    await publisher.publish(f"t/{uid}", numbered(50), qos=1)
    await asyncio.sleep(0.5)
    assert received.messages == []

    client.resume_reading()
    assert await received.wait_for(50) == numbered(50)


async def test_a_callback_can_pause_in_the_middle_of_a_read(
    broker: Address, paho: Callable[..., Paho], clients: Callable[..., MqttClient], uid: str
) -> None:
    received = Received()
    client: MqttClient

    def take_three(topic: str, payload: bytes) -> None:
        received(topic, payload)
        if len(received.messages) == 3:
            client.pause_reading()

    client = clients(broker, client_id=f"sub-{uid}", on_message=take_three)
    await client.connect()
    await client.subscribe([(f"t/{uid}", 1)])
    publisher = await paho(broker, f"pub-{uid}").connect()

    await publisher.publish(f"t/{uid}", numbered(50), qos=1)
    await asyncio.sleep(0.5)
    assert received.payloads == numbered(3)

    client.resume_reading()
    assert await received.wait_for(50) == numbered(50)


async def test_a_failing_callback_is_counted_and_logged_once_and_the_connection_carries_on(
    broker: Address,
    paho: Callable[..., Paho],
    clients: Callable[..., MqttClient],
    uid: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    received = Received()

    def fragile(topic: str, payload: bytes) -> None:
        if payload in (b"3", b"7"):
            raise ValueError(f"cannot handle {payload!r}")
        received(topic, payload)

    client = clients(broker, client_id=f"sub-{uid}", on_message=fragile)
    await client.connect()
    await client.subscribe([(f"t/{uid}", 1)])
    publisher = await paho(broker, f"pub-{uid}").connect()

    with caplog.at_level(logging.ERROR, logger="fieldhub.mqtt"):
        await publisher.publish(f"t/{uid}", numbered(10), qos=1)
        await received.wait_for(8)

    assert received.payloads == [p for p in numbered(10) if p not in (b"3", b"7")]
    assert client.stats.callback_errors == 2
    assert client.stats.connections == 1
    assert client.connected
    logged = [r for r in caplog.records if r.exc_info and r.exc_info[0] is ValueError]
    assert len(logged) == 1


async def test_a_closed_client_refuses_to_publish_or_connect(
    broker: Address, clients: Callable[..., MqttClient], uid: str
) -> None:
    client = clients(broker, client_id=f"c-{uid}")
    async with client:
        assert client.connected
    assert not client.connected
    with pytest.raises(MqttError, match="closed"):
        client.publish("t", b"x")
    with pytest.raises(MqttError, match="closed"):
        await client.connect()
