"""Live benchmark: device publish → WebSocket client, at 1,000 msg/s to 100 clients, against a
plain MQTT subscriber of the same messages in the same run; and the device page's history query.

Every part is a real one in its own process:

- **Mosquitto** (Debian package) with dynamic security, as ``fieldhub.testing.servers`` starts it.
- **The hub**: ``fieldhub hub`` on it, SQLite (``--db postgres`` for PostgreSQL), started and
  signed into as ``benchmarks/commands.py`` does (``HubProcess``, ``api_client``).
- **The load**: ``--devices`` devices registered through ``POST /api/devices``, each with its
  own MQTT login, publishing single-sample telemetry at QoS 1 on a paced schedule
  (``--rate`` messages/s in total), from a child process. Each message carries its send time
  (``t_us``, epoch µs, taken just before the publish) among its values.
- **The clients**: ``--clients`` WebSocket connections to ``/api/live`` in a child process
  (the ``websockets`` library, offering permessage-deflate as browsers do), each with the API
  token, each subscribed to ``{"all": true}``: every client gets every message, the fleet
  page's case and the heaviest one. ``--frames array`` (default) opens ``/api/live?frames=array``
  (what waits for a client goes out as one JSON array per WebSocket message);
  ``--frames object`` is one WebSocket message per frame.
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
        [--duration 20] [--frames array|object] [--db sqlite|postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import re
import statistics
import sys
import time
from array import array
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

import httpx
import msgspec

sys.path.insert(0, str(Path(__file__).parent))

from commands import Child as CommandsChild
from commands import HubProcess, api_client, around_hub, percentile, register
from fieldhub.protocol import Channel, Telemetry, encode, hub_subscriptions, topic_for
from fieldhub.testing.servers import Mosquitto

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


class _Stamped(msgspec.Struct):
    t_us: int


class _Frame(msgspec.Struct):
    type: str
    count: int = 0


async def run_clients(spec: dict[str, Any]) -> dict[str, Any]:
    """``spec['clients']`` connections subscribed to everything; latencies of the window."""
    from websockets.asyncio.client import connect

    decode_one = msgspec.json.Decoder(_Frame).decode
    decode_many = msgspec.json.Decoder(list[_Frame]).decode
    stamps = re.compile(r'"t_us":(\d+)').findall  # a browser parses JSON in C++; so does this
    array_mode = spec["frames"] == "array"
    window = [0, 0]  # measured between these send times (µs); set by the "window" line
    histogram: Counter[int] = Counter()  # latency in 0.1 ms steps -> frames
    received = [0] * spec["clients"]
    dropped = [0] * spec["clients"]
    url = spec["url"].replace("http://", "ws://") + "/api/live"
    if array_mode:
        url += "?frames=array"
    headers = {"Authorization": f"Bearer {spec['token']}"}
    compression = "deflate" if spec["deflate"] else None

    def control(message: str | bytes, index: int, ready: asyncio.Event, counted: list[int]) -> None:
        """Frames other than telemetry: decoded whole."""
        for frame in decode_many(message) if array_mode else [decode_one(message)]:
            if frame.type == "subscribed":
                counted[0] += 1
                if counted[0] == spec["clients"]:
                    ready.set()
            elif frame.type == "dropped":
                dropped[index] += frame.count

    async def client(index: int, ready: asyncio.Event, counted: list[int]) -> None:
        async with connect(
            url, additional_headers=headers, max_size=None, compression=compression
        ) as ws:
            await ws.send(json.dumps({"op": "subscribe", "all": True}))
            async for message in ws:
                arrived = now_us()
                text = message if isinstance(message, str) else message.decode()
                for stamp in stamps(text):
                    sent = int(stamp)
                    if window[0] <= sent < window[1]:
                        histogram[(arrived - sent) // 100] += 1
                        received[index] += 1
                if '"type":"subscribed"' in text or '"type":"dropped"' in text:
                    control(text, index, ready, counted)

    ready = asyncio.Event()
    subscribed = [0]
    tasks = [
        asyncio.create_task(client(i, ready, subscribed), name=f"ws-{i}")
        for i in range(spec["clients"])
    ]
    await asyncio.wait_for(ready.wait(), 60)
    print("ready", flush=True)
    line = await asyncio.to_thread(sys.stdin.readline)  # "window FROM UNTIL"
    _, start, until = line.split()
    window[:] = [int(start), int(until)]
    cpu0 = time.process_time()
    await asyncio.to_thread(sys.stdin.readline)  # "stop"
    cpu = time.process_time() - cpu0
    failed = [t for t in tasks if t.done() and t.exception() is not None]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "histogram": histogram,
        "received": received,
        "dropped": sum(dropped),
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
                        "deflate": args.deflate,
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


def report(args: argparse.Namespace, window: Window) -> dict[str, Any]:
    """Print the window's figures as lines; return them for the JSON object."""
    raw, seen = window.raw.latencies, window.clients
    received = seen["received"]
    print(f"raw:  {summary(raw)} ms, {len(raw)} messages in the window")
    print(
        f"live: {seen['latencies']} ms, per client {min(received)}..{max(received)} frames, "
        f"dropped {seen['dropped']}, clients' CPU {seen['cpu_s']:.1f} s "
        f"in {args.client_procs} process(es)"
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
        "deflate": args.deflate,
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
    parser.add_argument("--no-deflate", dest="deflate", action="store_false",
                        help="clients do not offer permessage-deflate (browsers do)")  # fmt: skip
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
