"""Scale benchmark: one hub, then two, ingesting one fleet on Mosquitto and PostgreSQL; then
one of two hubs killed again and again (issue 18).

Everything is real: a Mosquitto and a PostgreSQL of the Debian packages (``tests/support``),
``fieldhub hub --cluster`` processes (``tests/support/cluster.py``), devices with their own
credentials registered through the API.

- **Rate phases**, alternating one hub / two hubs (``--rounds`` of each) so that the load of
  the machine's other work falls on both alike: ``loadgen.py`` in its own process plays
  ``--devices`` new devices each sending ``--messages`` single-sample telemetry messages as
  fast as the broker takes them; the rate is messages acknowledged per second (the devices'
  watermarks in the database), from the first to the last. The raw reference of
  ``benchmarks/ingest.py`` is the broker; here the reference is one hub, measured in the same
  run: ``rate_2 / rate_1``.
- **Kill phase**: two hubs; ``--devices`` resending devices (``Reporter``: telemetry and events,
  a window, resends after 1 s without an ack) send for about ``--kill-seconds``; one hub is
  killed (SIGKILL) ``--kills`` times and restarted. ``failover_s`` is the longest a device
  waited for its watermark to move after a kill (its messages were on the killed hub);
  ``lost`` counts seqs not stored, ``duplicates`` seqs stored more than once (telemetry rows
  by their instant, events by (device, seq)), over every phase.

    .venv/bin/python benchmarks/scale.py [--devices 20] [--messages 1500] [--rounds 2]

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

sys.path.insert(0, str(Path(__file__).parent))  # sibling scripts
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # tests.support: the real servers

from tests.support.cluster import HubProcess, Reporter, admin_session, is_event, register
from tests.support.servers import Mosquitto, Postgres

from fieldhub.hub.store.database import create_engine
from loadgen import run_in_subprocess

_ACKED = "SELECT coalesce(sum(acked_seq), 0) FROM devices WHERE id LIKE :prefix"


async def _acked(engine: AsyncEngine, prefix: str) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text(_ACKED), {"prefix": f"{prefix}-%"})).scalar_one())


async def _rate_phase(
    engine: AsyncEngine,
    broker: Mosquitto,
    credentials: dict[str, tuple[str, str]],
    prefix: str,
    messages: int,
) -> tuple[float, int]:
    """One load of new devices; messages acknowledged per second, and how many never were.

    The time runs from the load's first publish (the load process says how long it
    published; its packets are built before that) to the last acknowledgement stored."""
    ended: list[float] = []
    load = asyncio.create_task(
        run_in_subprocess(
            "127.0.0.1",
            broker.port,
            devices=len(credentials),
            qos=1,
            max_per_device=messages,
            device_prefix=prefix,
            credentials=credentials,
        )
    )
    load.add_done_callback(lambda _task: ended.append(time.monotonic()))
    expected = messages * len(credentials)
    acked = 0
    last = 0.0
    deadline = time.monotonic() + 300
    while acked < expected and time.monotonic() < deadline:
        acked = await _acked(engine, prefix)
        last = time.monotonic()
        await asyncio.sleep(0.05)
    published = await load
    first = ended[0] - published.elapsed_s
    return expected / max(last - first, 1e-3) if acked == expected else 0.0, expected - acked


async def _kill_phase(
    hubs: list[HubProcess], credentials: dict[str, tuple[str, str]], port: int, args: Any
) -> tuple[list[float], int]:
    """Resending devices while one hub is killed ``args.kills`` times; the stalls after the
    kills (seconds) and the seqs each device sent."""
    count = int(args.kill_seconds * args.kill_rate)
    reporters = [
        Reporter(device_id, *secret, port=port, count=count, rate=args.kill_rate)
        for device_id, secret in credentials.items()
    ]
    sending = asyncio.gather(*(reporter.run() for reporter in reporters))
    pause = args.kill_seconds / (args.kills + 1)
    for n in range(args.kills):
        await asyncio.sleep(pause)
        victim = hubs[n % 2]
        await victim.kill()
        await victim.start()
    async with asyncio.timeout(300):
        await sending
    return [stall for r in reporters for stall in r.stalls], count


async def _counts(engine: AsyncEngine, prefix: str, count: int) -> tuple[int, int]:
    """Lost and duplicated seqs of the kill phase's devices (``prefix``), ``count`` each."""
    async with engine.connect() as conn:
        telemetry = (
            await conn.execute(
                text(
                    "SELECT s.device_id, count(*), count(DISTINCT samples.ts) FROM samples"
                    " JOIN series s ON s.id = samples.series_id WHERE s.device_id LIKE :p"
                    " GROUP BY s.device_id"
                ),
                {"p": f"{prefix}-%"},
            )
        ).all()
        events = (
            await conn.execute(
                text(
                    "SELECT device_id, count(*), count(DISTINCT seq) FROM events"
                    " WHERE device_id LIKE :p AND seq IS NOT NULL GROUP BY device_id"
                ),
                {"p": f"{prefix}-%"},
            )
        ).all()
    expected = (
        sum(1 for seq in range(1, count + 1) if not is_event(seq)),
        sum(1 for seq in range(1, count + 1) if is_event(seq)),
    )
    lost = duplicates = 0
    for rows, want in ((telemetry, expected[0]), (events, expected[1])):
        for _device, rows_n, distinct in rows:
            duplicates += rows_n - distinct
            lost += want - distinct
    return lost, duplicates


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="fieldhub-scale-") as tmp:
        folder = Path(tmp)
        with Mosquitto(folder / "mq") as broker, Postgres(folder / "pg") as pg:
            db = pg.create_database("scale")
            engine = create_engine(db)
            hubs = [HubProcess(folder, f"hub-{n}", broker.url, db, "scale") for n in "ab"]
            try:
                return await _measure(args, broker, engine, hubs)
            finally:
                await asyncio.gather(*(hub.stop() for hub in hubs))
                await engine.dispose()


async def _measure(
    args: argparse.Namespace, broker: Mosquitto, engine: AsyncEngine, hubs: list[HubProcess]
) -> dict[str, Any]:
    await hubs[0].start()
    api = await admin_session(hubs[0])
    phases = ["one", "two"] * args.rounds
    try:
        fleets = [
            await register(api, [f"p{n}-{k:05d}" for k in range(args.devices)])
            for n in range(len(phases) + 1)
        ]
    finally:
        await api.aclose()
    rates: dict[str, list[float]] = {"one": [], "two": []}
    lost = 0
    for n, phase in enumerate(phases):
        if phase == "two":
            await hubs[1].start()
        else:
            await hubs[1].stop()
        rate, missing = await _rate_phase(engine, broker, fleets[n], f"p{n}", args.messages)
        rates[phase].append(rate)
        lost += missing
        print(f"phase {n} ({phase} hub{'s' if phase == 'two' else ''}): {rate:.0f} msg/s")
    kill_prefix = f"p{len(phases)}"
    stalls, count = await _kill_phase(hubs, fleets[-1], broker.port, args)
    kill_lost, duplicates = await _counts(engine, kill_prefix, count)
    rate_1, rate_2 = (sum(rates[p]) / len(rates[p]) for p in ("one", "two"))
    return {
        "devices": args.devices,
        "messages": args.messages,
        "rounds": args.rounds,
        "rate_1": round(rate_1),
        "rate_2": round(rate_2),
        "ratio": round(rate_2 / rate_1, 3) if rate_1 else None,
        "rates_1": [round(r) for r in rates["one"]],
        "rates_2": [round(r) for r in rates["two"]],
        "kills": args.kills,
        "kill_messages": count * args.devices,
        "lost": lost + kill_lost,
        "duplicates": duplicates,
        "failover_s": round(max(stalls, default=0.0), 2),
        "stalls": len(stalls),
        "cpus": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--messages", type=int, default=1500, help="per device and rate phase")
    parser.add_argument("--rounds", type=int, default=2, help="one-hub and two-hub phases each")
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--kill-seconds", type=float, default=40.0)
    parser.add_argument("--kill-rate", type=float, default=10.0, help="msg/s per device")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
