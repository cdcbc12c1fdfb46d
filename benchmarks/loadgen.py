"""Load generator: D simulated devices publishing fieldhub telemetry over raw MQTT 3.1.1.

The ingest benchmark compares the hub with a C subscriber on the same load, so the load must
come faster than either can take it. A general MQTT client spends several microseconds of
Python per message; this speaks the few packets it needs (CONNECT, PUBLISH, PUBACK,
PINGREQ, DISCONNECT) itself over ``asyncio.Protocol`` connections, encodes each device's packets
before the clock starts, and hands the kernel tens of kilobytes per write.

Run it as its own process so that it does not share the GIL with the hub: from a shell
(``python benchmarks/loadgen.py --devices 50 --qos 1 --duration 5 --port 1883``) or from an
async benchmark with :func:`run_in_subprocess`.

Brokers refuse anonymous clients: give every device its own credentials as the hub issued
them (``credentials``; ``--credentials FILE`` with a JSON object ``{device id: [user name,
secret]}``, so that no secret is on a command line), or one ``--username``/``--password``
for all (a broker admin allowed to publish anywhere).

With ``ca_file`` (``--cafile``) every device speaks MQTT over TLS, verifying the broker against
that CA with fieldhub's own client context (``fieldhub.mqtt.tls``), as an agent does.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import socket
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

import msgspec

from fieldhub.mqtt.tls import broker_context
from fieldhub.protocol import Channel, Sample, Telemetry, encode, topic_for

VALUES: Final[dict[str, bool | int | float | str]] = {
    "temperature": 21.5,
    "voltage": 12.1,
    "door_open": False,
    "socket_on": True,
}
"""What every simulated sample reports: the units of the seed's Pi (DESIGN §1)."""

KEEPALIVE_S: Final = 60
"""Sent in CONNECT. No keepalive pings are needed: a device publishes without pause."""

WRITE_CHUNK_BYTES: Final = 64 * 1024
"""Bytes handed to one QoS 0 write: large enough that per-write overhead vanishes, small
enough that devices take turns on the event loop and share the broker fairly."""

SEND_BUFFER_BYTES: Final = 128 * 1024
"""Kernel send buffer per connection. Left to autotuning, loopback buffers grow to megabytes
per socket and a QoS 0 run "ends" with seconds of messages still queued for the broker; a
small buffer keeps the write side honest, so ``duration_s`` is what the broker sees."""

PREBUILD_BYTES: Final = 256 * 1024 * 1024
"""Memory for packets encoded before the clock starts, shared by all devices (but at least
one QoS 1 window each). A run that needs more encodes the rest while it runs, in chunks of
the same size per device."""

PACE_TICK_S: Final = 0.01
"""A paced device (``rate``) writes what is due at most this often."""

CONNECT_CONCURRENCY: Final = 200
"""Connections opened at once, so that thousands of devices do not overflow the broker's
listen backlog."""

DRAIN_TIMEOUT_S: Final = 30.0
"""How long to wait, after the deadline, for the broker to take what was written."""

_SCRIPT: Final = str(Path(__file__).resolve())
_DISCONNECT: Final = b"\xe0\x00"
_PINGREQ: Final = b"\xc0\x00"
_PINGRESP: Final = b"\xd0\x00"
_CONNACK_LEN: Final = 4
_PUBACK: Final = 0x40
_PUBACK_LEN: Final = 4
_CONNACK_CODES: Final = {
    1: "unacceptable protocol version",
    2: "client identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorised",
}


class LoadResult(msgspec.Struct, frozen=True, kw_only=True):
    """What one run published. Every counted message reached the broker: at QoS 1 it was
    acknowledged; at QoS 0 the broker answered a PINGREQ sent after it. Whether the broker
    then delivered it is for the subscriber to count."""

    qos: int
    samples_per_msg: int
    elapsed_s: float
    """From the moment every device was connected until the broker had taken the last
    message of every device."""
    sent: dict[str, int]
    """Messages per device id; device ``d`` published seqs ``first_seq..first_seq+sent[d]-1``
    (``publish_load``'s ``first_seq``, 1 unless a run goes on where an earlier one stopped)."""

    @property
    def total(self) -> int:
        """Messages published by all devices."""
        return sum(self.sent.values())

    @property
    def rate(self) -> float:
        """Messages per second over the run."""
        return self.total / self.elapsed_s if self.elapsed_s > 0 else 0.0


def _varint(n: int) -> bytes:
    """MQTT "remaining length": 7 bits per byte, least significant first."""
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | 0x80 if n else digit)
        if not n:
            return bytes(out)


def _string(s: str) -> bytes:
    """MQTT UTF-8 string: two-byte big-endian length, then the bytes."""
    raw = s.encode()
    return len(raw).to_bytes(2, "big") + raw


def connect_packet(client_id: str, username: str | None, password: str | None) -> bytes:
    """CONNECT for MQTT 3.1.1 with a clean session and no will."""
    flags = 0x02
    payload = _string(client_id)
    if username is not None:
        flags |= 0x80
        payload += _string(username)
        if password is not None:
            flags |= 0x40
            payload += _string(password)
    variable = _string("MQTT") + bytes([4, flags]) + KEEPALIVE_S.to_bytes(2, "big")
    body = variable + payload
    return b"\x10" + _varint(len(body)) + body


class PacketPlan(msgspec.Struct, frozen=True):
    """Everything that is the same for all packets of one run."""

    qos: int
    samples_per_msg: int
    ts0: int
    """Epoch ms of sample 0. Sample ``i`` of a device has ``ts0 + i``: (device, ts) is unique
    across the run, so a store keyed on it keeps every sample. Above 1,000 samples/s per
    device the timestamps run ahead of the wall clock, which no ingest path should mind."""

    def payload(self, seq: int) -> bytes:
        """Telemetry ``seq`` of any device, encoded by the wire contract itself."""
        k = self.samples_per_msg
        first = self.ts0 + (seq - 1) * k
        if k == 1:
            return encode(Telemetry(seq=seq, ts=first, values=VALUES))
        samples = [Sample(ts=first + j, values=VALUES) for j in range(k)]
        return encode(Telemetry(seq=seq, samples=samples))

    def packets(self, device_id: str, first_seq: int, count: int) -> tuple[bytes, list[int]]:
        """PUBLISH packets for seqs ``first_seq..first_seq+count-1`` of one device, back to
        back, and the end offset of each. At QoS 1 the packet id is derived from seq; it stays
        unique among in-flight messages because the window is far below 65535."""
        topic = _string(topic_for(device_id, Channel.TELEMETRY))
        flags = bytes([0x30 | self.qos << 1])
        fixed = len(topic) + (2 if self.qos else 0)
        heads: dict[int, bytes] = {}  # fixed header + topic, by remaining length
        parts: list[bytes] = []
        ends: list[int] = []
        end = 0
        for seq in range(first_seq, first_seq + count):
            body = self.payload(seq)
            remaining = fixed + len(body)
            head = heads.get(remaining)
            if head is None:
                head = heads[remaining] = flags + _varint(remaining) + topic
            if self.qos:
                parts += (head, ((seq - 1) % 0xFFFF + 1).to_bytes(2, "big"), body)
            else:
                parts += (head, body)
            end += len(head) - len(topic) + remaining
            ends.append(end)
        return b"".join(parts), ends


class _Device(asyncio.Protocol):
    """One simulated device: a TCP connection that writes its packets as fast as the broker
    takes them (QoS 0: socket back-pressure; QoS 1: at most ``window`` unacknowledged)."""

    def __init__(
        self,
        device_id: str,
        plan: PacketPlan,
        *,
        limit: int | None,
        fill: int,
        window: int,
        connect: bytes,
        rate: float | None = None,
        first_seq: int = 1,
    ) -> None:
        loop = asyncio.get_running_loop()
        self.device_id = device_id
        self._first_seq = first_seq
        self.sent = 0
        self.connected: asyncio.Future[None] = loop.create_future()
        self.done: asyncio.Future[None] = loop.create_future()
        self._loop = loop
        self._plan = plan
        self._limit = limit
        self._fill = fill
        self._window = window
        self._connect = connect
        self._transport: asyncio.Transport | None = None
        self._socket: socket.socket  # set with the transport
        self._buffer = memoryview(b"")
        self._ends: list[int] = []
        self._next = 0  # index into _ends of the next packet to write
        self._inflight = 0
        self._acks = b""  # a PUBACK split across reads
        self._paused = False
        self._stopping = False  # no more PUBLISH; waiting for the broker to take what was sent
        self._closing = False  # DISCONNECT sent: the connection may now end
        self._deadline = float("inf")
        self._rate = rate  # messages per second; None: as fast as the broker takes them
        self._started = 0.0
        self._paced = False  # a _pump is scheduled for when the next message is due
        self._refill()

    def _refill(self) -> None:
        """Encode the next chunk of packets; called before the clock starts and, for long
        runs, whenever the chunk is used up."""
        count = self._fill if self._limit is None else min(self._fill, self._limit - self.sent)
        data, ends = self._plan.packets(self.device_id, self._first_seq + self.sent, count)
        self._buffer, self._ends, self._next = memoryview(data), ends, 0

    def start(self, deadline: float) -> None:
        """Begin publishing; stop at ``deadline`` (``time.monotonic``) or at the limit."""
        self._deadline = deadline
        self._started = time.monotonic()
        self._pump()

    def abort(self) -> None:
        """Drop the connection at once (cleanup after a failure elsewhere)."""
        if self._transport is not None:
            self._transport.abort()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._socket = transport.get_extra_info("socket")
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        transport.write(self._connect)

    def data_received(self, data: bytes) -> None:
        if not self.connected.done():
            self._connack(data)
        elif self._plan.qos:
            self._pubacks(data)
        elif data == _PINGRESP and self._stopping:
            self._close()
        else:
            self._fail(ConnectionError(f"{self.device_id}: unexpected packet {data[:8]!r}"))

    def _pubacks(self, data: bytes) -> None:
        # Acknowledge this segment now, not after Linux's delayed-ACK timer: the broker's
        # PUBACKs are small writes that Nagle holds back until then, and with the refill
        # below waiting for half a window a lone connection would stall 40 ms per round.
        self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        data = self._acks + data
        whole = len(data) - len(data) % _PUBACK_LEN
        if data[0:whole:_PUBACK_LEN] != bytes([_PUBACK]) * (whole // _PUBACK_LEN):
            self._fail(ConnectionError(f"{self.device_id}: unexpected packet {data[:8]!r}"))
            return
        self._acks = data[whole:]
        self._inflight -= whole // _PUBACK_LEN
        if self._stopping:
            if not self._inflight:
                self._close()
        elif self._inflight <= self._window // 2:
            # Refill only once half the window is free: a few large writes cost far less
            # CPU than one small write per PUBACK that trickles in.
            self._pump()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        # Not self._pump() here: closing the transport from inside resume_writing makes
        # CPython call connection_lost twice (python/cpython#156512).
        self._loop.call_soon(self._pump)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._closing:
            self._fail(exc or ConnectionError(f"{self.device_id}: broker closed the connection"))
        elif not self.done.done():
            self.done.set_result(None)

    # publishing

    def _connack(self, data: bytes) -> None:
        if len(data) != _CONNACK_LEN or data[0] != 0x20:
            self._fail(ConnectionError(f"{self.device_id}: expected CONNACK, got {data!r}"))
        elif data[3]:
            reason = _CONNACK_CODES.get(data[3], f"code {data[3]}")
            self._fail(ConnectionRefusedError(f"{self.device_id}: broker refused: {reason}"))
        else:
            self.connected.set_result(None)

    def _pump(self) -> None:
        """Write as many packets as the flow control allows, in one write."""
        transport = self._transport
        if transport is None or self._paused or self._stopping:
            return
        if self.sent == self._limit or time.monotonic() >= self._deadline:
            self._stop()
            return
        if self._next == len(self._ends):
            self._refill()
        start = self._ends[self._next - 1] if self._next else 0
        if self._plan.qos:
            count = min(self._window - self._inflight, len(self._ends) - self._next)
            if count <= 0:
                return  # wait for PUBACKs
        else:
            end = bisect.bisect_right(self._ends, start + WRITE_CHUNK_BYTES, lo=self._next)
            count = max(1, end - self._next)
        if self._rate is not None:
            count = min(count, self._due(self._rate))
            if count <= 0:
                return
        self._next += count
        transport.write(self._buffer[start : self._ends[self._next - 1]])
        self.sent += count
        if self._plan.qos:
            self._inflight += count
        else:
            # Yield to the other devices, then go on unless the socket pushed back.
            self._loop.call_soon(self._pump)

    def _due(self, rate: float) -> int:
        """Paced at ``rate`` msg/s: how many messages are due now; if none, call _pump again
        when one is (at most every ``PACE_TICK_S``, so that a device writes a few at a time)."""
        due = int((time.monotonic() - self._started) * rate) + 1 - self.sent
        if due <= 0 and not self._paced:
            self._paced = True
            self._loop.call_later(max(PACE_TICK_S, (1 - due) / rate), self._paced_pump)
        return due

    def _paced_pump(self) -> None:
        self._paced = False
        self._pump()

    def _stop(self) -> None:
        """Publish no more; close once the broker has taken everything: at QoS 1 when the
        last PUBACK is in, at QoS 0 when it answers a PINGREQ queued behind the last PUBLISH
        (it handles a connection's packets in order, so it has then read them all)."""
        self._stopping = True
        if self._plan.qos == 0:
            assert self._transport is not None
            self._transport.write(_PINGREQ)
        elif not self._inflight:
            self._close()

    def _close(self) -> None:
        assert self._transport is not None
        self._closing = True
        self._transport.write(_DISCONNECT)
        self._transport.close()  # flushes what is buffered, then connection_lost

    def _fail(self, exc: BaseException) -> None:
        for future in (self.connected, self.done):
            if not future.done():
                future.set_exception(exc)
        self.abort()


async def publish_load(
    host: str,
    port: int,
    *,
    devices: int,
    qos: int = 0,
    duration_s: float | None = None,
    max_per_device: int | None = None,
    samples_per_msg: int = 1,
    window: int = 100,
    device_prefix: str = "bench",
    username: str | None = None,
    password: str | None = None,
    credentials: Mapping[str, tuple[str, str]] | None = None,
    ca_file: str | None = None,
    rate: float | None = None,
    first_seq: int = 1,
) -> LoadResult:
    """Connect ``devices`` devices (ids ``{device_prefix}-00000``…), then have each publish
    telemetry with seq ``first_seq``, ``first_seq + 1``, … until ``max_per_device`` messages
    or ``duration_s`` seconds, whichever comes first; at QoS 1 wait until every message is
    acknowledged. A ``first_seq`` past 1 lets a benchmark load the same (registered) devices
    again where their last run stopped, instead of registering new ones per phase.

    ``window`` bounds unacknowledged QoS 1 messages per connection so that the broker is
    never overrun. With ``ca_file``, over TLS. ``rate`` (messages per second, all devices
    together) paces the load instead, evenly over the devices, for measuring latency at a load
    the receiver can take. Raises ``ConnectionError`` if any device is refused or disconnected.
    """
    if qos not in (0, 1):
        raise ValueError("qos must be 0 or 1")
    if duration_s is None and max_per_device is None:
        raise ValueError("give duration_s, max_per_device or both")
    if devices < 1 or samples_per_msg < 1:
        raise ValueError("devices and samples_per_msg must be at least 1")
    if not 1 <= window < 0xFFFF:
        raise ValueError("window must be between 1 and 65534 (packet ids must stay unique)")
    plan = PacketPlan(qos, samples_per_msg, time.time_ns() // 1_000_000)
    packet_size = len(plan.packets(f"{device_prefix}-00000", 1, 1)[0])
    fill = max(window, PREBUILD_BYTES // (devices * packet_size))  # packets per device
    fleet = [
        _Device(
            device_id,
            plan,
            limit=max_per_device,
            fill=fill,
            window=window,
            connect=connect_packet(
                device_id, *(credentials or {}).get(device_id, (username, password))
            ),
            rate=None if rate is None else rate / devices,
            first_seq=first_seq,
        )
        for device_id in (f"{device_prefix}-{i:05d}" for i in range(devices))
    ]
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    tls = broker_context(ca_file=ca_file) if ca_file is not None else None

    async def connect(device: _Device) -> None:
        async with gate:
            await loop.create_connection(lambda: device, host, port, ssl=tls)
            await device.connected

    try:
        await asyncio.gather(*map(connect, fleet))
        started = time.monotonic()
        deadline = started + duration_s if duration_s is not None else float("inf")
        for device in fleet:
            device.start(deadline)
        await asyncio.wait_for(
            asyncio.gather(*(d.done for d in fleet)),
            timeout=None if duration_s is None else duration_s + DRAIN_TIMEOUT_S,
        )
    finally:
        for device in fleet:
            device.abort()
    elapsed = time.monotonic() - started
    return LoadResult(
        qos=qos,
        samples_per_msg=samples_per_msg,
        elapsed_s=elapsed,
        sent={d.device_id: d.sent for d in fleet},
    )


async def run_in_subprocess(
    host: str,
    port: int,
    *,
    devices: int,
    qos: int = 0,
    duration_s: float | None = None,
    max_per_device: int | None = None,
    samples_per_msg: int = 1,
    window: int = 100,
    device_prefix: str = "bench",
    username: str | None = None,
    password: str | None = None,
    credentials: Mapping[str, tuple[str, str]] | None = None,
    ca_file: str | None = None,
    rate: float | None = None,
    first_seq: int = 1,
) -> LoadResult:
    """:func:`publish_load` in a child Python process, so the load has its own GIL and core.

    Awaiting it does not block the caller's event loop: start it with ``asyncio.create_task``
    next to the hub under test. The child encodes its packets first (up to a second or two
    for large runs), so measure the receiver from its first message, not from this call.
    """
    argv = [
        f"--host={host}",
        f"--port={port}",
        f"--devices={devices}",
        f"--qos={qos}",
        f"--samples={samples_per_msg}",
        f"--window={window}",
        f"--prefix={device_prefix}",
        f"--first-seq={first_seq}",
    ]
    for flag, value in (
        ("duration", duration_s),
        ("count", max_per_device),
        ("username", username),
        ("password", password),
        ("cafile", ca_file),
        ("rate", rate),
    ):
        if value is not None:
            argv.append(f"--{flag}={value}")
    with tempfile.TemporaryDirectory(prefix="fieldhub-loadgen-") as tmp:
        if credentials:
            path = Path(tmp) / "credentials.json"  # the directory is private (mode 0700)
            path.write_text(json.dumps(credentials), encoding="utf-8")
            argv.append(f"--credentials={path}")
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            _SCRIPT,
            *argv,
            "--json",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
    if process.returncode:
        raise RuntimeError(f"loadgen exited with {process.returncode}: {err.decode().strip()}")
    return msgspec.json.decode(out, type=LoadResult)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: publish, then print one summary line (or the LoadResult as JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--qos", type=int, choices=(0, 1), default=0)
    parser.add_argument("--duration", type=float, help="seconds (default 5 without --count)")
    parser.add_argument("--count", type=int, help="messages per device")
    parser.add_argument("--samples", type=int, default=1, help="samples per message")
    parser.add_argument("--window", type=int, default=100, help="QoS 1 in-flight per device")
    parser.add_argument("--prefix", default="bench", help="device id prefix")
    parser.add_argument("--rate", type=float, help="messages/s, all devices (default: flat out)")
    parser.add_argument("--first-seq", type=int, default=1, help="each device's first seq")
    parser.add_argument("--username")
    parser.add_argument("--password")
    parser.add_argument(
        "--credentials", type=Path, help="JSON file: {device id: [user name, secret]}"
    )
    parser.add_argument("--cafile", help="speak TLS, trusting this CA (PEM)")
    parser.add_argument("--json", action="store_true", help="print the LoadResult as JSON")
    args = parser.parse_args(argv)
    credentials = None
    if args.credentials is not None:
        loaded = json.loads(args.credentials.read_text(encoding="utf-8"))
        credentials = {device: (user, secret) for device, (user, secret) in loaded.items()}
    duration = args.duration if args.duration is not None or args.count else 5.0
    result = asyncio.run(
        publish_load(
            args.host,
            args.port,
            devices=args.devices,
            qos=args.qos,
            duration_s=duration,
            max_per_device=args.count,
            samples_per_msg=args.samples,
            window=args.window,
            device_prefix=args.prefix,
            username=args.username,
            password=args.password,
            credentials=credentials,
            ca_file=args.cafile,
            rate=args.rate,
            first_seq=args.first_seq,
        )
    )
    if args.json:
        sys.stdout.buffer.write(msgspec.json.encode(result) + b"\n")
    else:
        print(
            f"{len(result.sent)} devices, QoS {result.qos}, {result.samples_per_msg} sample(s)"
            f"/msg: {result.total:,} messages in {result.elapsed_s:.2f} s"
            f" = {result.rate:,.0f} msg/s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
