"""Drain benchmark: how soon agents' outboxes are empty after the broker is killed under load.

It starts Mosquitto (Debian package) and, in this process, a hub on it (SQLite) and D agents,
each the agent's own :class:`~fieldhub.agent.outbox.Outbox` and
:class:`~fieldhub.agent.uplink.Uplink` with the settings a field agent runs with
(:class:`~fieldhub.agent.uplink.UplinkSettings` defaults), each reporting ``--rate``
telemetry reports per second. Then Mosquitto is killed with SIGKILL ``--kills`` times, every
``--every-s`` seconds, and started again after ``--down-s``: every kill loses the sessions and
what was in flight, and the agents and the hub reconnect on their own. The load stops at the
last kill, so the figures below are about the backlog, not about new reports.

- ``drain_s``: from the last kill until every report of every agent is acknowledged by the hub
  (its outbox holds nothing unacknowledged). ``drain_after_start_s``: the same, from the moment
  the restarted broker accepts connections.
- **Raw reference**, in the same run: ``raw_back_s``, from the same kill until a bare MQTT
  client (fieldhub's, reconnecting every 20-50 ms) has a round trip through the restarted
  broker again: what no drain can beat. ``ratio`` is ``drain_s / raw_back_s``.
- ``backlog``: reports the agents held unacknowledged at the last kill; ``lost``: reports the
  agents accepted that the hub's database does not hold (each report has its own timestamp,
  so a count is exact); ``reconnect_max_s``: the slowest agent's reconnection after the last
  restart (its back-off), ``hub_back_s`` the hub's; ``hub_returns``: ``resend`` acks the
  agents got from the hub.

The last line printed is one JSON object.

    .venv/bin/python benchmarks/drain.py [--devices 20] [--rate 20] [--kills 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support: the real servers

from tests.support.servers import Mosquitto

from fieldhub.agent.outbox import Outbox, OutboxReporter
from fieldhub.agent.uplink import Uplink, UplinkSettings
from fieldhub.hub.app import Hub
from fieldhub.hub.config import HubSettings
from fieldhub.hub.store.schema import samples, series
from fieldhub.mqtt import MqttClient

KEY = "n"
PROBE_TOPIC = "bench/drain/probe"


@dataclass
class Agent:
    """One agent of the fleet and what it reported."""

    device_id: str
    outbox: Outbox
    uplink: Uplink
    reporter: OutboxReporter
    made: int = 0

    def drained(self, hub: Hub) -> bool:
        """Every report accepted so far is acknowledged by the hub."""
        outbox = self.outbox
        return (
            not (outbox.pending or outbox.stats.unsent or self.uplink.stats.in_flight)
            and hub.ingest.acked_seq(self.device_id) == outbox.last_seq
        )


def kill(broker: Mosquitto) -> None:
    """SIGKILL: no goodbye, no last will, every session and message in flight lost."""
    if broker.pid is not None:
        os.kill(broker.pid, signal.SIGKILL)
    broker.stop()  # reaps it


def start(broker: Mosquitto) -> float:
    """Start the broker; when it accepted connections (monotonic seconds), taken on this
    thread: the event loop may be busy with clients already reconnecting."""
    broker.start()
    return time.monotonic()


async def stored(hub: Hub, device_id: str) -> int:
    """Reports of ``device_id`` the hub's database holds (one row per report)."""
    query = (
        select(func.count())
        .select_from(samples.join(series, samples.c.series_id == series.c.id))
        .where(series.c.device_id == device_id, series.c.key == KEY)
    )
    async with hub.engine.connect() as conn:
        return int((await conn.execute(query)).scalar_one())


async def produce(agents: list[Agent], rate: float, base_ts: int, stop: asyncio.Event) -> None:
    """Each agent reports ``{"n": k}`` ``rate`` times a second, each at its own instant."""
    period = 1 / rate
    tick = time.monotonic()
    while not stop.is_set():
        for agent in agents:
            agent.made += 1
            agent.reporter.telemetry({KEY: agent.made}, ts=base_ts + agent.made)
        tick += period
        await asyncio.sleep(max(0.0, tick - time.monotonic()))


async def round_trip(probe: MqttClient, received: asyncio.Queue[bytes]) -> float:
    """Wait until a message published by ``probe`` comes back to it through the broker;
    returns when (monotonic seconds)."""
    while True:
        if probe.connected:
            token = os.urandom(8).hex().encode()
            probe.publish(PROBE_TOPIC, token, qos=1)
            try:
                async with asyncio.timeout(0.2):
                    while (await received.get()) != token:
                        pass
                return time.monotonic()
            except TimeoutError:
                continue
        await asyncio.sleep(0.005)


async def start_fleet(
    hub: Hub, stack: AsyncExitStack, folder: Path, broker: Mosquitto, count: int
) -> list[Agent]:
    """Register ``count`` devices and run an agent (outbox and uplink) for each, connected."""
    agents = []
    for i in range(count):
        device_id = f"drain-{i}"
        issued = (await hub.devices.create(device_id)).credentials
        outbox = await stack.enter_async_context(Outbox(folder / f"{device_id}.db"))
        uplink = await stack.enter_async_context(
            Uplink(
                outbox,
                device_id=device_id,
                host=broker.host,
                port=broker.port,
                username=issued.username,
                password=issued.secret,
                settings=UplinkSettings(),
            )
        )
        agents.append(Agent(device_id, outbox, uplink, OutboxReporter(outbox)))
    deadline = time.monotonic() + 30
    while not all(a.uplink.connected for a in agents):
        if time.monotonic() > deadline:
            raise RuntimeError("the agents did not connect within 30 s")
        await asyncio.sleep(0.05)
    return agents


async def main(args: argparse.Namespace) -> dict[str, Any]:
    """Start the broker, hub and fleet, kill the broker under load, measure the drain."""
    with tempfile.TemporaryDirectory(prefix="fieldhub-drain-bench-") as tmp:
        folder = Path(tmp)
        broker = Mosquitto(folder / "broker")
        await asyncio.to_thread(broker.start)
        try:
            return await _run(args, folder, broker)
        finally:
            await asyncio.to_thread(broker.stop)


async def _run(args: argparse.Namespace, folder: Path, broker: Mosquitto) -> dict[str, Any]:
    settings = HubSettings(
        data=folder / "hub",
        broker=broker.url,
        instance="bench",
        mqtt="127.0.0.1:0",
        http="127.0.0.1:0",
    )
    received: asyncio.Queue[bytes] = asyncio.Queue()
    async with Hub(settings) as hub, AsyncExitStack() as stack:
        agents = await start_fleet(hub, stack, folder, broker, args.devices)
        probe = MqttClient(
            broker.host,
            broker.port,
            client_id="drain-probe",
            username=broker.admin_username,
            password=broker.admin_password,
            on_message=lambda _topic, payload: received.put_nowait(payload),
            reconnect_min_s=0.02,
            reconnect_max_s=0.05,
        )
        await probe.connect()
        stack.push_async_callback(probe.close)
        await probe.subscribe([(PROBE_TOPIC, 1)])

        stop = asyncio.Event()
        base_ts = int(time.time() * 1000) - 3_600_000
        load = asyncio.create_task(produce(agents, args.rate, base_ts, stop), name="load")
        killed_at = started_at = 0.0
        connections: list[int] = []
        backlog = 0
        raw: asyncio.Task[float] | None = None
        for n in range(1, args.kills + 1):
            await asyncio.sleep(args.every_s)
            killed_at = time.monotonic()
            await asyncio.to_thread(kill, broker)
            if n == args.kills:
                raw = asyncio.create_task(round_trip(probe, received), name="probe")
                stop.set()
                await load
                connections = [a.uplink.stats.connections for a in agents]
                for agent in agents:
                    await agent.outbox.sync()
                made = sum(a.outbox.stats.accepted for a in agents)
                backlog = made - sum([await stored(hub, a.device_id) for a in agents])
            await asyncio.sleep(max(0.0, killed_at + args.down_s - time.monotonic()))
            started_at = await asyncio.to_thread(start, broker)
        if raw is None:
            raise ValueError("--kills must be at least 1")
        back: dict[str, float] = {}
        hub_back = 0.0
        deadline = time.monotonic() + args.timeout_s
        while True:  # checked before the first wait: it may all be over already
            now = time.monotonic()
            if not hub_back and hub.bus.connected:
                hub_back = now - started_at
            for agent, before in zip(agents, connections, strict=True):
                if agent.device_id not in back and agent.uplink.stats.connections > before:
                    back[agent.device_id] = now - started_at
            if all(a.drained(hub) for a in agents):
                break
            if now > deadline:
                raise RuntimeError(f"not drained within {args.timeout_s} s of the last kill")
            await asyncio.sleep(0.01)
        drained_at = time.monotonic()
        probe_back = await raw - killed_at
        accepted = sum(a.outbox.stats.accepted for a in agents)
        held = sum([await stored(hub, a.device_id) for a in agents])
        returns = sum(getattr(a.uplink.stats, "hub_returns", 0) for a in agents)
    drain_s = drained_at - killed_at
    return {
        "drain_s": round(drain_s, 2),
        "drain_after_start_s": round(drained_at - started_at, 2),
        "raw_back_s": round(probe_back, 2),
        "ratio": round(drain_s / probe_back, 2),
        "backlog": backlog,
        "reconnect_max_s": round(max(back.values(), default=0.0), 2),
        "hub_back_s": round(hub_back, 2),
        "hub_returns": returns,
        "accepted": accepted,
        "stored": held,
        "lost": accepted - held,
        "devices": args.devices,
        "rate_per_device": args.rate,
        "kills": args.kills,
        "cpus": os.cpu_count(),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=20, help="agents in the fleet")
    parser.add_argument("--rate", type=float, default=20.0, help="reports per second per agent")
    parser.add_argument("--kills", type=int, default=4, help="broker kills under load")
    parser.add_argument("--every-s", type=float, default=4.0, help="between kills")
    parser.add_argument("--down-s", type=float, default=1.0, help="the broker stays down")
    parser.add_argument("--timeout-s", type=float, default=300.0, help="for the drain")
    return parser.parse_args(argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR)
    figures = asyncio.run(main(parse_args()))
    for name, value in figures.items():
        print(f"{name}: {value}")
    print(json.dumps(figures))
