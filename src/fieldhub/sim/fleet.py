"""Simulated devices on real MQTT connections, speaking the wire contract like an agent does.

Each device publishes a retained ``online`` status with an ``offline`` last will, telemetry on an
interval, door events and socket state, and keeps every sequenced message until the hub
acknowledges its storage (resending what stays unacknowledged). The real edge agent replaces
this once it exists; the demo then runs real agents.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from fieldhub.clock import now_ms
from fieldhub.mqtt import MqttClient, MqttError, Will
from fieldhub.protocol import (
    Ack,
    Channel,
    Event,
    State,
    Status,
    Telemetry,
    decode,
    encode,
    topic_for,
)
from fieldhub.protocol.messages import Severity
from fieldhub.sim.physics import Physics

log = logging.getLogger(__name__)

RESEND_AFTER_S = 10.0
DOOR_OPEN_TOO_LONG_S = 60.0


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """Who a simulated device is, how it logs in to the broker and how often it reports."""

    device_id: str
    username: str  # its MQTT credentials, as the hub issued them; client id = device id
    secret: str = field(repr=False)
    interval_s: float = 2.0
    start_seq: int = 0  # the last seq the hub holds for it, so a restarted demo goes on


class SimulatedDevice:
    """One device: an MQTT connection, a little physics, an in-memory outbox."""

    def __init__(self, spec: DeviceSpec, broker_url: str, rng: random.Random) -> None:
        self.spec = spec
        self._rng = rng
        self._physics = Physics(rng=rng, ambient=rng.uniform(18.0, 26.0))
        self._seq = spec.start_seq
        self._outbox: dict[int, tuple[str, bytes, float]] = {}  # seq → topic, payload, sent
        self.acked = spec.start_seq
        parts = urlsplit(broker_url)
        self._status_topic = topic_for(spec.device_id, Channel.STATUS)
        will = Status(online=False, reason="connection lost")
        self._client = MqttClient(
            parts.hostname or "127.0.0.1",
            parts.port or 1883,
            client_id=spec.device_id,
            on_message=self._on_message,
            username=spec.username,
            password=spec.secret,
            will=Will(self._status_topic, encode(will), qos=1, retain=True),
            on_connect=self._on_connect,
        )

    @property
    def unacked(self) -> int:
        """Messages waiting for the hub's storage acknowledgement."""
        return len(self._outbox)

    def _on_connect(self) -> None:
        online = Status(online=True, ts=now_ms(), reason="simulator started")
        self._client.publish(self._status_topic, encode(online), qos=1, retain=True)

    def _on_message(self, topic: str, payload: bytes) -> None:
        if topic.endswith("/ack"):
            ack: Ack = decode(Channel.ACK, payload)
            self.acked = max(self.acked, ack.seq)
            for seq in [s for s in self._outbox if s <= ack.seq]:
                del self._outbox[seq]
        else:
            log.warning("%s: hub rejected a message: %s", self.spec.device_id, payload[:300])

    def _send(self, channel: Channel, build: Callable[[int, int | None], Any]) -> None:
        self._seq += 1
        oldest = min(self._outbox, default=self._seq)
        message = build(self._seq, oldest)
        topic = topic_for(self.spec.device_id, channel)
        payload = encode(message)
        self._outbox[self._seq] = (topic, payload, time.monotonic())
        self._client.publish(topic, payload, qos=1)

    def _resend_stale(self) -> None:
        now = time.monotonic()
        for seq, (topic, payload, sent) in list(self._outbox.items()):
            if now - sent > RESEND_AFTER_S:
                self._outbox[seq] = (topic, payload, now)
                self._client.publish(topic, payload, qos=1)

    def _event(self, kind: str, severity: Severity, message: str, **data: Any) -> None:
        ts = now_ms()
        self._send(
            Channel.EVENT,
            lambda seq, oldest: Event(
                seq=seq,
                oldest=oldest,
                ts=ts,
                type=kind,
                severity=severity,
                message=message,
                data=data,
            ),
        )

    def _tick(self, dt: float) -> None:
        physics, rng = self._physics, self._rng
        physics.step(dt)
        door = physics.door
        if not door.open and rng.random() < dt / 300.0:  # about every five minutes
            door.open, door.opened_at, door.warned = True, time.monotonic(), False
            self._event("door.opened", "info", "service door opened")
        elif door.open:
            open_for = time.monotonic() - door.opened_at
            if open_for > DOOR_OPEN_TOO_LONG_S and not door.warned:
                door.warned = True
                self._event(
                    "door.open_too_long", "warning", "door open too long", seconds=round(open_for)
                )
            if rng.random() < dt / 30.0:
                door.open = False
                self._event("door.closed", "info", "service door closed", seconds=round(open_for))
        if rng.random() < dt / 1800.0:
            physics.socket_on = not physics.socket_on
            socket = "on" if physics.socket_on else "off"
            self._send(
                Channel.STATE,
                lambda seq, oldest: State(
                    seq=seq, oldest=oldest, ts=now_ms(), state={"socket": socket}
                ),
            )
        readings = physics.readings()
        ts = now_ms()
        self._send(
            Channel.TELEMETRY,
            lambda seq, oldest: Telemetry(seq=seq, oldest=oldest, ts=ts, values=readings),
        )
        self._resend_stale()

    async def run(self) -> None:
        """Connect and report until cancelled; then say goodbye with an offline status."""
        device_id = self.spec.device_id
        await self._client.connect()
        await self._client.subscribe(
            [(topic_for(device_id, Channel.ACK), 1), (topic_for(device_id, Channel.REJECT), 1)]
        )
        try:
            socket = "on" if self._physics.socket_on else "off"
            self._send(
                Channel.STATE,
                lambda seq, oldest: State(
                    seq=seq,
                    oldest=oldest,
                    ts=now_ms(),
                    state={"socket": socket, "firmware": "sim-1"},
                ),
            )
            interval = self.spec.interval_s
            await asyncio.sleep(self._rng.uniform(0, interval))  # spread the fleet out
            while True:
                self._tick(interval)
                await asyncio.sleep(interval * self._rng.uniform(0.9, 1.1))
        finally:
            goodbye = Status(online=False, ts=now_ms(), reason="simulator stopped")
            with contextlib.suppress(MqttError, TimeoutError):
                self._client.publish(self._status_topic, encode(goodbye), qos=1, retain=True)
                async with asyncio.timeout(2):
                    await self._client.flushed()
            await self._client.close()


async def run_fleet(specs: list[DeviceSpec], broker_url: str, seed: int = 1) -> None:
    """Run every device until cancelled."""
    rng = random.Random(seed)
    devices = [SimulatedDevice(s, broker_url, random.Random(rng.random())) for s in specs]
    async with asyncio.TaskGroup() as group:
        for device in devices:
            group.create_task(device.run(), name=f"sim-{device.spec.device_id}")
