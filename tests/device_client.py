"""A device for tests: a paho-mqtt client speaking the wire contract.

paho is a different MQTT implementation from the hub's (gmqtt), so the hub's client is never
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

    def __init__(self, broker_url: str, device_id: str, *, will: bool = True) -> None:
        parts = urlsplit(broker_url)
        self.device_id = device_id
        self.acked = 0
        self.rejects: list[Reject] = []
        self.acks: list[int] = []
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=device_id, protocol=mqtt.MQTTv311
        )
        if will:
            self._client.will_set(
                topic_for(device_id, Channel.STATUS),
                encode(Status(online=False, reason="connection lost")),
                qos=1,
                retain=True,
            )
        self._client.on_message = self._on_message
        self._address = (parts.hostname or "127.0.0.1", parts.port or 1883)

    @classmethod
    async def connect(cls, broker_url: str, device_id: str, *, will: bool = True) -> TestDevice:
        """A connected device, subscribed to its acks and rejections."""
        device = cls(broker_url, device_id, will=will)
        client = device._client
        client.connect_async(*device._address, keepalive=5)
        client.loop_start()
        await device._wait(client.is_connected, 10, "connection")
        client.subscribe(
            [(topic_for(device_id, Channel.ACK), 1), (topic_for(device_id, Channel.REJECT), 1)]
        )
        await asyncio.sleep(0.2)  # let the SUBACK arrive before the test publishes
        return device

    def _on_message(self, _client: Any, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        if message.topic.endswith("/ack"):
            ack: Ack = decode(Channel.ACK, message.payload)
            self.acks.append(ack.seq)
            self.acked = max(self.acked, ack.seq)
        else:
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
