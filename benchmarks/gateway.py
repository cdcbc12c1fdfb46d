"""Gateway benchmark: one ``fieldhub gateway`` process bridging many controllers to a hub.

A hub runs in this process (embedded broker, SQLite) with a gateway and ``--controllers``
children registered; the gateway runs as the separate process systemd would start; the
controllers (the reference ``fieldhub.controller``, each with its own TCP server and link,
a value every second) run together in a third process, so that neither the hub's nor the
controllers' work is counted as the gateway's. Each controller is paired through the hub
(``gateway.approve_pairing``), as an admin would. Then:

1. **Reports**: for ``--seconds``, every value the hub commits is timed from the controller's
   timestamp (taken when the controller made the report) to the hub's commit (``on_commit``):
   ``report_p50_ms`` / ``report_p99_ms``. Meanwhile the gateway's ``/proc`` figures:
   ``gateway_rss_mb`` (VmRSS at the end) and ``gateway_cpu_pct`` (utime + stime over the wall
   time, 100 = one core).
2. **Commands**: ``--commands`` commands, one at a time, each to the next controller
   (``relay.set``, a ``/bin/true``), from the hub's submit to its outcome stored in the hub:
   ``command_p50_ms`` / ``command_p99_ms``; against ``raw_p50_ms``, a TCP ping-pong of one
   small frame over the same loopback (the floor of any round trip here).
3. **Loss**: the controllers stop; what they handed to the gateway (made, less what still
   waits in their queues) is compared with the values the hub holds once the gateway has
   drained: ``lost`` (must be 0).

The last line printed is one JSON object. Targets (issue 14): ``gateway_rss_mb <= 60``,
``gateway_cpu_pct <= 20``, ``report_p99_ms <= 250``, ``lost == 0``.

    .venv/bin/python benchmarks/gateway.py [--controllers 200] [--seconds 30] [--commands 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from fieldhub.clock import now_ms
from fieldhub.hub.app import Hub
from fieldhub.hub.config import HubSettings
from fieldhub.hub.ingest.batch import Batch
from fieldhub.hub.store.schema import samples, series

TICK_S = os.sysconf("SC_CLK_TCK")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2) if ordered else -1.0


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- the controllers' process ---------------------------------------------------------------


async def _run_controllers(count: int, announce_port: int, folder: Path, uid: str) -> None:
    """``count`` controllers until SIGTERM; then one JSON line: reports handed to the gateway."""
    from fieldhub.controller.config import ActionConfig, ControllerConfig, ValueSource
    from fieldhub.controller.service import Controller

    made = {"n": 0}

    class Counting(Controller):
        def report(self, channel: str, body: dict[str, Any]) -> None:
            if channel == "telemetry":
                made["n"] += 1
            super().report(channel, body)

    controllers = [
        Counting(
            ControllerConfig(
                controller_id=f"c{n}-{uid}",
                data_dir=folder / f"c{n}",
                listen_host="127.0.0.1",
                listen_port=0,
                announce_to="127.0.0.1",
                announce_port=announce_port,
                announce_every_s=2.0,
                report_every_s=1.0,
                heartbeat_s=5.0,
                values={"temp": ValueSource("simulate", low=20, high=25)},
                actions={"relay.set": ActionConfig("relay.set", ("/bin/true",), {"on": "bool"}, 5)},
            )
        )
        for n in range(count)
    ]
    for controller in controllers:
        await controller.start()
    tasks = [asyncio.create_task(controller.run()) for controller in controllers]
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    waiting = sum(c.queued_reports for c in controllers)  # before the links go
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    queued_telemetry = sum(
        1 for c in controllers for _rid, channel, _body in c._queue if channel == "telemetry"
    )
    print(json.dumps({"made": made["n"], "queued": queued_telemetry, "waiting": waiting}))


# -- the benchmark --------------------------------------------------------------------------


def _proc_figures(pid: int) -> tuple[float, float]:
    """(RSS in MB, CPU seconds) of process ``pid``."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS"))
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return rss_kb / 1024, (int(fields[11]) + int(fields[12])) / TICK_S


async def _raw_ping_pong(rounds: int) -> float:
    """p50 ms of a 32-byte frame echoed over loopback TCP."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(64):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        writer.write(b"x" * 32)
        await writer.drain()
        await reader.readexactly(32)
        times.append((time.perf_counter() - started) * 1000)
    writer.close()
    server.close()
    return _percentile(times, 0.5)


async def _stored_values(hub: Hub, children: list[str]) -> int:
    query = (
        select(func.count())
        .select_from(samples.join(series, samples.c.series_id == series.c.id))
        .where(series.c.device_id.in_(children), series.c.key == "temp")
    )
    async with hub.engine.connect() as conn:
        return int((await conn.execute(query)).scalar_one())


async def _approve_all(hub: Hub, gw: str, children: list[str]) -> None:
    """Approve each controller's pairing as an admin would, as soon as it waits."""
    pending = list(children)
    deadline = time.monotonic() + 300
    while pending and time.monotonic() < deadline:
        still = []
        for child in pending:
            _batch, [command] = await hub.commands.submit(
                [gw], "gateway.approve_pairing", {"controller": child},
                timeout_s=10, ttl_s=30, actor="benchmark",
            )  # fmt: skip
            await hub.commands.wait([command.id], 12)
            if (await hub.commands.get(command.id)).status != "succeeded":
                still.append(child)
        pending = still
        if pending:
            await asyncio.sleep(1.0)
    if pending:
        raise SystemExit(f"{len(pending)} controllers never asked to pair")


async def _linked(hub: Hub, children: list[str], within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if all(hub.presence.get(c).presence == "online" for c in children):
            return
        await asyncio.sleep(0.5)
    down = [c for c in children if hub.presence.get(c).presence != "online"]
    raise SystemExit(f"{len(down)} controllers never came online: {down[:5]}")


async def _settled(hub: Hub, within_s: float = 120.0) -> None:
    """Wait until the reports the controllers queued while they waited for their pairing are
    through: a second whose committed values are all younger than a second."""
    ages: list[float] = []
    listening = [True]  # a commit listener stays registered: it only stops taking notes

    def committed(batch: Batch) -> None:
        if not listening[0]:
            return
        at = now_ms()
        for _device, message in batch.telemetry:
            stamps = [s.ts for s in message.samples] if message.samples else [message.ts]
            ages.extend(float(at - ts) for ts in stamps if ts)

    hub.ingest.on_commit(committed)
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        ages.clear()
        await asyncio.sleep(1.0)
        if ages and max(ages) < 1000:
            listening[0] = False
            return
    raise SystemExit("the backlog of the pairing never drained")


async def _reports(hub: Hub, gateway_pid: int, seconds: float) -> tuple[float, float, list[float]]:
    """For ``seconds``: each committed value's age at commit; the gateway's RSS and CPU."""
    latencies: list[float] = []
    listening = [True]

    def committed(batch: Batch) -> None:
        if not listening[0]:
            return
        at = now_ms()
        for _device, message in batch.telemetry:
            stamps = [s.ts for s in message.samples] if message.samples else [message.ts]
            latencies.extend(float(at - ts) for ts in stamps if ts)

    hub.ingest.on_commit(committed)
    _rss, cpu_before = _proc_figures(gateway_pid)
    started = time.monotonic()
    await asyncio.sleep(seconds)
    rss_mb, cpu_after = _proc_figures(gateway_pid)
    listening[0] = False
    cpu_pct = (cpu_after - cpu_before) / (time.monotonic() - started) * 100
    return rss_mb, cpu_pct, list(latencies)


async def _commands(hub: Hub, children: list[str], count: int) -> list[float]:
    """``count`` commands one at a time, round robin over the children: ms each."""
    round_trips = []
    for n in range(count):
        child = children[n % len(children)]
        begun = time.perf_counter()
        _batch, [command] = await hub.commands.submit(
            [child], "relay.set", {"on": n % 2 == 0}, timeout_s=10, ttl_s=30, actor="benchmark"
        )
        await hub.commands.wait([command.id], 12)
        round_trips.append((time.perf_counter() - begun) * 1000)
        if (await hub.commands.get(command.id)).status != "succeeded":
            raise SystemExit(f"command {n} to {child} did not succeed")
    return round_trips


async def run(args: argparse.Namespace) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="fieldhub-gateway-bench-"))
    uid = os.urandom(3).hex()
    gw = f"gw-{uid}"
    children = [f"c{n}-{uid}" for n in range(args.controllers)]
    settings = HubSettings(
        data=folder / "hub", instance="bench", mqtt="127.0.0.1:0", http="127.0.0.1:0"
    )
    async with Hub(settings) as hub:
        issued = (await hub.devices.create(gw)).credentials
        for child in children:
            await hub.devices.create_child(child, gw)
        announce_port = _free_udp_port()
        config = folder / "gateway.yaml"
        config.write_text(
            f"gateway: {{id: {gw}}}\n"
            f"hub: {{broker: '{hub.broker_url}', username: '{issued.username}',"
            f" secret: '{issued.secret}'}}\n"
            f"data_dir: '{folder / 'gateway'}'\n"
            f"lan: {{listen_host: 127.0.0.1, announce_port: {announce_port}}}\n"
        )
        config.chmod(0o600)
        gateway = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "fieldhub", "gateway", "--config", str(config),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        controllers = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--run-controllers", str(args.controllers),
            "--announce-port", str(announce_port), "--folder", str(folder / "controllers"),
            "--uid", uid,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        try:
            await _approve_all(hub, gw, children)
            await _linked(hub, children, 120)
            await _settled(hub)

            rss_mb, cpu_pct, report_latencies = await _reports(hub, gateway.pid, args.seconds)
            round_trips = await _commands(hub, children, args.commands)
            raw_p50 = await _raw_ping_pong(1000)

            controllers.send_signal(signal.SIGTERM)
            out, _ = await asyncio.wait_for(controllers.communicate(), 60)
            counts = json.loads(out.decode().strip().splitlines()[-1])
            handed = counts["made"] - counts["queued"]
            stored, deadline = -1, time.monotonic() + 60
            while time.monotonic() < deadline:  # the gateway drains what it holds
                now_stored = await _stored_values(hub, children)
                if now_stored == stored and now_stored >= handed:
                    break
                stored = now_stored
                await asyncio.sleep(2)
        finally:
            for process in (controllers, gateway):
                if process.returncode is None:
                    process.kill()
                    await process.wait()
    return {
        "controllers": args.controllers,
        "seconds": args.seconds,
        "reports": len(report_latencies),
        "gateway_rss_mb": round(rss_mb, 1),
        "gateway_cpu_pct": round(cpu_pct, 1),
        "report_p50_ms": _percentile(report_latencies, 0.5),
        "report_p99_ms": _percentile(report_latencies, 0.99),
        "command_p50_ms": _percentile(round_trips, 0.5),
        "command_p99_ms": _percentile(round_trips, 0.99),
        "command_mean_ms": round(statistics.fmean(round_trips), 2) if round_trips else -1,
        "raw_p50_ms": raw_p50,
        "handed_to_gateway": handed,
        "stored": stored,
        "lost": max(0, handed - stored),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--controllers", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--commands", type=int, default=200)
    parser.add_argument("--run-controllers", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--announce-port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--uid", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_controllers:
        asyncio.run(
            _run_controllers(args.run_controllers, args.announce_port, args.folder, args.uid)
        )
        return
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
