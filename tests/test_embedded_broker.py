"""The hub's embedded broker, driven by real MQTT clients (paho-mqtt 2, fieldhub.mqtt) over TCP.

The broker runs on the test's event loop, as it does in the hub; paho runs on its own network
thread and hands what it receives to the loop with ``call_soon_threadsafe``, so no test ever
blocks the loop the broker needs. Clients log in as the hub does (``hub``) or with device keys
made for the test; what identity enforcement itself refuses is tested, on both brokers, in
``test_device_identity.py``.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from fieldhub.clock import now_ms
from fieldhub.hub.broker import embedded as broker_module
from fieldhub.hub.broker.embedded import BrokerStateError, EmbeddedBroker
from fieldhub.hub.broker.keyring import KeyRing, MqttIdentity, hub_identity
from fieldhub.hub.secrets import digest
from fieldhub.hub.store.credentials import CredentialKey
from fieldhub.mqtt import MqttClient
from fieldhub.protocol import Channel, topic_for

STATUS_FILTER = topic_for("+", Channel.STATUS)
TELEMETRY_FILTER = topic_for("+", Channel.TELEMETRY)
ONLINE, OFFLINE = b'{"online":true}', b'{"online":false}'
HUB = hub_identity("test")


class Keys:
    """The broker's key ring, and a key per device id made on first use (the hub's identity
    for ``"hub"``): what a client of a given name logs in with."""

    def __init__(self) -> None:
        self.ring = KeyRing(HUB)
        self._made: dict[str, MqttIdentity] = {}

    def __call__(self, name: str) -> MqttIdentity:
        if name == "hub":
            return HUB
        if name not in self._made:
            secret = f"secret-of-{name}"
            username = f"{name}.0000000{len(self._made) % 10}"
            key = CredentialKey(username, name, digest(secret), now_ms(), None)
            self.ring.put([key])
            self._made[name] = MqttIdentity(username, secret, name)
        return self._made[name]


class PahoClient:
    """A paho-mqtt 2 client (MQTT 3.1.1) whose received messages land in an asyncio queue."""

    def __init__(
        self,
        identity: MqttIdentity,
        *,
        clean_session: bool = True,
        will: tuple[str, bytes] | None = None,
        keepalive: int = 60,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self.keepalive = keepalive
        self.messages: asyncio.Queue[mqtt.MQTTMessage] = asyncio.Queue()
        self._connected = asyncio.Event()
        self._acks: dict[int, asyncio.Future[None]] = {}
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=identity.client_id,
            protocol=mqtt.MQTTv311,
            clean_session=clean_session,
        )
        client.username_pw_set(identity.username, identity.password)
        if will is not None:
            client.will_set(will[0], will[1], qos=1, retain=True)
        client.reconnect_delay_set(30, 60)  # a test decides when to reconnect
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        self.client = client

    # paho's network thread calls these; they hand over to the event loop and return at once.
    def _on_connect(self, *_: object) -> None:
        self._loop.call_soon_threadsafe(self._connected.set)

    def _on_subscribe(self, _client: object, _userdata: object, mid: int, *_: object) -> None:
        self._loop.call_soon_threadsafe(self._ack(mid).set_result, None)

    def _on_message(self, _client: object, _userdata: object, message: mqtt.MQTTMessage) -> None:
        self._loop.call_soon_threadsafe(self.messages.put_nowait, message)

    def _ack(self, mid: int) -> asyncio.Future[None]:
        return self._acks.setdefault(mid, self._loop.create_future())

    async def connect(self, broker: EmbeddedBroker) -> None:
        await asyncio.to_thread(self.client.connect, broker.host, broker.port, self.keepalive)
        self.client.loop_start()
        await asyncio.wait_for(self._connected.wait(), 5)

    async def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        result, mid = self.client.subscribe(topic_filter, qos)
        assert result == mqtt.MQTT_ERR_SUCCESS
        assert mid is not None
        await asyncio.wait_for(self._ack(mid), 5)

    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> None:
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        await asyncio.to_thread(info.wait_for_publish, 5)

    async def receive(self, within: float = 5) -> mqtt.MQTTMessage:
        return await asyncio.wait_for(self.messages.get(), within)

    async def nothing_arrives(self, within: float) -> bool:
        try:
            await asyncio.wait_for(self.messages.get(), within)
        except TimeoutError:
            return True
        return False

    async def disconnect(self) -> None:
        """A proper DISCONNECT: no last will."""
        self.client.disconnect()
        await self.stop()

    async def go_silent(self) -> None:
        """Stop talking but keep the TCP connection open, like a device whose network died."""
        await self.stop()

    async def vanish(self) -> None:
        """Close the socket without DISCONNECT, like a device that crashed."""
        await self.stop()
        sock = self.client.socket()
        if sock is not None:
            sock.close()

    async def stop(self) -> None:
        await asyncio.to_thread(self.client.loop_stop)


@pytest.fixture
def keys() -> Keys:
    return Keys()


@pytest.fixture
async def broker(keys: Keys) -> AsyncIterator[EmbeddedBroker]:
    async with EmbeddedBroker(port=0, access=keys.ring) as running:
        yield running


@pytest.fixture
async def paho(keys: Keys) -> AsyncIterator[Callable[..., PahoClient]]:
    """Make paho clients logged in as ``name`` (the hub, or a device); whatever a test leaves
    open is closed afterwards."""
    made: list[PahoClient] = []

    def make(name: str, **options: Any) -> PahoClient:
        client = PahoClient(keys(name), **options)
        made.append(client)
        return client

    yield make
    await asyncio.gather(*(client.vanish() for client in made))


def _port_is_closed(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


async def test_port_zero_binds_a_free_port_and_reports_it(broker: EmbeddedBroker) -> None:
    assert broker.port != 0
    assert broker.url == f"mqtt://127.0.0.1:{broker.port}"
    assert not _port_is_closed(broker.port)


async def test_paho_publish_subscribe_round_trip(
    broker: EmbeddedBroker, paho: Callable[..., PahoClient]
) -> None:
    hub, device = paho("hub"), paho("dev-1")
    await hub.connect(broker)
    await hub.subscribe(TELEMETRY_FILTER, qos=1)
    await device.connect(broker)
    topic = topic_for("dev-1", Channel.TELEMETRY)

    await device.publish(topic, b'{"seq":1}', qos=0)
    await device.publish(topic, b'{"seq":2}', qos=1)

    first, second = await hub.receive(), await hub.receive()
    assert (first.topic, first.payload) == (topic, b'{"seq":1}')
    assert (second.topic, second.payload, second.qos) == (topic, b'{"seq":2}', 1)


async def test_the_hubs_client_receives_what_paho_publishes(
    broker: EmbeddedBroker, paho: Callable[..., PahoClient]
) -> None:
    received: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
    hub = MqttClient(
        broker.host,
        broker.port,
        client_id=HUB.client_id,
        username=HUB.username,
        password=HUB.password,
        on_message=lambda topic, payload: received.put_nowait((topic, payload)),
    )
    await hub.connect()
    try:
        await hub.subscribe([(TELEMETRY_FILTER, 1)])
        device = paho("dev-2")
        await device.connect(broker)
        await device.publish(topic_for("dev-2", Channel.TELEMETRY), b'{"seq":7}')
        assert await asyncio.wait_for(received.get(), 5) == (
            topic_for("dev-2", Channel.TELEMETRY),
            b'{"seq":7}',
        )
    finally:
        await hub.close()


async def test_retained_status_reaches_a_subscriber_that_comes_later(
    broker: EmbeddedBroker, paho: Callable[..., PahoClient]
) -> None:
    device = paho("dev-3")
    await device.connect(broker)
    await device.publish(topic_for("dev-3", Channel.STATUS), ONLINE, retain=True)
    await device.disconnect()

    hub = paho("hub")
    await hub.connect(broker)
    await hub.subscribe(STATUS_FILTER)

    message = await hub.receive()
    assert (message.topic, message.payload, message.retain) == (
        topic_for("dev-3", Channel.STATUS),
        ONLINE,
        True,
    )
    assert await hub.nothing_arrives(within=0.3)  # once, not once per matching subscription


async def test_retained_messages_go_only_to_clients_that_subscribed_to_them(
    broker: EmbeddedBroker, paho: Callable[..., PahoClient]
) -> None:
    hub, device = paho("hub"), paho("dev-4")
    await hub.connect(broker)
    await hub.subscribe(STATUS_FILTER)
    await device.connect(broker)
    await device.publish(topic_for("dev-4", Channel.STATUS), ONLINE, retain=True)

    other = paho("dev-5")  # subscribes to nothing
    await other.connect(broker)

    assert await other.nothing_arrives(within=0.5)


async def test_a_device_that_crashes_has_its_last_will_published_and_retained(
    broker: EmbeddedBroker, paho: Callable[..., PahoClient]
) -> None:
    status = topic_for("dev-6", Channel.STATUS)
    hub, device = paho("hub"), paho("dev-6", will=(status, OFFLINE))
    await hub.connect(broker)
    await hub.subscribe(STATUS_FILTER)
    await device.connect(broker)
    await device.publish(status, ONLINE, retain=True)
    assert (await hub.receive()).payload == ONLINE

    await device.vanish()

    assert (await hub.receive()).payload == OFFLINE
    await hub.disconnect()
    later = paho("hub")  # the hub, back later
    await later.connect(broker)
    await later.subscribe(status)
    assert (await later.receive()).payload == OFFLINE


async def test_a_device_without_a_will_that_crashes_is_announced_offline_all_the_same(
    broker: EmbeddedBroker, paho: Callable[..., PahoClient]
) -> None:
    status = topic_for("dev-14", Channel.STATUS)
    hub, device = paho("hub"), paho("dev-14")  # no last will
    await hub.connect(broker)
    await hub.subscribe(STATUS_FILTER)
    await device.connect(broker)
    await device.publish(status, ONLINE, retain=True)
    assert (await hub.receive()).payload == ONLINE

    await device.vanish()

    lost = await hub.receive()
    assert (lost.topic, json.loads(lost.payload)["online"]) == (status, False)
    await hub.disconnect()
    later = paho("hub")  # the hub, back later
    await later.connect(broker)
    await later.subscribe(status)
    assert json.loads((await later.receive()).payload)["online"] is False


async def test_a_device_without_a_will_that_says_goodbye_is_not_announced(
    broker: EmbeddedBroker, paho: Callable[..., PahoClient]
) -> None:
    hub, device = paho("hub"), paho("dev-15")
    await hub.connect(broker)
    await hub.subscribe(STATUS_FILTER)
    await device.connect(broker)

    await device.disconnect()

    assert await hub.nothing_arrives(within=1)


async def test_a_device_that_goes_silent_has_its_will_published_after_its_keepalive(
    broker: EmbeddedBroker, paho: Callable[..., PahoClient]
) -> None:
    status = topic_for("dev-7", Channel.STATUS)
    hub, device = paho("hub"), paho("dev-7", will=(status, OFFLINE), keepalive=1)
    await hub.connect(broker)
    await hub.subscribe(status)
    await device.connect(broker)

    await device.go_silent()  # the TCP connection stays open: only the keep-alive can tell

    assert (await hub.receive(within=4)).payload == OFFLINE


async def test_a_device_that_reconnects_while_its_old_connection_hangs_stays_online(
    broker: EmbeddedBroker, paho: Callable[..., PahoClient]
) -> None:
    status = topic_for("dev-8", Channel.STATUS)
    hub = paho("hub")
    await hub.connect(broker)
    await hub.subscribe(status)
    old = paho("dev-8", will=(status, OFFLINE), keepalive=1)
    await old.connect(broker)
    await old.go_silent()

    new = paho("dev-8", will=(status, OFFLINE))
    await new.connect(broker)
    await new.publish(status, ONLINE, retain=True)
    assert (await hub.receive()).payload == ONLINE

    assert await hub.nothing_arrives(within=2.5)  # the old connection is dropped, will unsent
    await old.vanish()
    assert await hub.nothing_arrives(within=0.5)


async def test_a_persistent_session_gets_the_qos1_messages_it_missed(
    broker: EmbeddedBroker, paho: Callable[..., PahoClient]
) -> None:
    commands = topic_for("dev-9", Channel.CMD)
    device = paho("dev-9", clean_session=False)
    await device.connect(broker)
    await device.subscribe(commands, qos=1)
    await device.disconnect()

    hub = paho("hub")
    await hub.connect(broker)
    for n in range(3):
        await hub.publish(commands, b'{"n":%d}' % n, qos=1)

    back = paho("dev-9", clean_session=False)
    await back.connect(broker)
    assert [(await back.receive()).payload for _ in range(3)] == [
        b'{"n":0}',
        b'{"n":1}',
        b'{"n":2}',
    ]


async def test_a_refused_client_cannot_touch_the_session_of_the_client_id_it_names(
    broker: EmbeddedBroker, paho: Callable[..., PahoClient]
) -> None:
    # amqtt 0.12 takes over (clean_session=0) or deletes (clean_session=1) the session of a
    # CONNECT's client id before asking its auth plugins; the broker refuses before that.
    commands = topic_for("dev-10", Channel.CMD)
    hub, device = paho("hub"), paho("dev-10", clean_session=False)
    await hub.connect(broker)
    await device.connect(broker)
    await device.subscribe(commands, qos=1)

    loop = asyncio.get_running_loop()
    for clean_session in (True, False):
        for victim in ("dev-10", HUB.client_id):
            impostor = mqtt.Client(
                CallbackAPIVersion.VERSION2,
                client_id=victim,
                protocol=mqtt.MQTTv311,
                clean_session=clean_session,
            )
            impostor.username_pw_set(victim, "guessed")
            refused: asyncio.Future[int] = loop.create_future()

            def on_connect(*args: Any, refused: asyncio.Future[int] = refused) -> None:
                loop.call_soon_threadsafe(refused.set_result, args[3].value)

            impostor.on_connect = on_connect
            await asyncio.to_thread(impostor.connect, broker.host, broker.port)
            impostor.loop_start()
            try:
                assert await asyncio.wait_for(refused, 5) != 0
            finally:
                await asyncio.to_thread(impostor.loop_stop)

    await hub.publish(commands, b'{"n":1}', qos=1)  # both still connected and subscribed
    assert (await device.receive()).payload == b'{"n":1}'


async def test_a_connection_that_never_sends_connect_is_closed(
    broker: EmbeddedBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(broker_module, "_CONNECT_TIMEOUT_S", 0.5)
    reader, writer = await asyncio.open_connection(broker.host, broker.port)
    try:
        assert await asyncio.wait_for(reader.read(), 3) == b""  # EOF: the broker hung up
    finally:
        writer.close()
        await writer.wait_closed()


async def test_broker_stops_cleanly_and_frees_its_port(
    keys: Keys, paho: Callable[..., PahoClient]
) -> None:
    status = topic_for("dev-11", Channel.STATUS)
    async with EmbeddedBroker(port=0, access=keys.ring) as broker:
        port = broker.port
        hub, device = paho("hub"), paho("dev-11", will=(status, OFFLINE))
        await hub.connect(broker)
        await hub.subscribe(STATUS_FILTER)
        await device.connect(broker)
        idle = socket.create_connection((broker.host, port))  # connected, never sends CONNECT

    try:
        assert _port_is_closed(port)
        assert asyncio.all_tasks() == {asyncio.current_task()}
        assert hub.messages.empty()  # stopping the broker is not a device failure: no will
        async with EmbeddedBroker(port=port, access=keys.ring) as again:  # the hub restarts
            assert again.port == port
    finally:
        idle.close()


async def test_broker_stops_promptly_while_clients_publish(keys: Keys) -> None:
    async def publish_forever(client: MqttClient, device_id: str) -> None:
        topic = topic_for(device_id, Channel.TELEMETRY)
        while True:
            client.publish(topic, b'{"seq":1}', qos=1)
            await asyncio.sleep(0)

    def ignore(_topic: str, _payload: bytes) -> None:
        pass

    def client(name: str) -> MqttClient:
        identity = keys(name)
        return MqttClient(
            broker.host,
            broker.port,
            client_id=identity.client_id,
            username=identity.username,
            password=identity.password,
            on_message=ignore,
        )

    async with EmbeddedBroker(port=0, access=keys.ring) as broker:
        clients = [client(f"dev-load-{n}") for n in range(5)]
        hub = client("hub")
        for client in [*clients, hub]:
            await client.connect()
        await hub.subscribe([(TELEMETRY_FILTER, 1)])
        load = [
            asyncio.create_task(publish_forever(client, f"dev-load-{n}"))
            for n, client in enumerate(clients)
        ]
        await asyncio.sleep(0.5)
        started = asyncio.get_running_loop().time()
    stopped = asyncio.get_running_loop().time()
    for task in load:
        task.cancel()
    await asyncio.gather(*load, return_exceptions=True)
    for client in [*clients, hub]:
        await client.close()
    assert stopped - started < 3


async def test_retained_messages_survive_a_restart_with_a_data_dir(
    tmp_path: Path, keys: Keys, paho: Callable[..., PahoClient]
) -> None:
    desired = topic_for("dev-12", Channel.DESIRED)
    async with EmbeddedBroker(port=0, access=keys.ring, data_dir=tmp_path) as broker:
        hub = paho("hub")
        await hub.connect(broker)
        await hub.publish(desired, b'{"version":3}', retain=True)
        await hub.disconnect()

    async with EmbeddedBroker(port=0, access=keys.ring, data_dir=tmp_path) as broker:
        device = paho("dev-12")
        await device.connect(broker)
        await device.subscribe(desired)
        message = await device.receive()
        assert (message.payload, message.retain) == (b'{"version":3}', True)


async def test_an_unreadable_retained_file_stops_the_start_and_names_the_file(
    tmp_path: Path, keys: Keys
) -> None:
    (tmp_path / "retained.json").write_text("[{not json", encoding="utf-8")
    with pytest.raises(BrokerStateError, match=r"retained\.json"):
        async with EmbeddedBroker(port=0, access=keys.ring, data_dir=tmp_path):
            pass
