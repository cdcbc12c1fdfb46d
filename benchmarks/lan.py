"""LAN benchmark: one gateway's LAN side and many controllers on loopback.

The controllers (``--controllers``, default 200, each its own TCP link, values every second)
run in a child process, so that this process holds only the gateway's LAN side
(``fieldhub.gateway.lan.LanManager``) with an uplink that takes reports in memory. Each
controller pairs (approved at once through the pairing-code hook), then:

- ``report_p50_ms`` / ``report_p99_ms``: from a report's ``ts`` (stamped by the controller when
  it queued the report) to the gateway's ``Uplink.report`` call, over ``--window-s`` seconds;
- ``gateway_cpu_pct`` (user + system over the window, 100 = one core) and ``gateway_rss_mb``;
- ``command_p50_ms`` / ``command_p99_ms``: ``Lan.run_command`` of an action running
  ``/bin/true``, one after another, across the controllers (``--commands``);
- ``raw_p50_ms``: the reference, a 100-byte TCP ping-pong over the same loopback;
- ``dropped``: reports the controllers' queues dropped (0 unless the gateway falls behind).

The hub is not in this picture (``benchmarks/gateway.py`` of the gateway's uplink is). The
last line printed is one JSON object.

    .venv/bin/python benchmarks/lan.py [--controllers 200] [--window-s 15] [--commands 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fieldhub.controller.config import ActionConfig, ControllerConfig, ValueSource
from fieldhub.controller.service import Controller
from fieldhub.gateway.lan import LanManager, LanSettings
from fieldhub.gateway.ports import ControllerInfo, ReportChannel


class TimingUplink:
    """Takes reports in memory and keeps how late each arrived."""

    def __init__(self) -> None:
        self.online: set[str] = set()
        self.latencies_ms: list[float] = []
        self.measuring = False

    async def controller_online(self, info: ControllerInfo) -> None:
        self.online.add(info.controller_id)

    async def controller_offline(self, controller_id: str, reason: str) -> None:
        self.online.discard(controller_id)

    async def pairing_requested(self, controller_id: str, address: str) -> None:
        return None

    async def report(
        self, controller_id: str, channel: ReportChannel, body: dict[str, Any]
    ) -> None:
        if self.measuring and channel == "telemetry":
            self.latencies_ms.append(time.time() * 1000 - body["ts"])


async def run_controllers(count: int, announce_port: int, data: Path) -> None:
    """The child process: ``count`` controllers until stdin closes; then the drop count."""
    controllers, tasks = [], []
    try:
        for n in range(count):
            controller = Controller(
                ControllerConfig(
                    controller_id=f"bench-{n:03d}",
                    data_dir=data / f"bench-{n:03d}",
                    listen_host="127.0.0.1",
                    listen_port=0,
                    announce_to="127.0.0.1",
                    announce_port=announce_port,
                    announce_every_s=2.0,
                    report_every_s=1.0,
                    values={"temp": ValueSource("simulate", low=20, high=25)},
                    actions={"noop": ActionConfig("noop", ("/bin/true",), {}, 10.0)},
                )
            )
            await controller.start()
            tasks.append(asyncio.create_task(controller.run()))
            controllers.append(controller)
        reader = asyncio.StreamReader()
        loop = asyncio.get_running_loop()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        await reader.read()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    print(json.dumps({"dropped": sum(c.dropped_reports for c in controllers)}), flush=True)


async def raw_ping_pong(rounds: int = 500) -> float:
    """p50 of a 100-byte request and its answer over loopback TCP, in ms."""

    ended = asyncio.Event()

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(100):
            writer.write(data)
        writer.close()
        ended.set()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        writer.write(b"x" * 100)
        await reader.readexactly(100)
        times.append((time.perf_counter() - started) * 1000)
    writer.close()
    await ended.wait()
    server.close()
    return statistics.median(times)


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2) if ordered else -1.0


async def main(options: argparse.Namespace) -> dict[str, Any]:
    data = Path(tempfile.mkdtemp(prefix="fieldhub-lan-bench-"))
    uplink = TimingUplink()
    approvals: set[asyncio.Task[bool]] = set()
    manager: LanManager

    def approve(controller_id: str, _code: str) -> None:
        task = asyncio.get_running_loop().create_task(manager.approve_pairing(controller_id))
        approvals.add(task)
        task.add_done_callback(approvals.discard)

    manager = LanManager(
        LanSettings("gw-bench", data / "keys", listen_host="127.0.0.1", announce_port=0),
        uplink,
        on_pairing_code=approve,
    )
    await manager.start()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--controllers-only",
        str(options.controllers),
        "--announce-port",
        str(manager.announce_port),
        "--data",
        str(data / "controllers"),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )
    started = time.monotonic()
    while len(uplink.online) < options.controllers:
        if time.monotonic() - started > 120:
            raise SystemExit(f"only {len(uplink.online)} controllers linked in 120 s")
        await asyncio.sleep(0.2)
    linked_s = time.monotonic() - started
    await asyncio.sleep(2)  # let the queued reports of the pairing minutes drain

    uplink.measuring = True
    cpu_before, wall_before = os.times(), time.monotonic()
    await asyncio.sleep(options.window_s)
    cpu_after, wall_after = os.times(), time.monotonic()
    uplink.measuring = False
    cpu = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)

    ids = sorted(uplink.online)
    command_ms = []
    for n in range(options.commands):
        began = time.perf_counter()
        outcome = await manager.run_command(ids[n % len(ids)], f"bench-{n}", "noop", {}, 10)
        command_ms.append((time.perf_counter() - began) * 1000)
        assert outcome.status == "succeeded", outcome

    assert child.stdin is not None
    assert child.stdout is not None
    child.stdin.close()
    dropped = -1
    while line := await child.stdout.readline():  # after the controllers' pairing codes
        if line.startswith(b'{"dropped"'):
            dropped = json.loads(line)["dropped"]
    await child.wait()
    await manager.stop()
    return {
        "controllers": options.controllers,
        "linked_s": round(linked_s, 1),
        "reports": len(uplink.latencies_ms),
        "report_p50_ms": _p(uplink.latencies_ms, 0.5),
        "report_p99_ms": _p(uplink.latencies_ms, 0.99),
        "gateway_cpu_pct": round(100 * cpu / (wall_after - wall_before), 1),
        "gateway_rss_mb": round(_rss_mb(), 1),
        "command_p50_ms": _p(command_ms, 0.5),
        "command_p99_ms": _p(command_ms, 0.99),
        "raw_p50_ms": round(await raw_ping_pong(), 3),
        "dropped": dropped,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--controllers", type=int, default=200)
    parser.add_argument("--window-s", type=float, default=15.0)
    parser.add_argument("--commands", type=int, default=200)
    parser.add_argument("--controllers-only", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--announce-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.controllers_only is not None:
        asyncio.run(run_controllers(args.controllers_only, args.announce_port, args.data))
    else:
        print(json.dumps(asyncio.run(main(args))))
