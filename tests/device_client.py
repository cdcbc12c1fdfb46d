"""A device for tests: a paho-mqtt client speaking the wire contract, with real credentials.

paho is a different MQTT implementation from the hub's, so the hub's client is never
testing itself. Acks and rejections arrive on paho's network thread; the test
waits for them by polling from the event loop, never blocking it: the embedded broker and the
hub run on that same loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from fieldhub.clock import now_ms
from fieldhub.protocol import Ack, Channel, Reject, Status, Telemetry, decode, encode, topic_for


class TestDevice:
    """A device publishing over a real MQTT connection, collecting what the hub sends back."""

    __test__ = False  # not a test class, despite the name

    def __init__(
        self,
        broker_url: str,
        device_id: str,
        *,
        username: str | None = None,
        password: str | None = None,
        client_id: str | None = None,
        will: bool = True,
        will_topic: str | None = None,
    ) -> None:
        parts = urlsplit(broker_url)
        self.device_id = device_id
        self.acked = 0
        self.rejects: list[Reject] = []
        self.acks: list[int] = []
        self.messages: list[tuple[str, bytes]] = []  # everything received, in order
        self.refusal: int | None = None  # reason code of the last refused connect
        self.disconnects = 0  # connections lost (or refused) so far
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=device_id if client_id is None else client_id,
            protocol=mqtt.MQTTv311,
        )
        if username is not None:
            self._client.username_pw_set(username, password)
        # paho waits this long before reconnecting, and its loop_stop() waits out the wait:
        # short, so that a refused or closed connection is over quickly.
        self._client.reconnect_delay_set(0.2, 2)  # type: ignore[arg-type]  # floats work
        if will:
            self._client.will_set(
                will_topic or topic_for(device_id, Channel.STATUS),
                encode(Status(online=False, reason="connection lost")),
                qos=1,
                retain=True,
            )
        self._client.on_message = self._on_message
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._address = (parts.hostname or "127.0.0.1", parts.port or 1883)

    @classmethod
    async def connect(
        cls,
        broker_url: str,
        device_id: str,
        *,
        username: str | None = None,
        password: str | None = None,
        client_id: str | None = None,
        will: bool = True,
        will_topic: str | None = None,
        subscribe: bool = True,
    ) -> TestDevice:
        """A connected device, subscribed to its acks and rejections (unless not ``subscribe``).

        Raises:
            ConnectionRefusedError: the broker refused the connection (CONNACK code, or closed).
        """
        device = cls(
            broker_url,
            device_id,
            username=username,
            password=password,
            client_id=client_id,
            will=will,
            will_topic=will_topic,
        )
        client = device._client
        client.connect_async(*device._address, keepalive=5)
        client.loop_start()
        try:
            await device._wait(
                lambda: client.is_connected() or device.disconnects > 0, 10, "connection"
            )
            if not client.is_connected():
                raise ConnectionRefusedError(f"{device_id}: refused, CONNACK {device.refusal}")
        except BaseException:
            await asyncio.to_thread(device.close)  # joins paho's thread: not on the loop
            raise
        if subscribe:
            client.subscribe(
                [(topic_for(device_id, Channel.ACK), 1), (topic_for(device_id, Channel.REJECT), 1)]
            )
            await asyncio.sleep(0.2)  # let the SUBACK arrive before the test publishes
        return device

    def _on_connect(self, _c: Any, _u: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            self.refusal = reason.value  # paho's MQTT 5 style code, e.g. 135: not authorized

    def _on_disconnect(self, *_: Any) -> None:
        self.disconnects += 1

    @property
    def connected(self) -> bool:
        """Whether paho holds a connection now (it reconnects by itself after a loss)."""
        return self._client.is_connected()

    async def subscribe(self, topic_filter: str, qos: int = 1) -> int:
        """Subscribe and return the broker's SUBACK code (128: refused)."""
        granted: list[int] = []

        def on_subscribe(_c: Any, _u: Any, _mid: int, codes: list[Any], _p: Any) -> None:
            granted.append(codes[0].value)

        self._client.on_subscribe = on_subscribe
        self._client.subscribe(topic_filter, qos)
        await self._wait(lambda: bool(granted), 5, f"SUBACK for {topic_filter}")
        return granted[0]

    async def wait_refused(self, within_s: float = 5.0) -> None:
        """Wait until a (re)connection attempt was refused (paho retries by itself)."""
        await self._wait(lambda: self.refusal is not None, within_s, "refusal")

    async def wait_disconnected(self, within_s: float = 5.0) -> None:
        """Wait until the connection is gone (the broker closed it)."""
        await self._wait(lambda: not self._client.is_connected(), within_s, "disconnection")

    def _on_message(self, _client: Any, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        self.messages.append((message.topic, bytes(message.payload)))
        if message.topic.endswith("/ack"):
            ack: Ack = decode(Channel.ACK, message.payload)
            self.acks.append(ack.seq)
            self.acked = max(self.acked, ack.seq)
        elif message.topic.endswith("/reject"):
            self.rejects.append(decode(Channel.REJECT, message.payload))

    async def _wait(self, predicate: Callable[[], bool], within_s: float, what: str) -> None:
        deadline = time.monotonic() + within_s
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.device_id}: no {what} within {within_s} s")
            await asyncio.sleep(0.01)

    def publish_raw(self, channel: Channel | str, payload: bytes, qos: int = 1) -> None:
        """Publish bytes on one of this device's channels (or any topic, given a str)."""
        is_channel = isinstance(channel, Channel)
        topic = topic_for(self.device_id, channel) if is_channel else str(channel)
        self._client.publish(topic, payload, qos=qos)

    def publish(self, channel: Channel, message: Any, qos: int = 1, retain: bool = False) -> None:
        """Publish a contract message on one of this device's channels."""
        topic = topic_for(self.device_id, channel)
        self._client.publish(topic, encode(message), qos=qos, retain=retain)

    def telemetry(
        self, seq: int, ts: int | None = None, oldest: int | None = None, **values: Any
    ) -> None:
        """Publish one telemetry sample."""
        message = Telemetry(seq=seq, oldest=oldest, ts=ts or now_ms(), values=values)
        self.publish(Channel.TELEMETRY, message)

    def online(self) -> None:
        """Publish the retained online status, as an agent does on connect."""
        self.publish(Channel.STATUS, Status(online=True, ts=now_ms()), retain=True)

    async def wait_acked(self, seq: int, within_s: float = 10.0) -> None:
        """Wait until the hub acknowledged ``seq`` (or more)."""
        await self._wait(lambda: self.acked >= seq, within_s, f"ack of seq {seq}")

    async def wait_rejects(self, count: int, within_s: float = 10.0) -> None:
        """Wait until ``count`` rejections arrived."""
        await self._wait(lambda: len(self.rejects) >= count, within_s, f"{count} rejects")

    def vanish(self) -> None:
        """Drop the TCP connection without DISCONNECT, as a device losing power does."""
        sock = self._client.socket()
        self._client.loop_stop()
        if sock is not None:
            sock.close()

    def close(self) -> None:
        """Disconnect cleanly (no last will)."""
        self._client.disconnect()
        self._client.loop_stop()
