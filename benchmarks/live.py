"""Live benchmark: device publish → WebSocket client, at 1,000 msg/s to 100 clients, against a
plain MQTT subscriber of the same messages in the same run; and the device page's history query.

Every part is a real one in its own process:

- **Mosquitto** (Debian package) with dynamic security, as ``tests.support.servers`` starts it.
- **The hub**: ``fieldhub hub`` on it, SQLite (``--db postgres`` for PostgreSQL), started and
  signed into as ``benchmarks/commands.py`` does (``HubProcess``, ``api_client``).
- **The load**: ``--devices`` devices registered through ``POST /api/devices``, each with its
  own MQTT login, publishing single-sample telemetry at QoS 1 on a paced schedule
  (``--rate`` messages/s in total), from a child process. Each message carries its send time
  (``t_us``, epoch µs, taken just before the publish) among its values.
- **The clients**: ``--clients`` WebSocket connections to ``/api/live`` in ``--client-procs``
  child processes, each with the API token, each subscribed to ``{"all": true}``: every client
  gets every message, the fleet page's case and the heaviest one. ``--frames array`` (default)
  opens ``/api/live?frames=array`` (what waits for a client goes out as one JSON array per
  WebSocket message); ``--frames object`` is one WebSocket message per frame.
  ``--client raw`` (default) is ``LeanWebSocket``: RFC 6455 in one ``asyncio.Protocol``, no
  library and no extension offered, each message handled as its frames are parsed. Why: the
  clients share the two cores with the hub they measure, and the ``websockets`` library
  (frames parsed in Python, asyncio streams per message) took 60-75 % of a core for 100
  clients here and put about 12 ms on p50 and 25 ms on p99 after the hub had handed the frames
  to its senders; the clients it stands for are browsers on other machines, which parse frames
  in C++. ``--client websockets`` runs the library client instead (offering permessage-deflate
  as browsers do, unless ``--no-deflate``) and gives its figures; ``client`` and ``deflate``
  (what was offered: the hub declines it today, see ``fieldhub.cli.hub``) in the result say
  which ran.
- **The raw reference**, in this process: a plain MQTT subscriber (``fieldhub.mqtt``, the admin
  login) on ``fh/v1/+/telemetry``, receiving the same messages from the same broker at the
  same time.

Latency is receive time - ``t_us``, per telemetry frame per client (``p50_ms``, ``p99_ms``), and
per message at the raw subscriber (``raw_p50_ms``, ``raw_p99_ms``), over the ``--duration``
seconds after ``--warmup`` seconds of load. All processes read the same clock (one machine).
Checked, not trusted: every client must receive every message published in the window
(``missing``: frames a client should have had and did not, ``dropped``: what the hub told
the clients it discarded); the hub's CPU share over the window is read from ``/proc``.

History: before the load, one more device publishes a day of 1-second samples of 5 keys
(86,400 instants, 432,000 values) through MQTT like any device (the hub stores them as they
come); then ``GET /api/devices/{id}/telemetry`` with ``keys`` = the 5 keys, the last 24 h,
``bucket=5m`` and ``agg=avg`` -- what the device page's 24 h chart asks
(``web/js/charts.js``: about 300 points per chart) -- is timed ``--history-runs`` times while
idle (``history_ms``: median; also the worst) and once a second during the load
(``history_load_ms``).

The last line printed is one JSON object. Targets (DESIGN §6, issue 6): ``p99_ms <= 50``,
``history_ms <= 50``.

    .venv/bin/python benchmarks/live.py [--clients 100] [--rate 1000] [--devices 50]
        [--duration 20] [--frames array|object] [--client raw|websockets] [--no-deflate]
        [--db sqlite|postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import os
import re
import statistics
import sys
import time
from array import array
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Final, cast
from urllib.parse import urlsplit

import httpx
import msgspec

sys.path.insert(0, str(Path(__file__).parent))  # sibling scripts
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # tests.support: the real servers

from tests.support.servers import Mosquitto

from commands import Child as CommandsChild
from commands import HubProcess, api_client, around_hub, percentile, register
from fieldhub.protocol import Channel, Telemetry, encode, hub_subscriptions, topic_for

SCRIPT: Final = str(Path(__file__).resolve())
DAY_S: Final = 86_400
HISTORY_KEYS: Final = ("temp", "humidity", "voltage", "current", "door")
SAMPLES_PER_MESSAGE: Final = 1000
TICK_S: Final = 0.002
TELEMETRY_FILTER: Final = hub_subscriptions("bench")[0]  # fh/v1/+/telemetry

log = logging.getLogger("bench.live")


def now_us() -> int:
    """Wall-clock microseconds: the clock every process of the run shares."""
    return time.time_ns() // 1000


def summary(values: array[float] | list[float]) -> dict[str, float]:
    """p50, p90, p99 and max of latencies in ms, rounded for printing."""
    data = list(values)
    if not data:
        return {"p50": float("nan"), "p99": float("nan"), "max": float("nan")}
    return {
        "p50": round(percentile(data, 0.50), 2),
        "p90": round(percentile(data, 0.90), 2),
        "p99": round(percentile(data, 0.99), 2),
        "max": round(max(data), 2),
    }


def merged(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures of several client processes as one: percentiles from their histograms."""
    histogram: Counter[int] = Counter()
    for part in parts:
        histogram.update({int(step): count for step, count in part["histogram"].items()})
    steps = sorted(histogram)
    total = sum(histogram.values())

    def quantile(q: float) -> float:
        rank, seen = max(1, -(-total * q // 1)), 0
        for step in steps:
            seen += histogram[step]
            if seen >= rank:
                return step / 10
        return float("nan")

    p50, p90, p99 = quantile(0.5), quantile(0.9), quantile(0.99)
    biggest = steps[-1] / 10 if steps else float("nan")
    return {
        "latencies": {"p50": p50, "p90": p90, "p99": p99, "max": biggest},
        "p50_ms": p50,
        "p99_ms": p99,
        "max_ms": biggest,
        "received": [n for part in parts for n in part["received"]],
        "dropped": sum(part["dropped"] for part in parts),
        "failed": [f for part in parts for f in part["failed"]],
        "cpu_s": sum(part["cpu_s"] for part in parts),
    }


# --------------------------------------------------------------------------------------------
# child process: WebSocket clients

WS_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3
OP_CONTINUATION, OP_TEXT = 0x0, 0x1  # the hub sends text messages only
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA
NORMAL_CLOSES: Final = (1000, 1001, 1005)  # normal, going away, no status given


class WebSocketError(ConnectionError):
    """The hub refused the handshake, broke RFC 6455 as ``LeanWebSocket`` speaks it, or the
    connection ended abnormally."""


class LeanWebSocket(asyncio.Protocol):
    """A WebSocket client (RFC 6455) in one ``asyncio.Protocol``, no library, no extension.

    It does the client handshake with the API token, sends masked frames (the subscribe
    request, pongs, the close) and parses the hub's frames from one buffer per connection:
    each whole text message, fragmented or not, goes to ``on_message`` as it is parsed, with
    no task, queue or stream between the socket and the handler. Why it exists: see the module
    docstring ("The clients"). Use it through ``lean_connect``.
    """

    def __init__(
        self, host: str, port: int, target: str, token: str, on_message: Callable[[str], None]
    ) -> None:
        key = base64.b64encode(os.urandom(16))
        self._accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest()).decode()
        self._request = (
            f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key.decode()}\r\n"
            f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n"
        ).encode()
        self._on_message = on_message
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._upgraded = False
        self._fragments: bytearray | None = None  # a fragmented message, until its last frame
        self._close_sent = False
        self._close_received: tuple[int, str] | None = None  # code and reason from the hub
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()  # the handshake succeeded
        self.closed: asyncio.Future[None] = loop.create_future()  # the connection is over

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        try:
            if self._upgraded or self._handshake():
                self._parse()
        except WebSocketError as exc:
            if self._transport is not None:
                self._transport.abort()
            self._finish(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        error: WebSocketError | None = None
        if self._close_received is not None:
            code, reason = self._close_received
            if code not in NORMAL_CLOSES:
                error = WebSocketError(f"the hub closed the WebSocket with {code} {reason!r}")
        elif not self._close_sent:
            stage = "close frame" if self._upgraded else "handshake answer"
            error = WebSocketError(f"the connection ended without a {stage}: {exc or 'EOF'}")
        self._finish(error)

    # sending

    def send_text(self, text: str) -> None:
        """Send ``text`` as one masked text frame."""
        self._send(OP_TEXT, text.encode())

    def close(self, code: int = 1000) -> None:
        """Send a close frame unless one went already, and end the connection."""
        if self._upgraded and not self._close_sent:
            self._send(OP_CLOSE, code.to_bytes(2, "big"))
        if self._transport is not None:
            self._transport.close()

    def _send(self, opcode: int, payload: bytes | bytearray) -> None:
        """One final frame, masked as every client frame must be (RFC 6455 §5.3)."""
        if self._transport is None or self._close_sent:
            return
        self._close_sent = opcode == OP_CLOSE
        size = len(payload)
        if size < 126:
            head = bytes((0x80 | opcode, 0x80 | size))
        elif size < 1 << 16:
            head = bytes((0x80 | opcode, 0x80 | 126)) + size.to_bytes(2, "big")
        else:
            head = bytes((0x80 | opcode, 0x80 | 127)) + size.to_bytes(8, "big")
        mask = os.urandom(4)
        key = int.from_bytes((mask * (size // 4 + 1))[:size], "big")
        masked = (int.from_bytes(payload, "big") ^ key).to_bytes(size, "big")
        self._transport.write(head + mask + masked)

    # receiving

    def _handshake(self) -> bool:
        """Check the hub's answer to the upgrade request once it is whole; True when open."""
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > 16384:
                raise WebSocketError("no end to the handshake answer in its first 16 KiB")
            return False
        status, *lines = self._buffer[:end].decode("latin-1").split("\r\n")
        del self._buffer[: end + 4]
        if status.split(" ", 2)[1:2] != ["101"]:
            raise WebSocketError(f"the hub answered {status!r} to the WebSocket handshake")
        headers: dict[str, str] = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        upgrade, accept = headers.get("upgrade", ""), headers.get("sec-websocket-accept", "")
        if (
            upgrade.lower() != "websocket"
            or "upgrade" not in headers.get("connection", "").lower()
            or accept != self._accept
        ):
            raise WebSocketError(
                f"bad handshake answer: Upgrade {upgrade!r}, Connection "
                f"{headers.get('connection', '')!r}, Sec-WebSocket-Accept {accept!r} "
                f"(expected {self._accept!r})"
            )
        if "sec-websocket-extensions" in headers:
            raise WebSocketError(
                f"the hub chose Sec-WebSocket-Extensions {headers['sec-websocket-extensions']!r},"
                " which this client did not offer and cannot decode"
            )
        self._upgraded = True
        self.opened.set_result(None)
        return True

    def _parse(self) -> None:
        """Handle every whole frame in the buffer; keep the rest for the next data."""
        buffer, at = self._buffer, 0
        while len(buffer) - at >= 2:
            first, second = buffer[at], buffer[at + 1]
            if first & 0x70 or second & 0x80:
                raise WebSocketError(
                    f"frame header {first:#04x} {second:#04x}: RSV bits (no extension was "
                    "agreed) or a mask (server frames are not masked)"
                )
            size, start = second & 0x7F, at + 2
            if size >= 126:
                start += 2 if size == 126 else 8
                if len(buffer) < start:
                    break
                size = int.from_bytes(buffer[at + 2 : start], "big")
            end = start + size
            if len(buffer) < end:
                break
            self._frame(bool(first & 0x80), first & 0x0F, buffer[start:end])
            at = end
        del buffer[:at]

    def _frame(self, fin: bool, opcode: int, payload: bytearray) -> None:
        """One frame: control frames answered, data frames joined into messages."""
        if opcode >= OP_CLOSE:
            if not fin or len(payload) > 125:
                raise WebSocketError(f"control frame {opcode:#x} fragmented or over 125 bytes")
            if opcode == OP_PING:
                self._send(OP_PONG, payload)
            elif opcode == OP_CLOSE:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                self._close_received = (code, payload[2:].decode(errors="replace"))
                self._send(OP_CLOSE, payload[:2])  # echo the code; the hub then ends TCP
            elif opcode != OP_PONG:
                raise WebSocketError(f"unknown control opcode {opcode:#x}")
            return
        if opcode == OP_CONTINUATION:
            if self._fragments is None:
                raise WebSocketError("a continuation frame with no message to continue")
            self._fragments += payload
            if not fin:
                return
            payload, self._fragments = self._fragments, None
        elif opcode == OP_TEXT:
            if self._fragments is not None:
                raise WebSocketError("a new message before the fragmented one ended")
            if not fin:
                self._fragments = payload
                return
        else:  # the hub sends text only
            raise WebSocketError(f"unexpected data opcode {opcode:#x}")
        try:
            text = payload.decode()
        except UnicodeDecodeError as exc:
            raise WebSocketError(f"a text message that is not UTF-8: {exc}") from exc
        self._on_message(text)

    def _finish(self, error: WebSocketError | None) -> None:
        """Settle ``opened`` (before the upgrade) or ``closed`` (after), once."""
        waiter = self.closed if self._upgraded else self.opened
        if waiter.done():
            return
        if error is None and self._upgraded:
            waiter.set_result(None)
        else:
            waiter.set_exception(error or WebSocketError("closed before the handshake ended"))


@contextlib.asynccontextmanager
async def lean_connect(
    url: str, token: str, on_message: Callable[[str], None]
) -> AsyncIterator[LeanWebSocket]:
    """A ``LeanWebSocket`` open on ``url`` (``ws://host:port/path?query``), closed on exit.

    Raises:
        WebSocketError: the handshake failed.
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    loop = asyncio.get_running_loop()
    _, ws = await loop.create_connection(
        lambda: LeanWebSocket(host, port, target, token, on_message), host, port
    )
    try:
        await ws.opened
        yield ws
    finally:
        ws.close()


class _Stamped(msgspec.Struct):
    t_us: int


class _Frame(msgspec.Struct):
    type: str
    count: int = 0


class Tally:
    """What one client process's connections received: latencies of the window, per client
    counts, and the ``subscribed`` and ``dropped`` frames."""

    def __init__(self, clients: int, array_mode: bool) -> None:
        self.window = (0, 0)  # measured between these send times (µs); set by "window"
        self.histogram: Counter[int] = Counter()  # latency in 0.1 ms steps -> frames
        self.received = [0] * clients
        self.dropped = [0] * clients
        self.ready = asyncio.Event()  # every client is subscribed
        self._clients, self._subscribed = clients, 0
        self._stamps = re.compile(r'"t_us":(\d+)').findall  # a browser parses JSON in C++
        self._decode_one = msgspec.json.Decoder(_Frame).decode
        self._decode_many = msgspec.json.Decoder(list[_Frame]).decode
        self._array_mode = array_mode

    def handle(self, text: str, index: int) -> None:
        """One WebSocket message of client ``index``, as it arrives."""
        arrived = now_us()
        start, until = self.window
        for stamp in self._stamps(text):
            sent = int(stamp)
            if start <= sent < until:
                self.histogram[(arrived - sent) // 100] += 1
                self.received[index] += 1
        if '"type":"subscribed"' in text or '"type":"dropped"' in text:
            self._control(text, index)

    def _control(self, text: str, index: int) -> None:
        """Frames other than telemetry: decoded whole."""
        frames = self._decode_many(text) if self._array_mode else [self._decode_one(text)]
        for frame in frames:
            if frame.type == "subscribed":
                self._subscribed += 1
                if self._subscribed == self._clients:
                    self.ready.set()
            elif frame.type == "dropped":
                self.dropped[index] += frame.count


async def run_clients(spec: dict[str, Any]) -> dict[str, Any]:
    """``spec['clients']`` connections subscribed to everything; latencies of the window.

    ``spec['client']`` picks the WebSocket client: ``raw`` (``lean_connect``) or ``websockets``
    (the library, offering permessage-deflate when ``spec['deflate']``).
    """
    from websockets.asyncio.client import connect

    tally = Tally(spec["clients"], array_mode=spec["frames"] == "array")
    url = spec["url"].replace("http://", "ws://") + "/api/live"
    if spec["frames"] == "array":
        url += "?frames=array"
    subscribe = json.dumps({"op": "subscribe", "all": True})

    async def raw_client(index: int) -> None:
        async with lean_connect(url, spec["token"], lambda text: tally.handle(text, index)) as ws:
            ws.send_text(subscribe)
            await ws.closed

    async def library_client(index: int) -> None:
        async with connect(
            url,
            additional_headers={"Authorization": f"Bearer {spec['token']}"},
            max_size=None,
            compression="deflate" if spec["deflate"] else None,
        ) as ws:
            await ws.send(subscribe)
            async for message in ws:
                tally.handle(message if isinstance(message, str) else message.decode(), index)

    client = raw_client if spec["client"] == "raw" else library_client
    tasks = [asyncio.create_task(client(i), name=f"ws-{i}") for i in range(spec["clients"])]
    await asyncio.wait_for(tally.ready.wait(), 60)
    print("ready", flush=True)
    line = await asyncio.to_thread(sys.stdin.readline)  # "window FROM UNTIL"
    _, start, until = line.split()
    tally.window = (int(start), int(until))
    cpu0 = time.process_time()
    await asyncio.to_thread(sys.stdin.readline)  # "stop"
    cpu = time.process_time() - cpu0
    failed = [t for t in tasks if t.done() and t.exception() is not None]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "histogram": tally.histogram,
        "received": tally.received,
        "dropped": sum(tally.dropped),
        "failed": [repr(t.exception()) for t in failed],
        "cpu_s": cpu,
    }


# --------------------------------------------------------------------------------------------
# child process: paced load


async def run_load(spec: dict[str, Any]) -> dict[str, Any]:
    """Publish ``spec['rate']`` messages/s over the devices for the seconds asked."""
    from fieldhub.mqtt import MqttClient

    async with contextlib.AsyncExitStack() as stack:
        devices = []
        for device_id, (username, secret) in spec["devices"].items():
            client = await stack.enter_async_context(
                MqttClient(
                    spec["host"], spec["port"], client_id=device_id, username=username,
                    password=secret, on_message=lambda _t, _p: None,
                )
            )  # fmt: skip
            devices.append((topic_for(device_id, Channel.TELEMETRY), client))
        print("ready", flush=True)
        line = await asyncio.to_thread(sys.stdin.readline)  # "start SECONDS"
        seconds = float(line.split()[1])
        rate, n = spec["rate"], len(devices)
        seq = [0] * n
        sent = 0
        started = time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds:
            due = int(elapsed * rate)
            while sent < due:
                index = sent % n
                seq[index] += 1
                stamp = now_us()
                message = Telemetry(
                    seq=seq[index], ts=stamp // 1000, values={"t_us": stamp, "v": sent % 100}
                )
                topic, client = devices[index]
                client.publish(topic, encode(message), qos=1)
                sent += 1
            await asyncio.sleep(TICK_S)
        elapsed = time.perf_counter() - started
        for _topic, client in devices:
            await asyncio.wait_for(client.flushed(), 30)
    return {"sent": sent, "elapsed_s": elapsed, "rate_msg_s": sent / elapsed}


# --------------------------------------------------------------------------------------------
# orchestration


class Child(CommandsChild):
    """A child process of this script (see ``commands.Child``) that also takes lines on stdin
    while it runs and finally prints its figures as one JSON line."""

    script = SCRIPT

    def say(self, line: str) -> None:
        if self.process is None or self.process.stdin is None:
            raise RuntimeError(f"{self.role} is not running")
        self.process.stdin.write(line.encode() + b"\n")

    async def result(self, timeout_s: float = 120) -> dict[str, Any]:
        if self.process is None or self.process.stdout is None:
            raise RuntimeError(f"{self.role} is not running")
        out = await asyncio.wait_for(self.process.stdout.read(), timeout_s)
        await self.process.wait()
        if self.process.returncode:
            raise RuntimeError(f"{self.role} failed:\n{self._stderr.read_text()}")
        figures: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
        return figures


class RawSubscriber:
    """The reference: a plain MQTT subscriber of every device's telemetry."""

    def __init__(self) -> None:
        self.latencies: array[float] = array("d")
        self.window = (0, 0)
        self._decode = msgspec.json.Decoder(_RawTelemetry).decode

    def on_message(self, _topic: str, payload: bytes) -> None:
        arrived = now_us()
        sent = self._decode(payload).values.t_us
        if self.window[0] <= sent < self.window[1]:
            self.latencies.append((arrived - sent) / 1000)


class _RawTelemetry(msgspec.Struct):
    values: _Stamped


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def seed_history(
    api: httpx.AsyncClient, host: str, port: int, device_id: str, login: tuple[str, str]
) -> tuple[int, int]:
    """A day of 1-second samples of 5 keys, published as the device; returns (start, end)."""
    from fieldhub.mqtt import MqttClient

    end = (time.time_ns() // 1_000_000) // 1000 * 1000
    start = end - DAY_S * 1000
    seq = 0
    async with MqttClient(
        host, port, client_id=device_id, username=login[0], password=login[1],
        on_message=lambda _t, _p: None,
    ) as client:  # fmt: skip
        for first in range(0, DAY_S, SAMPLES_PER_MESSAGE):
            seq += 1
            samples = [
                {
                    "ts": start + i * 1000,
                    "values": {
                        "temp": 20 + (i % 600) / 100,
                        "humidity": 40 + (i % 300) / 10,
                        "voltage": 12 + (i % 50) / 100,
                        "current": (i % 1000) / 100,
                        "door": i % 2,
                    },
                }
                for i in range(first, min(first + SAMPLES_PER_MESSAGE, DAY_S))
            ]
            client.publish(
                topic_for(device_id, Channel.TELEMETRY),
                encode(Telemetry(seq=seq, samples=samples)),
                qos=1,
            )
        await asyncio.wait_for(client.flushed(), 120)
    deadline = time.monotonic() + 120
    while (await api.get(f"/api/devices/{device_id}")).json()["acked_seq"] < seq:
        if time.monotonic() > deadline:
            raise RuntimeError("the hub did not store the day of history")
        await asyncio.sleep(0.2)
    return start, end + 1


async def time_history(api: httpx.AsyncClient, device_id: str, span: tuple[int, int]) -> float:
    """One device-page history request (ms), checked for its 5 x ~288 points."""
    params = {
        "keys": ",".join(HISTORY_KEYS),
        "start": span[0],
        "end": span[1],
        "bucket": "5m",
        "agg": "avg",
    }
    started = time.perf_counter()
    answer = await api.get(f"/api/devices/{device_id}/telemetry", params=params)
    elapsed = (time.perf_counter() - started) * 1000
    answer.raise_for_status()
    series = answer.json()["series"]
    if sorted(series) != sorted(HISTORY_KEYS) or not all(
        287 <= len(s) <= 289 for s in series.values()
    ):
        raise RuntimeError(f"unexpected history: {[(k, len(v)) for k, v in series.items()]}")
    return elapsed


class Window:
    """What the measured window gave: hub CPU, history timings under load, the children's
    figures and the raw reference."""

    def __init__(self) -> None:
        self.raw = RawSubscriber()
        self.under_load: list[float] = []
        self.hub_cpu_share = 0.0
        self.load: dict[str, Any] = {}
        self.clients: dict[str, Any] = {}


async def live_phase(
    args: argparse.Namespace,
    broker: Mosquitto,
    hub: HubProcess,
    clients: list[Child],
    load: Child,
    history: Callable[[], Awaitable[float]],
) -> Window:
    """Clients subscribed, raw subscriber on: the load runs for warm-up + window."""
    from fieldhub.mqtt import MqttClient

    window = Window()
    async with MqttClient(
        broker.host, broker.port, client_id="bench-raw-subscriber",
        on_message=window.raw.on_message, username=broker.admin_username,
        password=broker.admin_password,
    ) as subscriber:  # fmt: skip
        await subscriber.subscribe([(TELEMETRY_FILTER, 1)])
        await asyncio.sleep(0.3)
        begin = now_us() + int(args.warmup * 1e6)
        until = begin + int(args.duration * 1e6)
        window.raw.window = (begin, until)
        for child in clients:
            child.say(f"window {begin} {until}")
        load.say(f"start {args.warmup + args.duration}")
        await asyncio.sleep(args.warmup)
        hub_pid = hub.process.pid if hub.process else 0
        hub_cpu0, wall0 = cpu_seconds(hub_pid), time.perf_counter()
        while now_us() < until:
            if args.history_under_load:
                window.under_load.append(await history())
            await asyncio.sleep(1.0)
        window.hub_cpu_share = (cpu_seconds(hub_pid) - hub_cpu0) / (time.perf_counter() - wall0)
        window.load = await load.result()
        await asyncio.sleep(args.settle)  # stragglers of the window
    for child in clients:
        child.say("stop")
    window.clients = merged([await child.result() for child in clients])
    return window


async def measure(
    args: argparse.Namespace, broker: Mosquitto, hub: HubProcess, folder: Path
) -> dict[str, Any]:
    """History, then clients, reference and load; returns the figures."""
    children: list[Child] = []
    figures: dict[str, Any] = {}
    try:
        api, token = await api_client(hub)
        async with api:
            creds = await register(api, [f"live-{i:03d}" for i in range(args.devices)])
            history_device = (await register(api, ["history-0"]))["history-0"]
            span = await seed_history(api, broker.host, broker.port, "history-0", history_device)
            idle = [await time_history(api, "history-0", span) for _ in range(args.history_runs)]
            figures["history_ms"] = round(statistics.median(idle), 2)
            figures["history_max_ms"] = round(max(idle), 2)
            print(f"history (idle): {summary(idle)} ms over {len(idle)} requests", flush=True)
            share = [
                len(range(i, args.clients, args.client_procs)) for i in range(args.client_procs)
            ]
            clients = [
                Child(
                    "clients",
                    {
                        "url": hub.url,
                        "token": token,
                        "clients": count,
                        "frames": args.frames,
                        "client": args.client,
                        "deflate": offers_deflate(args),
                    },
                    folder,
                    name=f"clients-{i}",
                )
                for i, count in enumerate(share)
            ]
            load = Child(
                "load",
                {"host": broker.host, "port": broker.port, "devices": creds, "rate": args.rate},
                folder,
            )
            children += [*clients, load]
            await asyncio.gather(*(child.start() for child in clients))
            await load.start()
            window = await live_phase(
                args, broker, hub, clients, load, lambda: time_history(api, "history-0", span)
            )
    finally:
        for child in children:
            child.kill()
    figures.update(report(args, window))
    return figures


def offers_deflate(args: argparse.Namespace) -> bool:
    """Whether the clients offer permessage-deflate: only the library client can."""
    return bool(args.deflate and args.client == "websockets")


def report(args: argparse.Namespace, window: Window) -> dict[str, Any]:
    """Print the window's figures as lines; return them for the JSON object."""
    raw, seen = window.raw.latencies, window.clients
    received = seen["received"]
    print(f"raw:  {summary(raw)} ms, {len(raw)} messages in the window")
    print(
        f"live: {seen['latencies']} ms, per client {min(received)}..{max(received)} frames, "
        f"dropped {seen['dropped']}, clients' CPU {seen['cpu_s']:.1f} s "
        f"in {args.client_procs} process(es), {args.client} client"
    )
    if window.under_load:
        print(f"history under load: {summary(window.under_load)} ms")
    print(f"hub CPU {window.hub_cpu_share:.0%} of a core over the window")
    if seen["failed"]:
        print(f"client failures: {seen['failed'][:3]}", file=sys.stderr)
    under_load = window.under_load
    return {
        "p50_ms": round(seen["p50_ms"], 2),
        "p99_ms": round(seen["p99_ms"], 2),
        "max_ms": round(seen["max_ms"], 2),
        "raw_p50_ms": round(percentile(list(raw), 0.5), 2),
        "raw_p99_ms": round(percentile(list(raw), 0.99), 2),
        "clients": args.clients,
        "client_procs": args.client_procs,
        "rate_msg_s": round(window.load["rate_msg_s"], 1),
        "frames": args.frames,
        "client": args.client,
        "deflate": offers_deflate(args),
        "window_messages": len(raw),
        "missing": sum(max(0, len(raw) - got) for got in received),
        "dropped": seen["dropped"],
        "client_failures": len(seen["failed"]),
        "history_load_ms": round(statistics.median(under_load), 2) if under_load else None,
        "hub_cpu_share": round(window.hub_cpu_share, 2),
        "clients_cpu_share": round(seen["cpu_s"] / (args.duration + args.settle), 2),
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    """Start broker, database and hub, measure, stop, and return the figures."""
    figures, dropped = await around_hub(args, "fieldhub-live-bench-", measure)
    figures["broker_dropped"] = dropped
    figures.update({"db": args.db, "duration_s": args.duration, "cpus": os.cpu_count()})
    return figures


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=100, help="WebSocket clients")
    parser.add_argument("--client-procs", type=int, default=2, help="processes they run in")
    parser.add_argument("--rate", type=float, default=1000.0, help="messages/s, all devices")
    parser.add_argument("--devices", type=int, default=50, help="publishing devices")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=3.0, help="load before measuring")
    parser.add_argument("--settle", type=float, default=2.0, help="wait for stragglers")
    parser.add_argument("--frames", choices=("array", "object"), default="array")
    parser.add_argument("--client", choices=("raw", "websockets"), default="raw",
                        help="WebSocket client: lean (raw) or the websockets library")  # fmt: skip
    parser.add_argument("--no-deflate", dest="deflate", action="store_false",
                        help="the websockets client does not offer permessage-deflate (browsers "
                        "do; the raw client never does)")  # fmt: skip
    parser.add_argument("--history-runs", type=int, default=20, help="idle history requests")
    parser.add_argument("--history-under-load", action="store_true",
                        help="also time the history once a second while the load runs")  # fmt: skip
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--role", choices=("main", "clients", "load"), default="main",
                        help=argparse.SUPPRESS)  # fmt: skip
    parser.add_argument("--spec", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    options = parse_args()
    if options.role == "main":
        print(json.dumps(asyncio.run(main(options))))
    else:
        child_spec = json.loads(options.spec.read_text(encoding="utf-8"))
        child_main = run_clients if options.role == "clients" else run_load
        print(json.dumps(asyncio.run(child_main(child_spec))))
