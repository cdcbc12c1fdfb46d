"""Command benchmark: REST → device → REST at 100 commands/s during ingest, against a raw MQTT
request/reply over the same broker, in the same run.

Every part is a real one in its own process:

- **Mosquitto** (Debian package) with dynamic security, as ``tests.support.servers`` starts it.
- **The hub**: ``fieldhub hub --broker mqtt://admin:…@127.0.0.1:P --data DIR --http … --instance
  bench`` (SQLite by default, ``--db postgres`` for PostgreSQL). An admin is made beforehand with
  ``fieldhub user add``; the benchmark logs in and makes an API token, then registers every
  device through ``POST /api/devices`` (each gets its own MQTT credentials).
- **The agents**: ``--agents`` real :class:`fieldhub.agent.service.Agent` instances with mock pins
  and a lock relay (as ``tests/fleet.py`` configures them), in one child process. The same
  process runs the raw reference's responder.
- **Ingest load**: ``--load-devices`` devices publishing telemetry at QoS 1 at a paced,
  sustained rate (``--load-msgs`` messages/s in total, each of ``--load-samples`` samples of the
  four values of ``loadgen.VALUES``), from a child process, with the packets of
  ``benchmarks/loadgen.py`` (the foundation benchmark's generator; its own devices publish as
  fast as they can, which is a throughput test, not a background load).
- **This process**: the REST client (plain HTTP/1.1 over keep-alive connections, see ``Clients``)
  and the raw requester.

While the load runs, three phases of ``--duration`` seconds each, open-loop at ``--rate``/s (each
request starts at its scheduled time, whatever the previous one is doing):

1. **Raw reference**: this process publishes a request (QoS 1) to a topic the responder in the
   agents' process subscribes to; it publishes the same payload back (QoS 1); the round trip is
   publish → reply received (``raw_p50_ms``, ``raw_p99_ms``).
2. **Floor**: the legs of a command that are not MQTT, each alone: ``GET /api/health`` (the
   hub's cheapest authenticated route, through the same client) at ``--rate``/s
   (``http_p50_ms``, ``http_p99_ms``) and, meanwhile, a claim-sized write made durable with
   ``fsync`` as often in the benchmark's folder (``fsync_p50_ms``, ``fsync_p99_ms``): an
   agent's claim must be on disk before its action runs. ``floor_p50_ms`` adds the medians of
   raw, HTTP and fsync: what a command's unavoidable legs take on this machine under this
   load, before any of the hub's or the agent's own work (an estimate: a sum of medians).
3. **Commands**: ``POST /api/devices/{id}/commands`` with ``lock.unlock`` and ``lock.lock``
   alternately per device (``wait=true``), round robin over the agents; the round trip is the
   request sent → the 200 response with status ``succeeded`` in hand (``p50_ms``, ``p99_ms``).

Checked, not trusted: ``succeeded`` counts 200 answers with status ``succeeded``;
``executed_twice`` counts action runs beyond the first per command id, from the agents' own
registries (every run of an action, by the command id it ran for); the agents' ``executed``
counters must match. ``ingest_lost`` compares what the load devices had acknowledged by the
broker with what the hub says it stored (each device's ``acked_seq``), and ``broker_dropped``
is Mosquitto's own count.

The last line printed is one JSON object. Targets (DESIGN §6): ``p50_ms <= 3``,
``p99_ms <= 15``, ``executed_twice == 0``, ``succeeded == sent``; and against the floor of the
same run (issue 18): ``p50_ms <= 3 * floor_p50_ms`` and ``p99_ms <= 3 * floor_p99_ms``
(``ratio_floor_p50``, ``ratio_floor_p99``; the floor's p99 adds its legs' p99s).

``--workers 2`` runs ``fieldhub hub --workers 2`` on PostgreSQL (docs/scaling.md): HTTP
requests and ingest spread over two hub processes; ``hub_cpu_pct`` is then the workers' sum.

    .venv/bin/python benchmarks/commands.py [--agents 10] [--rate 100] [--duration 20]
        [--load-msgs 5000] [--db sqlite|postgres] [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, Final, NamedTuple, TypeVar

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).parent))  # sibling scripts
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # tests.support: the real servers

from tests.support.servers import Mosquitto, Postgres, free_port

from loadgen import PacketPlan, connect_packet

ADMIN_NAME: Final = "bench"
ADMIN_PASSWORD: Final = "bench-" + os.urandom(12).hex()
RAW_REQUEST_TOPIC: Final = "bench/raw/request"
RAW_REPLY_TOPIC: Final = "bench/raw/reply"
RAW_PAYLOAD_BYTES: Final = 160
"""About the size of a command on the wire (id, action, args, expiry, reply address)."""
LOCK_PIN: Final = 5
IDLE_REOPEN_S: Final = 4.0
"""Keep-alive connections idle this long are opened anew (the hub closes them after 5 s)."""
LOAD_TICK_S: Final = 0.005
LOAD_WINDOW: Final = 2000
"""QoS 1 messages a load device may have unacknowledged before it counts itself behind."""
SCRIPT: Final = str(Path(__file__).resolve())
T = TypeVar("T")

log = logging.getLogger("bench.commands")


# --------------------------------------------------------------------------------------------
# figures


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` by the nearest-rank method; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 1))  # ceil(n * q), at least 1
    return ordered[min(len(ordered), int(rank)) - 1]


def summary(values: list[float]) -> dict[str, float]:
    """p50, p90, p99, max and mean of latencies in ms, rounded for printing."""
    if not values:
        return {"p50": float("nan"), "p90": float("nan"), "p99": float("nan"), "max": 0.0}
    return {
        "p50": round(percentile(values, 0.50), 3),
        "p90": round(percentile(values, 0.90), 3),
        "p99": round(percentile(values, 0.99), 3),
        "max": round(max(values), 3),
        "mean": round(statistics.fmean(values), 3),
    }


# --------------------------------------------------------------------------------------------
# open-loop schedule


async def open_loop(
    rate: float, duration_s: float, send: Callable[[int, float], Coroutine[Any, Any, None]]
) -> float:
    """Start ``send(i, scheduled)`` at ``t0 + i / rate`` for ``duration_s``, each in its own
    task, never waiting for an earlier one; returns the largest start lag in ms (how late the
    schedule ran: a client that cannot keep up shows here, not as a slower server)."""
    count = round(rate * duration_s)
    tasks: list[asyncio.Task[None]] = []
    t0 = time.perf_counter() + 0.05
    lag = 0.0
    for i in range(count):
        scheduled = t0 + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        lag = max(lag, time.perf_counter() - scheduled)
        tasks.append(asyncio.create_task(send(i, scheduled), name=f"request-{i}"))
    await asyncio.gather(*tasks)  # every one, so that a request that failed fails the run
    return lag * 1000


# --------------------------------------------------------------------------------------------
# raw reference: this process asks, the agents' process answers


async def raw_phase(
    host: str, port: int, admin: tuple[str, str], rate: float, duration_s: float
) -> tuple[list[float], int]:
    """Request/reply between two plain MQTT clients at QoS 1; latencies (ms) and sent."""
    from fieldhub.mqtt import MqttClient

    loop = asyncio.get_running_loop()
    waiting: dict[int, tuple[float, asyncio.Future[float]]] = {}

    def on_reply(_topic: str, payload: bytes) -> None:
        arrived = time.perf_counter()
        entry = waiting.pop(int.from_bytes(payload[:8], "big"), None)
        if entry is not None and not entry[1].done():
            entry[1].set_result((arrived - entry[0]) * 1000)

    latencies: list[float] = []
    async with MqttClient(
        host, port, client_id="bench-raw-requester", on_message=on_reply,
        username=admin[0], password=admin[1],
    ) as client:  # fmt: skip
        await client.subscribe([(RAW_REPLY_TOPIC, 1)])
        await asyncio.sleep(0.2)
        padding = os.urandom(RAW_PAYLOAD_BYTES - 8)

        async def ask(i: int, _scheduled: float) -> None:
            future: asyncio.Future[float] = loop.create_future()
            waiting[i] = (time.perf_counter(), future)
            client.publish(RAW_REQUEST_TOPIC, i.to_bytes(8, "big") + padding, qos=1)
            with contextlib.suppress(TimeoutError):
                latencies.append(await asyncio.wait_for(future, 10.0))

        for i in range(-20, 0):  # warm-up, not counted
            await ask(i + 2**40, 0.0)
        latencies.clear()
        await open_loop(rate, duration_s, ask)
    return latencies, round(rate * duration_s)


# --------------------------------------------------------------------------------------------
# commands: REST client


class CommandResult:
    """What the command phase saw."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.sent = 0
        self.succeeded = 0
        self.statuses: Counter[str] = Counter()
        self.stages: dict[str, list[float]] = {
            "created_to_sent": [],
            "sent_to_acknowledged": [],
            "acknowledged_to_finished": [],
            "outside_command_ms": [],
        }
        self.lag_ms = 0.0


class Answer(NamedTuple):
    """An HTTP answer: status code and body."""

    status_code: int
    body: bytes

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body)


class Clients:
    """Keep-alive HTTP/1.1 connections to the hub, lent to one request at a time.

    Plain HTTP over asyncio streams, not httpx: this process shares the two cores with the hub,
    and httpx spent about 3 ms of CPU per request here (19 % of a core at 60 requests/s, more
    than the broker), so the client itself slowed what it measured. Here a request is one
    write and two reads. A request that waits for a free connection has that wait in its round
    trip (measured from its scheduled start). A connection left idle for
    :data:`IDLE_REOPEN_S` is opened anew before it is used: the hub (uvicorn) closes
    keep-alive connections idle for 5 s, and at a few requests/s over 32 connections each one
    sits that long (a request sent as the hub closes it would fail, not be measured).
    """

    def __init__(self, base_url: str, token: str, count: int) -> None:
        address = httpx.URL(base_url)
        self._host, self._port = address.host, address.port or 80
        self._head = (
            f"Host: {self._host}:{self._port}\r\nAuthorization: Bearer {token}\r\n"
            "Content-Type: application/json\r\n"
        ).encode()
        self._count = count
        self._free: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = (
            asyncio.Queue()
        )
        self._all: list[asyncio.StreamWriter] = []

    async def open(self) -> None:
        """Open the connections."""
        for _ in range(self._count):
            self._free.put_nowait((*await self._connect(), time.monotonic()))

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(self._host, self._port)
        self._all.append(writer)
        return reader, writer

    async def post(self, url: str, body: dict[str, Any]) -> Answer:
        """POST ``body`` as JSON to ``url`` (``?wait=true``) on the next free connection."""
        return await self.request(b"POST", url + "?wait=true", json.dumps(body).encode())

    async def request(self, method: bytes, url: str, payload: bytes = b"") -> Answer:
        """One request on the next free connection."""
        reader, writer, used = await self._free.get()
        if time.monotonic() - used > IDLE_REOPEN_S or writer.is_closing():
            writer.close()
            reader, writer = await self._connect()
        try:
            writer.write(
                method + b" " + url.encode() + b" HTTP/1.1\r\n" + self._head
                + b"Content-Length: " + str(len(payload)).encode() + b"\r\n\r\n" + payload
            )  # fmt: skip
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            answer = Answer(status, await reader.readexactly(length))
        except BaseException:
            writer.close()  # a broken exchange leaves the connection unusable
            raise
        self._free.put_nowait((reader, writer, time.monotonic()))
        return answer

    async def aclose(self) -> None:
        """Close every connection."""
        for writer in self._all:
            writer.close()
        await asyncio.gather(*(w.wait_closed() for w in self._all), return_exceptions=True)


async def command_phase(
    clients: Clients, devices: list[str], rate: float, duration_s: float
) -> CommandResult:
    """``lock.unlock`` / ``lock.lock`` alternately per device at ``rate``/s, round robin."""
    result = CommandResult()
    n = len(devices)

    async def send(i: int, _scheduled: float) -> None:
        device = devices[i % n]
        action = "lock.unlock" if (i // n) % 2 == 0 else "lock.lock"
        result.sent += 1
        started = time.perf_counter()
        try:
            answer = await clients.post(
                f"/api/devices/{device}/commands", {"action": action, "timeout_s": 10}
            )
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            result.statuses[f"error:{type(exc).__name__}"] += 1
            return
        elapsed = (time.perf_counter() - started) * 1000
        if answer.status_code != 200:
            result.statuses[f"http:{answer.status_code}"] += 1
            return
        body = answer.json()
        result.statuses[body["status"]] += 1
        if body["status"] != "succeeded":
            return
        result.succeeded += 1
        result.latencies.append(elapsed)
        stages = result.stages
        stages["created_to_sent"].append(body["sent_at"] - body["created_at"])
        stages["sent_to_acknowledged"].append(body["acknowledged_at"] - body["sent_at"])
        stages["acknowledged_to_finished"].append(body["finished_at"] - body["acknowledged_at"])
        stages["outside_command_ms"].append(elapsed - (body["finished_at"] - body["created_at"]))

    result.lag_ms = await open_loop(rate, duration_s, send)
    return result


async def floor_phase(
    clients: Clients, folder: Path, rate: float, duration_s: float
) -> tuple[list[float], list[float]]:
    """The two legs of a command that are not MQTT, each alone under the same load: an HTTP
    round trip to the hub's cheapest authenticated route (``GET /api/health``) at ``rate``/s,
    and, meanwhile, a durable write of a claim-sized record (``os.fsync``, as the agent's
    claim must be on disk before its action runs) every ``1 / rate`` s in the benchmark's
    folder (the agents' disk). Returns both lists of latencies in ms."""
    http: list[float] = []
    fsyncs: list[float] = []
    done = threading.Event()

    async def ask(_i: int, _scheduled: float) -> None:
        started = time.perf_counter()
        try:
            answer = await clients.request(b"GET", "/api/health")
        except (OSError, asyncio.IncompleteReadError) as exc:
            raise RuntimeError(f"GET /api/health failed: {exc!r}") from exc
        if answer.status_code != 200:
            raise RuntimeError(f"GET /api/health answered {answer.status_code}")
        http.append((time.perf_counter() - started) * 1000)

    def write_claims(path: Path) -> None:
        with path.open("ab") as claims:
            while not done.is_set():
                claims.write(os.urandom(64))
                claims.flush()
                started = time.perf_counter()
                os.fsync(claims.fileno())
                fsyncs.append((time.perf_counter() - started) * 1000)
                time.sleep(1 / rate)

    writer = asyncio.create_task(asyncio.to_thread(write_claims, folder / "claims.bin"))
    try:
        await open_loop(rate, duration_s, ask)
    finally:
        done.set()
        await writer
    return http, fsyncs


# --------------------------------------------------------------------------------------------
# child process: the agents (and the raw responder)


async def run_agents(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one real agent per device of ``spec`` until a line arrives on stdin; their figures."""
    from fieldhub.agent.config import AgentConfig, DeviceSection, HubSection, WebSection
    from fieldhub.agent.service import Agent
    from fieldhub.agent.units import Drivers, SocketConfig, mock_pin_factory
    from fieldhub.agent.units.simulate import SwitchPin
    from fieldhub.mqtt import MqttClient

    runs: Counter[str] = Counter()  # action runs by command id, over all agents
    broker = f"mqtt://{spec['host']}:{spec['port']}"
    async with contextlib.AsyncExitStack() as stack:
        agents: list[Agent] = []
        for device_id, (username, secret) in spec["devices"].items():
            config = AgentConfig(
                device=DeviceSection(id=device_id),
                hub=HubSection(broker=broker, username=username),
                data_folder=str(Path(spec["data"]) / device_id),
                units=[SocketConfig(name="lock", pin=LOCK_PIN, role="lock", locked_when="off")],
                web=WebSection(enabled=False),
            )
            drivers = Drivers(pin_factory=mock_pin_factory(SwitchPin))
            agent = await stack.enter_async_context(Agent(config, secret, drivers=drivers))
            _count_runs(agent, runs)
            agents.append(agent)

        responder: MqttClient | None = None

        def answer(_topic: str, payload: bytes) -> None:
            if responder is not None:
                responder.publish(RAW_REPLY_TOPIC, payload, qos=1)

        responder = await stack.enter_async_context(
            MqttClient(
                spec["host"], spec["port"], client_id="bench-raw-responder", on_message=answer,
                username=spec["admin"][0], password=spec["admin"][1],
            )
        )  # fmt: skip
        await responder.subscribe([(RAW_REQUEST_TOPIC, 1)])
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        stats = [agent.commands.stats for agent in agents if agent.commands is not None]
    return {
        "agents": len(agents),
        "received": sum(s.received for s in stats),
        "executed": sum(s.executed for s in stats),
        "succeeded": sum(s.succeeded for s in stats),
        "failed": sum(s.failed for s in stats),
        "answered_from_log": sum(s.answered_from_log for s in stats),
        "refused": sum(s.refused for s in stats),
        "distinct_ids_run": len(runs),
        "action_runs": sum(runs.values()),
        "executed_twice": sum(count - 1 for count in runs.values() if count > 1),
    }


def _count_runs(agent: Any, runs: Counter[str]) -> None:
    """Count every action run by the command id it was for (wraps the agent's registry)."""
    registry = agent.registry
    run = registry.run

    async def counted(action: Any, *, origin: str = "local") -> Any:
        runs[origin] += 1
        return await run(action, origin=origin)

    registry.run = counted


# --------------------------------------------------------------------------------------------
# child process: paced ingest load


class _PacedDevice(asyncio.Protocol):
    """One load device: a QoS 1 connection that publishes ``loadgen``'s packets on a schedule."""

    def __init__(self, device_id: str, plan: PacketPlan, connect: bytes) -> None:
        loop = asyncio.get_running_loop()
        self.device_id = device_id
        self.plan = plan
        self.sent = 0
        self.acked = 0
        self.behind = 0
        self.connected: asyncio.Future[None] = loop.create_future()
        self.drained: asyncio.Future[None] = loop.create_future()
        self._connect = connect
        self._transport: asyncio.Transport | None = None
        self._buffer = b""
        self._ends: list[int] = []
        self._next = 0
        self._partial = b""
        self._stopping = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not isinstance(transport, asyncio.Transport):
            raise TypeError("expected a stream transport")
        self._transport = transport
        transport.write(self._connect)

    def data_received(self, data: bytes) -> None:
        if not self.connected.done():
            if data[:1] != b"\x20" or len(data) < 4 or data[3]:
                self.connected.set_exception(ConnectionError(f"{self.device_id}: {data!r}"))
                return
            self.connected.set_result(None)
            data = data[4:]
        data = self._partial + data
        whole = len(data) - len(data) % 4
        self._partial = data[whole:]
        self.acked += whole // 4
        if self._stopping and self.acked >= self.sent and not self.drained.done():
            self.drained.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        for future in (self.connected, self.drained):
            if not future.done():
                future.set_exception(exc or ConnectionError(f"{self.device_id}: closed"))

    def publish_until(self, due: int) -> None:
        """Write packets up to seq ``due`` (as far as the QoS 1 window allows)."""
        if self._transport is None or self._stopping:
            return
        allowed = min(due, self.acked + LOAD_WINDOW)
        if allowed < due:
            self.behind += 1
        count = allowed - self.sent
        if count <= 0:
            return
        parts = []
        while count > 0:
            if self._next == len(self._ends):
                data, self._ends = self.plan.packets(self.device_id, self.sent + 1, 1000)
                self._buffer, self._next = data, 0
            start = self._ends[self._next - 1] if self._next else 0
            take = min(count, len(self._ends) - self._next)
            self._next += take
            parts.append(self._buffer[start : self._ends[self._next - 1]])
            self.sent += take
            count -= take
        self._transport.write(b"".join(parts))

    def stop(self) -> None:
        self._stopping = True
        if self.acked >= self.sent and not self.drained.done():
            self.drained.set_result(None)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.write(b"\xe0\x00")
            self._transport.close()


async def run_load(spec: dict[str, Any]) -> dict[str, Any]:
    """Publish at ``spec['rate']`` messages/s in total until a line arrives on stdin."""
    loop = asyncio.get_running_loop()
    plan = PacketPlan(1, spec["samples"], time.time_ns() // 1_000_000)
    fleet = [
        _PacedDevice(device_id, plan, connect_packet(device_id, username, secret))
        for device_id, (username, secret) in spec["devices"].items()
    ]
    for device in fleet:
        await loop.create_connection(lambda d=device: d, spec["host"], spec["port"])  # type: ignore[misc]
        await device.connected
    per_device = spec["rate"] / len(fleet)
    print("ready", flush=True)
    stop = asyncio.ensure_future(asyncio.to_thread(sys.stdin.readline))
    started = time.perf_counter()
    while not stop.done():
        due = int((time.perf_counter() - started) * per_device)
        for device in fleet:
            device.publish_until(due)
        await asyncio.sleep(LOAD_TICK_S)
    elapsed = time.perf_counter() - started
    for device in fleet:
        device.stop()
    await asyncio.wait_for(asyncio.gather(*(d.drained for d in fleet)), 30)
    for device in fleet:
        device.close()
    total = sum(d.sent for d in fleet)
    return {
        "sent": {d.device_id: d.sent for d in fleet},
        "elapsed_s": elapsed,
        "rate_msg_s": total / elapsed,
        "behind_ticks": sum(d.behind for d in fleet),
    }


# --------------------------------------------------------------------------------------------
# orchestration


class CpuMeter:
    """CPU time of named processes and of the whole machine between :meth:`start` and
    :meth:`stop`, from /proc: where the cores went during a phase (the machine is shared, so
    ``others`` is everything not ours)."""

    _TICK: Final = os.sysconf("SC_CLK_TCK")

    def __init__(self, pids: dict[str, int | None]) -> None:
        self._pids = {name: pid for name, pid in pids.items() if pid is not None}
        self._start: dict[str, float] = {}
        self._wall = 0.0
        self._machine = (0.0, 0.0)

    @classmethod
    def _process_s(cls, pid: int) -> float:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / cls._TICK  # utime + stime
        return 0.0

    @classmethod
    def _machine_s(cls) -> tuple[float, float]:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        idle = values[3] + values[4]  # idle + iowait
        return (sum(values) - idle) / cls._TICK, sum(values) / cls._TICK

    def start(self) -> None:
        self._start = {name: self._process_s(pid) for name, pid in self._pids.items()}
        self._machine = self._machine_s()
        self._wall = time.monotonic()

    def stop(self) -> dict[str, float]:
        """Percent of one core per process, ``ours``, ``others`` and ``machine`` (busy % of
        all cores)."""
        wall = time.monotonic() - self._wall
        used = {
            name: round(100 * (self._process_s(pid) - self._start[name]) / wall, 1)
            for name, pid in self._pids.items()
        }
        busy, total = (b - a for a, b in zip(self._machine, self._machine_s(), strict=True))
        used["ours"] = round(sum(used.values()), 1)
        used["others"] = round(max(0.0, 100 * busy / wall - used["ours"]), 1)
        used["machine"] = round(100 * busy / total, 1) if total else 0.0
        return used


class Child:
    """A child Python process of this script that says ``ready`` on stdout, runs until a line
    on its stdin, then prints its figures as one JSON line. (``benchmarks/live.py`` runs its
    own children through a subclass: ``script`` is the file the child runs, ``name`` tells
    several children of one role apart.)"""

    script: str = SCRIPT

    def __init__(
        self, role: str, spec: dict[str, Any], folder: Path, name: str | None = None
    ) -> None:
        self.role = role
        self._spec_path = folder / f"{name or role}.json"  # in a 0700 temporary folder: secrets
        self._spec_path.write_text(json.dumps(spec), encoding="utf-8")
        self._stderr = folder / f"{name or role}.log"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self, timeout_s: float = 120) -> None:
        with self._stderr.open("w") as stderr:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, self.script, f"--role={self.role}", f"--spec={self._spec_path}",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=stderr,
            )  # fmt: skip
        if self.process.stdout is None:
            raise RuntimeError("no pipe")
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout_s)
        if line.strip() != b"ready":
            await self.process.wait()
            raise RuntimeError(f"{self.role} did not start:\n{self._stderr.read_text()}")

    async def stop(self) -> dict[str, Any]:
        if self.process is None or self.process.stdin is None:
            raise RuntimeError(f"{self.role} is not running")
        out, _ = await asyncio.wait_for(self.process.communicate(b"stop\n"), 60)
        if self.process.returncode:
            raise RuntimeError(f"{self.role} failed:\n{self._stderr.read_text()}")
        figures: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
        return figures

    def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()


class HubProcess:
    """``fieldhub hub`` as its own process, on Mosquitto, stopped with Ctrl-C (SIGINT)."""

    def __init__(
        self, broker: Mosquitto, data: Path, db: str | None, folder: Path, workers: int = 1
    ) -> None:
        self.port = free_port()
        self.workers = workers  # --workers: N hub processes behind one port (PostgreSQL)
        self.url = f"http://127.0.0.1:{self.port}"
        self._data = data
        self._db = ["--db", db] if db else []
        self._broker = broker
        self._log = folder / "hub.log"
        self.process: asyncio.subprocess.Process | None = None

    async def add_admin(self) -> None:
        made = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "fieldhub", "user", "add", ADMIN_NAME, "--role", "admin",
            "--password-stdin", "--data", str(self._data), *self._db,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await made.communicate((ADMIN_PASSWORD + "\n").encode())
        if made.returncode:
            raise RuntimeError(f"fieldhub user add failed: {out.decode()}")

    async def start(self) -> None:
        with self._log.open("w") as log_file:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "fieldhub", "hub", "--broker", self._broker.url,
                "--data", str(self._data), "--http", f"127.0.0.1:{self.port}",
                "--instance", "bench", *self._db, "--workers", str(self.workers),
                stdout=log_file, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient(base_url=self.url) as client:
            while time.monotonic() < deadline:
                if self.process.returncode is not None:
                    raise RuntimeError(f"the hub exited:\n{self._log.read_text()}")
                # Every worker up (each prints its own line), not only the first to answer.
                up = self._log.read_text().count(" hub at ") >= self.workers
                with contextlib.suppress(httpx.HTTPError):
                    if up and (await client.get("/api/health")).status_code == 200:
                        return
                await asyncio.sleep(0.2)
        raise RuntimeError(f"the hub did not answer:\n{self._log.read_text()}")

    def pids(self) -> dict[str, int | None]:
        """The hub's process, or with ``--workers`` its workers (their parent only forks)."""
        if self.process is None or self.workers == 1:
            return {"hub": self.process.pid if self.process else None}
        workers = psutil.Process(self.process.pid).children()
        return {f"hub-{i}": worker.pid for i, worker in enumerate(workers, 1)}

    async def stop(self) -> str:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(self.process.wait(), 30)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        return self._log.read_text()


async def api_client(hub: HubProcess) -> tuple[httpx.AsyncClient, str]:
    """A client with a fresh API token of the benchmark's admin, and the token."""
    async with httpx.AsyncClient(base_url=hub.url) as session:
        login = await session.post(
            "/api/auth/login", json={"name": ADMIN_NAME, "password": ADMIN_PASSWORD}
        )
        login.raise_for_status()
        made = await session.post(
            "/api/tokens",
            json={"name": "bench", "scopes": ["read", "write", "command"]},
            headers={"X-CSRF-Token": login.json()["csrf_token"]},
        )
        made.raise_for_status()
    token: str = made.json()["token"]
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.AsyncClient(base_url=hub.url, headers=headers, timeout=30), token


async def register(api: httpx.AsyncClient, ids: list[str]) -> dict[str, tuple[str, str]]:
    """Register devices on the hub; their MQTT user names and secrets."""
    credentials = {}
    for device_id in ids:
        answer = await api.post("/api/devices", json={"id": device_id, "labels": {"site": "b"}})
        answer.raise_for_status()
        issued = answer.json()["credentials"]
        credentials[device_id] = (issued["username"], issued["secret"])
    return credentials


async def warm_up(api: httpx.AsyncClient, devices: list[str]) -> None:
    """One command per device, until each has answered (connected, catalog reported)."""
    deadline = time.monotonic() + 60
    for device in devices:
        while True:
            answer = await api.post(
                f"/api/devices/{device}/commands", json={"action": "lock.lock", "timeout_s": 30}
            )
            if answer.status_code == 200 and answer.json()["status"] == "succeeded":
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{device} does not answer: {answer.text}")
            await asyncio.sleep(0.2)
    for i in range(50):  # and the path itself warm
        await api.post(
            f"/api/devices/{devices[i % len(devices)]}/commands", json={"action": "lock.lock"}
        )


async def ingest_check(
    api: httpx.AsyncClient, sent: dict[str, int], within_s: float = 30
) -> tuple[int, float]:
    """Messages the load devices published that the hub has not stored, and how long it took
    after the load stopped for the hub to store the rest."""
    started = time.perf_counter()
    lost = sum(sent.values())
    while True:
        answer = await api.get("/api/devices", params={"limit": 10_000})
        answer.raise_for_status()
        acked = {d["id"]: d["acked_seq"] for d in answer.json()}
        lost = sum(max(0, n - acked.get(device, 0)) for device, n in sent.items())
        if not lost or time.perf_counter() - started > within_s:
            return lost, time.perf_counter() - started
        await asyncio.sleep(0.1)


class Run:
    """Everything one run measured, before it is summed up."""

    def __init__(self) -> None:
        self.raw: list[float] = []
        self.raw_sent = 0
        self.http: list[float] = []
        self.fsync: list[float] = []
        self.commands = CommandResult()
        self.load: dict[str, Any] = {"sent": {}, "rate_msg_s": 0.0, "behind_ticks": 0}
        self.ingest_lost = 0
        self.catch_up_s = 0.0
        self.agents: dict[str, Any] = {}
        self.metrics = ""
        self.dropped = 0
        self.cpu: dict[str, float] = {}


async def measure(
    args: argparse.Namespace, broker: Mosquitto, hub: HubProcess, folder: Path
) -> Run:
    """Agents and load up, both phases, then the checks."""
    run = Run()
    children: list[Child] = []
    host, port = broker.host, broker.port
    admin = (broker.admin_username, broker.admin_password)
    try:
        api, token = await api_client(hub)
        clients = Clients(hub.url, token, args.connections)
        async with api:
            agent_ids = [f"cmd-{i:03d}" for i in range(args.agents)]
            load_ids = [f"load-{i:03d}" for i in range(args.load_devices)]
            agent_creds = await register(api, agent_ids)
            load_creds = await register(api, load_ids)
            agents = Child(
                "agents",
                {"host": host, "port": port, "admin": admin, "devices": agent_creds,
                 "data": str(folder / "agents")},
                folder,
            )  # fmt: skip
            children.append(agents)
            await agents.start()
            await warm_up(api, agent_ids)
            load = Child(
                "load",
                {"host": host, "port": port, "devices": load_creds,
                 "rate": args.load_msgs, "samples": args.load_samples},
                folder,
            )  # fmt: skip
            if args.load_msgs > 0:
                children.append(load)
                await load.start()
                await asyncio.sleep(args.settle_s)
            run.raw, run.raw_sent = await raw_phase(host, port, admin, args.rate, args.duration)
            print(f"raw:      {summary(run.raw)} ms, {len(run.raw)}/{run.raw_sent} answered")
            meter = CpuMeter(
                {
                    **hub.pids(),
                    "broker": broker.pid,
                    "agents": agents.process.pid if agents.process else None,
                    "load": load.process.pid if load.process else None,
                    "client": os.getpid(),
                }
            )
            await clients.open()  # now: the hub closes connections idle for 5 s
            run.http, run.fsync = await floor_phase(clients, folder, args.rate, args.duration)
            print(f"http:     {summary(run.http)} ms (GET /api/health)")
            print(f"fsync:    {summary(run.fsync)} ms (a claim-sized durable write)")
            meter.start()
            run.commands = await command_phase(clients, agent_ids, args.rate, args.duration)
            run.cpu = meter.stop()
            await clients.aclose()
            done = run.commands
            print(
                f"commands: {summary(done.latencies)} ms, {done.succeeded}/{done.sent} "
                f"succeeded, {dict(done.statuses)}",
                flush=True,
            )
            if args.load_msgs > 0:
                run.load = await load.stop()
            run.ingest_lost, run.catch_up_s = await ingest_check(api, run.load["sent"])
            if args.metrics:
                run.metrics = (await api.get("/metrics")).text
        run.agents = await agents.stop()
    finally:
        for child in children:
            child.kill()
    return run


def report(args: argparse.Namespace, run: Run) -> dict[str, Any]:
    """Print the figures as lines; return the JSON object."""
    commands = run.commands
    for name, values in commands.stages.items():
        print(f"stage {name}: {summary(values)}")
    print(
        f"load: {run.load['rate_msg_s']:.0f} msg/s x {args.load_samples} sample(s) x 4 "
        f"values, behind {run.load['behind_ticks']} ticks; hub caught up "
        f"{run.catch_up_s:.2f} s after it stopped, lost {run.ingest_lost}; "
        f"broker dropped {run.dropped}"
    )
    print(f"agents: {run.agents}")
    print(f"cpu during the command phase (% of one core; machine: % of all): {run.cpu}")
    p50, p99 = percentile(commands.latencies, 0.5), percentile(commands.latencies, 0.99)
    raw_p50, raw_p99 = percentile(run.raw, 0.5), percentile(run.raw, 0.99)
    http_p50, fsync_p50 = percentile(run.http, 0.5), percentile(run.fsync, 0.5)
    # The floor's p99 adds the legs' p99s, as its p50 adds their medians: an estimate.
    floor_p50 = raw_p50 + http_p50 + fsync_p50
    floor_p99 = raw_p99 + percentile(run.http, 0.99) + percentile(run.fsync, 0.99)
    print(
        f"against the floor: p50 {p50 / floor_p50:.2f} x (target <= 3), "
        f"p99 {p99 / floor_p99:.2f} x (target <= 3)"
    )
    return {
        "db": args.db,
        "workers": args.workers,
        "agents": args.agents,
        "rate": args.rate,
        "duration_s": args.duration,
        "p50_ms": round(p50, 2),
        "p99_ms": round(p99, 2),
        "max_ms": round(max(commands.latencies, default=float("nan")), 2),
        "raw_p50_ms": round(raw_p50, 2),
        "raw_p99_ms": round(raw_p99, 2),
        "ratio_p50": round(p50 / raw_p50, 2),
        "ratio_p99": round(p99 / raw_p99, 2),
        "http_p50_ms": round(http_p50, 2),
        "http_p99_ms": round(percentile(run.http, 0.99), 2),
        "fsync_p50_ms": round(fsync_p50, 2),
        "fsync_p99_ms": round(percentile(run.fsync, 0.99), 2),
        "floor_p50_ms": round(floor_p50, 2),
        "floor_p99_ms": round(floor_p99, 2),
        "ratio_floor_p50": round(p50 / floor_p50, 2),
        "ratio_floor_p99": round(p99 / floor_p99, 2),
        "sent": commands.sent,
        "succeeded": commands.succeeded,
        "executed_twice": run.agents["executed_twice"],
        "agent_executed": run.agents["executed"],
        "agent_distinct_ids": run.agents["distinct_ids_run"],
        "raw_sent": run.raw_sent,
        "raw_answered": len(run.raw),
        "client_lag_ms": round(commands.lag_ms, 2),
        "load_msg_s": round(run.load["rate_msg_s"]),
        "load_points_s": round(run.load["rate_msg_s"] * args.load_samples * 4),
        "ingest_lost": run.ingest_lost,
        "broker_dropped": run.dropped,
        "cpus": os.cpu_count(),
        "hub_cpu_pct": round(sum(v for k, v in run.cpu.items() if k.startswith("hub")), 1),
        "others_cpu_pct": run.cpu.get("others"),
    }


async def around_hub(
    args: argparse.Namespace,
    prefix: str,
    measure: Callable[[argparse.Namespace, Mosquitto, HubProcess, Path], Awaitable[T]],
) -> tuple[T, int]:
    """Mosquitto, the database (``args.db``) and a hub process around ``measure``; returns
    what it measured and Mosquitto's dropped-message count (a traceback in the hub's log is
    printed). ``live.py`` uses it too."""
    with (
        tempfile.TemporaryDirectory(prefix=prefix) as tmp,
        contextlib.ExitStack() as stack,
    ):
        folder = Path(tmp)
        broker = stack.enter_context(Mosquitto(folder / "mosquitto"))
        db = stack.enter_context(Postgres(folder / "pg")).url if args.db == "postgres" else None
        hub = HubProcess(broker, folder / "hub", db, folder, getattr(args, "workers", 1))
        await hub.add_admin()
        await hub.start()
        try:
            measured = await measure(args, broker, hub, folder)
        except BaseException:
            print(await hub.stop(), file=sys.stderr)
            raise
        hub_log = await hub.stop()
        dropped = await asyncio.to_thread(broker.dropped_messages)
    if "Traceback" in hub_log:
        print(hub_log, file=sys.stderr)
    return measured, dropped


async def main(args: argparse.Namespace) -> dict[str, Any]:
    """Start broker, database and hub, measure, stop, and return the figures."""
    run, dropped = await around_hub(args, "fieldhub-cmd-bench-", measure)
    run.dropped = dropped
    if run.metrics:
        print(run.metrics, file=sys.stderr)
    return report(args, run)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=10, help="real agents (devices)")
    parser.add_argument("--rate", type=float, default=100.0, help="commands (and raw pings)/s")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per phase")
    parser.add_argument("--load-devices", type=int, default=50, help="ingest load devices")
    parser.add_argument("--load-msgs", type=float, default=5000.0, help="load messages/s, total")
    parser.add_argument("--load-samples", type=int, default=1, help="samples per load message")
    parser.add_argument("--settle-s", type=float, default=3.0, help="load before measuring")
    parser.add_argument("--connections", type=int, default=32, help="HTTP keep-alive")
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument(
        "--workers", type=int, default=1, help="hub processes (fieldhub hub --workers; > 1 "
        "runs on PostgreSQL)",
    )  # fmt: skip
    parser.add_argument("--metrics", action="store_true", help="print the hub's /metrics")
    parser.add_argument("--role", choices=("main", "agents", "load"), default="main",
                        help=argparse.SUPPRESS)  # fmt: skip
    parser.add_argument("--spec", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    options = parse_args()
    if options.workers > 1:
        options.db = "postgres"  # several hub processes share PostgreSQL, never SQLite
    if options.role == "main":
        print(json.dumps(asyncio.run(main(options))))
    else:
        child_spec = json.loads(options.spec.read_text(encoding="utf-8"))
        child_main = run_agents if options.role == "agents" else run_load
        print(json.dumps(asyncio.run(child_main(child_spec))))
