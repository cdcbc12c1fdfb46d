"""Load process of ``benchmarks/connections.py``: many devices, each one real MQTT connection.

Every device behaves on the wire as the agent's uplink does (``agent/uplink.py``), minus its
outbox: CONNECT with its own credentials, client id = device id, a persistent session, a
keep-alive of 30 s and its offline status as the retained last will; then its retained
``online`` status, the subscriptions of an agent (ack, reject, cmd, desired, media) and one
telemetry report (QoS 1, its own increasing ``seq``) every ``report_s``, at a phase of its
own. A lost connection is tried again as the agent does: after 0.5 s doubling to 30 s, each
delay jittered to 50-100 %. What the broker sends is acknowledged (QoS 1) and otherwise
ignored.

The devices and their credentials come in a JSON file (``{"devices": [[id, user name, secret],
...], ...}``), never on a command line. One process holds thousands of sockets: it raises its
own open-file limit (``RLIMIT_NOFILE``) to the hard limit first, and says so on stderr.

Every second it prints one JSON line on stdout: ``connected`` now, ``connects`` and
``refused`` so far, ``reports`` sent, ``all_connected_at`` (monotonic seconds: when every
device last became connected at once, or null).

    python benchmarks/connection_load.py SPEC.json
"""

from __future__ import annotations

import asyncio
import json
import random
import resource
import sys
import time
from pathlib import Path
from typing import Final

from fieldhub.mqtt import packets
from fieldhub.protocol import Channel, Status, Telemetry, encode, topic_for

KEEPALIVE_S: Final = 30
RECONNECT_MIN_S: Final = 0.5  # the agent's UplinkSettings
RECONNECT_MAX_S: Final = 30.0
CONNECTING_AT_ONCE: Final = 256
"""Connection attempts in flight at once: a device fleet's SYNs do not all arrive in the same
millisecond; a burst of thousands overflows the broker's listen backlog and turns into
one-second kernel retransmissions that measure the backlog, not the broker."""
_SUBSCRIBED: Final = (Channel.ACK, Channel.REJECT, Channel.CMD, Channel.DESIRED, Channel.MEDIA)
_CONNACK, _PUBLISH, _PINGREQ = 0x20, 0x30, 0xC0


class Fleet:
    """Counters every device updates, and the gate on connection attempts."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.connected = 0
        self.connects = 0
        self.refused = 0
        self.reports = 0
        self.all_connected_at: float | None = None
        self.gate = asyncio.Semaphore(CONNECTING_AT_ONCE)

    def up(self) -> None:
        self.connected += 1
        self.connects += 1
        if self.connected == self.size:
            self.all_connected_at = time.monotonic()

    def snapshot(self) -> dict[str, object]:
        return {
            "connected": self.connected,
            "connects": self.connects,
            "refused": self.refused,
            "reports": self.reports,
            "all_connected_at": self.all_connected_at,
        }


class Device(asyncio.Protocol):
    """One device's connection, the whole time: connect, report, reconnect."""

    def __init__(
        self, fleet: Fleet, device_id: str, username: str, secret: str, report_s: float
    ) -> None:
        self._fleet = fleet
        self.device_id = device_id
        self._username = username
        self._secret = secret
        self._report_s = report_s
        self._status_topic = topic_for(device_id, Channel.STATUS)
        self._telemetry_topic = topic_for(device_id, Channel.TELEMETRY)
        self._seq = 0
        self._packet_id = 0
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._up = False
        self.lost = asyncio.Event()
        self.acked = asyncio.Event()

    async def live(self, host: str, port: int) -> None:
        """Connect, report until the connection is lost, try again with back-off; forever."""
        loop = asyncio.get_running_loop()
        delay = RECONNECT_MIN_S
        await asyncio.sleep(random.uniform(0, self._report_s))  # a fleet boots over time
        while True:
            self.lost.clear()
            self.acked.clear()
            try:
                async with self._fleet.gate:
                    await loop.create_connection(lambda: self, host, port)
                    await asyncio.wait_for(self.acked.wait(), 10)
            except (OSError, TimeoutError):
                self._drop()
            if self._up:
                delay = RECONNECT_MIN_S
                await self._report_until_lost()
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, RECONNECT_MAX_S)

    async def _report_until_lost(self) -> None:
        lost = asyncio.create_task(self.lost.wait())
        try:
            while not self.lost.is_set():
                self._seq += 1
                report = Telemetry(seq=self._seq, ts=int(time.time() * 1000), values={"t": 21.5})
                self._publish(self._telemetry_topic, encode(report))
                self._fleet.reports += 1
                await asyncio.wait({lost}, timeout=self._report_s)
        finally:
            lost.cancel()

    def _next_id(self) -> int:
        self._packet_id = self._packet_id % packets.MAX_PACKET_ID + 1
        return self._packet_id

    def _publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        if self._transport is not None:
            packet = packets.publish(topic, payload, 1, retain, self._next_id())
            self._transport.write(packet)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        will = packets.Will(self._status_topic, encode(Status(online=False, reason="lost")))
        transport.write(
            packets.connect(
                self.device_id,
                clean_session=False,
                keepalive_s=KEEPALIVE_S,
                username=self._username,
                password=self._secret,
                will=will,
            )
        )

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while True:
            header = packets.read_fixed_header(self._buffer)
            if header is None:
                return
            first, start, end = header
            kind = first & 0xF0
            if kind == _CONNACK:
                self._connack(bytes(self._buffer[start:end]))
            elif kind == _PUBLISH and (first >> 1) & 3 == 1 and self._transport is not None:
                _topic, packet_id, _payload = packets.parse_publish(self._buffer, first, start, end)
                self._transport.write(packets.puback(packet_id))
            del self._buffer[:end]

    def _connack(self, body: bytes) -> None:
        _session, code = packets.parse_connack(body)
        if code != 0:
            self._fleet.refused += 1
            self._drop()
            return
        self._up = True
        self._fleet.up()
        status = encode(Status(online=True, ts=int(time.time() * 1000)))
        self._publish(self._status_topic, status, retain=True)
        filters = [
            (topic_for(self.device_id, c), 0 if c == Channel.ACK else 1) for c in _SUBSCRIBED
        ]
        assert self._transport is not None
        self._transport.write(packets.subscribe(self._next_id(), filters))
        self.acked.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self._drop()

    def _drop(self) -> None:
        if self._transport is not None:
            self._transport.abort()
            self._transport = None
        if self._up:
            self._up = False
            self._fleet.connected -= 1
        self._buffer.clear()
        self.lost.set()
        self.acked.set()


def raise_file_limit() -> int:
    """The soft open-file limit raised to the hard one (each device holds a socket)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


async def run(spec: dict[str, object]) -> None:
    """Run the devices of ``spec`` until killed, printing the counters every second."""
    devices = spec["devices"]
    assert isinstance(devices, list)
    host, port, report_s = str(spec["host"]), int(str(spec["port"])), float(str(spec["report_s"]))
    fleet = Fleet(len(devices))
    async with asyncio.TaskGroup() as group:
        for entry in devices:
            group.create_task(Device(fleet, *entry, report_s).live(host, port))
        while True:
            print(json.dumps(fleet.snapshot()), flush=True)
            await asyncio.sleep(1.0)


def main() -> None:
    """``connection_load.py SPEC.json``."""
    limit = raise_file_limit()
    print(f"connection_load: open-file limit raised to {limit}", file=sys.stderr, flush=True)
    spec = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    asyncio.run(run(spec))


if __name__ == "__main__":
    main()
