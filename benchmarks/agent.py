"""Agent benchmark: the edge agent as it runs on a Pi, measured from outside, from ``/proc``.

It starts a hub in this process (embedded broker, SQLite), registers a device, and writes an
``agent.yaml`` from ``deploy/agent.example.yaml`` (the FocusPro cabinet: status LED, door,
socket with its check, two thermometers, supply voltage, a site action, the technician page)
with that device's id and credentials, a temporary ``data_dir`` and the page on an ephemeral
local port. Then:

1. **Raw references**, in the same run: the RSS of a bare ``python -c "import asyncio; …"``
   process waiting in ``asyncio.run`` (the floor any asyncio agent stands on), and the rate of
   plain SQLite inserts (``executemany`` of report-sized rows, commits of 1,000) with the
   outbox's pragmas (WAL, ``synchronous=FULL``).
2. **Outbox append**: the agent's own :class:`~fieldhub.agent.outbox.Outbox`, in this process,
   takes ``--messages`` telemetry reports through its reporter (checked, stamped, committed
   with fsync) into the agent's ``data_dir``, as if the hub had been away while they were made.
   ``outbox_append_s`` is reports committed per second.
3. **Drain**: ``fieldhub agent --config X --simulate`` starts as a separate process and sends
   that backlog (plus what its simulated units report) to the hub. ``outbox_msgs_s`` is
   backlog reports committed by the hub per second, from the hub's first received message to
   the moment its database holds them all. ``lost`` is backlog reports the outbox accepted that
   the hub's database does not hold (each has its own timestamp, so a count is exact).
   The agent runs as the systemd unit runs it: with the ``Environment=`` of
   ``deploy/fieldhub-agent.service`` (printed as ``agent_env``), and with fieldhub's bytecode
   compiled, as ``pip install`` leaves it (this machine sets ``PYTHONDONTWRITEBYTECODE``, so a
   source checkout would otherwise compile every fieldhub module at every start: 0.7 MB more).
4. **Idle**: once drained, the agent settles (connected, units polling, simulation running);
   then ``rss_mb`` (VmRSS), ``rss_peak_mb`` (VmHWM, the drain included), ``private_mb`` (RSS
   less the shared libraries' pages, which every Python process maps) and ``idle_cpu_pct``
   (utime + stime over ``--idle-s`` seconds of wall time, as ``top`` counts it: 100 = one core).

With ``--tls`` the agent speaks ``mqtts://`` to the embedded broker's TLS listener (a test CA
made with ``openssl``, given as ``hub.ca_file``), which loads OpenSSL into it (the raw RSS
reference has it either way: a bare asyncio imports ``ssl``). With ``--websocket`` it speaks
MQTT over WebSocket to the embedded broker's WebSocket listener instead: ``ws://``, or
``wss://`` with ``--tls`` (what a device behind nginx's ``/mqtt`` runs).

The last line printed is one JSON object. Targets (DESIGN §6): ``rss_mb <= 30`` (for
``mqtt://``; over TLS the figure is reported), ``idle_cpu_pct <= 1``, ``lost == 0``.

    .venv/bin/python benchmarks/agent.py [--messages 50000] [--idle-s 15] [--tls] [--websocket]
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import json
import logging
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support: the test CA

from tests.support.certs import TestCa

import fieldhub
from fieldhub.agent.outbox import Outbox, OutboxReporter
from fieldhub.hub.app import Hub
from fieldhub.hub.config import HubSettings
from fieldhub.hub.store.schema import samples, series

EXAMPLE = Path(__file__).resolve().parent.parent / "deploy" / "agent.example.yaml"
UNIT = EXAMPLE.with_name("fieldhub-agent.service")
DEVICE_ID = "bench-atm-1"
BACKLOG_KEY = "backlog"  # the telemetry key of the reports put into the outbox beforehand
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2**20


def proc_status_mb(pid: int, field: str) -> float:
    """A memory figure of ``/proc/PID/status`` (``VmRSS``, ``VmHWM``) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for process {pid}")


def private_mb(pid: int) -> float:
    """Memory only this process uses (``smaps_rollup`` private pages): RSS without the shared
    libraries (libpython, libcrypto, libc, SQLite), which other processes map as well."""
    kib = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            kib += int(line.split()[1])
    return kib / 1024


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far (``/proc/PID/stat`` fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def raw_rss_mb(settle_s: float) -> tuple[float, float]:
    """RSS and private memory of a bare Python process waiting in an asyncio loop (which
    imports ``ssl``, so OpenSSL is in it: the floor of a TLS agent as well)."""
    code = "import asyncio; asyncio.run(asyncio.sleep(60))"
    process = subprocess.Popen([sys.executable, "-c", code])
    try:
        time.sleep(settle_s)
        return proc_status_mb(process.pid, "VmRSS"), private_mb(process.pid)
    finally:
        process.terminate()
        process.wait()


def raw_sqlite_rows_s(path: Path, rows: int) -> float:
    """Plain inserts of report-sized rows with the outbox's pragmas, commits of 1,000 rows."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute(
        "CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, kind INTEGER NOT NULL,"
        " seq INTEGER, body BLOB NOT NULL)"
    )
    body = json.dumps({"ts": 1_700_000_000_000, "values": {BACKLOG_KEY: 12345}}).encode()
    started = time.perf_counter()
    for start in range(0, rows, 1000):
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO outbox (kind, seq, body) VALUES (0, NULL, ?)",
            [(body,)] * min(1000, rows - start),
        )
        db.execute("COMMIT")
    elapsed = time.perf_counter() - started
    db.close()
    return rows / elapsed


async def fill_outbox(path: Path, count: int, base_ts: int) -> tuple[int, float]:
    """Put ``count`` telemetry reports into the outbox the agent will open.

    Returns the reports it accepted (committed) and how many per second. The flood waits for
    the disk every 5,000 reports: the outbox keeps at most 10,000 in memory (``max_pending``)
    and would drop the oldest beyond that, which is its overflow policy, not its speed.
    """
    async with Outbox(path) as outbox:
        reporter = OutboxReporter(outbox)
        started = time.perf_counter()
        for i in range(count):
            reporter.telemetry({BACKLOG_KEY: i}, ts=base_ts + i)
            if i % 5000 == 4999:
                await outbox.sync()
        await outbox.sync()
        elapsed = time.perf_counter() - started
        accepted = outbox.stats.accepted
    return accepted, accepted / elapsed


def unit_environment(unit: Path) -> dict[str, str]:
    """The variables the systemd unit's ``Environment=`` lines set (unquoted ``KEY=VALUE``
    words, the only form the unit uses; anything else stops the benchmark)."""
    env: dict[str, str] = {}
    for line in unit.read_text(encoding="utf-8").splitlines():
        if line.startswith("Environment="):
            for word in line.removeprefix("Environment=").split():
                key, sep, value = word.partition("=")
                if not sep or not key or any(q in word for q in "\"'"):
                    raise RuntimeError(f"{unit}: cannot read {line!r}")
                env[key] = value
    return env


def compile_bytecode() -> None:
    """Compile fieldhub's modules (what is missing or stale), as ``pip install`` does."""
    if not compileall.compile_dir(Path(fieldhub.__file__).parent, quiet=1):
        raise RuntimeError("fieldhub's modules do not compile")


def write_config(
    folder: Path, hub: Hub, username: str, secret: str, ca: TestCa | None = None
) -> Path:
    """The FocusPro example, pointed at this hub (its TLS listener, trusting ``ca``, if given)
    and at a temporary data folder."""
    config: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    secret_file = folder / "agent.secret"
    secret_file.write_text(secret + "\n", encoding="utf-8")
    secret_file.chmod(0o600)
    config["device"]["id"] = DEVICE_ID
    config["hub"] = {
        "broker": hub.broker_url,
        "username": username,
        "secret_file": str(secret_file),
    }
    assert hub.broker is not None  # the embedded one, with the listeners the options asked for
    if hub.broker.websocket_urls:
        config["hub"]["broker"] = hub.broker.websocket_urls[0]
    elif ca is not None:
        config["hub"]["broker"] = hub.broker.tls_url
    if ca is not None:
        config["hub"]["ca_file"] = str(ca.cert)
    config["data_dir"] = str(folder / "data")
    config["web"]["listen"] = "127.0.0.1:0"
    path = folder / "agent.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


async def backlog_stored(hub: Hub) -> int:
    """Backlog reports the hub's database holds (one row per report: own timestamps)."""
    query = (
        select(func.count())
        .select_from(samples.join(series, samples.c.series_id == series.c.id))
        .where(series.c.device_id == DEVICE_ID, series.c.key == BACKLOG_KEY)
    )
    async with hub.engine.connect() as conn:
        return int((await conn.execute(query)).scalar_one())


def hub_settings(
    folder: Path, *, tls: bool, websocket: bool = False
) -> tuple[HubSettings, TestCa | None]:
    """The benchmark hub's settings; with ``tls``, a TLS listener whose certificate a new test
    CA issued (returned too: the agent trusts it); with ``websocket``, a WebSocket listener
    (in TLS with ``tls``). The embedded broker either way, as when the
    figures in docs/benchmarks.md were measured (a hub without --broker now runs its own
    Mosquitto where installed): the agent is measured, not the broker."""
    if not tls:
        plain = HubSettings(
            data=folder / "hub",
            mqtt="127.0.0.1:0",
            http="127.0.0.1:0",
            local_broker="embedded",
            mqtt_ws="127.0.0.1:0" if websocket else None,
        )
        return plain, None
    ca = TestCa(folder / "ca")
    server = ca.issue("broker", hosts=["127.0.0.1"])
    settings = HubSettings(
        data=folder / "hub",
        mqtt="127.0.0.1:0",
        http="127.0.0.1:0",
        mqtts="127.0.0.1:0",
        mqtt_wss="127.0.0.1:0" if websocket else None,
        mqtt_cert=server.cert,
        mqtt_key=server.key,
        local_broker="embedded",
    )
    return settings, ca


async def main(args: argparse.Namespace) -> dict[str, Any]:
    """Run the references, the append, the drain and the idle measurement; the figures."""
    with tempfile.TemporaryDirectory(prefix="fieldhub-agent-bench-") as tmp:
        folder = Path(tmp)
        raw_rss, raw_private = raw_rss_mb(args.settle_s / 2)
        raw_rows_s = raw_sqlite_rows_s(folder / "raw.db", args.messages)
        settings, ca = hub_settings(folder, tls=args.tls, websocket=args.websocket)
        async with Hub(settings) as hub:
            issued = (await hub.devices.create(DEVICE_ID)).credentials
            config = write_config(folder, hub, issued.username, issued.secret, ca)
            (folder / "data").mkdir()
            base_ts = int(time.time() * 1000) - 3_600_000  # an hour ago: the outage
            accepted, append_s = await fill_outbox(
                folder / "data" / "outbox.db", args.messages, base_ts
            )

            stats = hub.stats
            received_before = sum(stats.received.values())
            command = ["fieldhub", "agent", "--config", str(config), "--simulate"]
            agent_env = unit_environment(UNIT)
            compile_bytecode()
            with (folder / "agent.log").open("w") as log_file:
                agent = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    *command,
                    stdout=subprocess.DEVNULL,
                    stderr=log_file,
                    env=os.environ | agent_env,
                )
            try:
                first = 0.0
                stored = 0
                deadline = time.monotonic() + args.timeout_s
                while stored < accepted and time.monotonic() < deadline:
                    if agent.returncode is not None:
                        log = (folder / "agent.log").read_text()
                        raise RuntimeError(f"the agent exited ({agent.returncode}):\n{log}")
                    if not first and sum(stats.received.values()) > received_before:
                        first = time.perf_counter()
                    stored = await backlog_stored(hub)
                    await asyncio.sleep(0.02)
                drained = time.perf_counter()
                drain_s = round(accepted / max(drained - first, 1e-9)) if first else 0

                await asyncio.sleep(args.settle_s)  # connected, backlog gone: idle from here
                cpu_before, wall_before = cpu_seconds(agent.pid), time.monotonic()
                await asyncio.sleep(args.idle_s)
                cpu = cpu_seconds(agent.pid) - cpu_before
                idle_cpu = 100 * cpu / (time.monotonic() - wall_before)
                rss = proc_status_mb(agent.pid, "VmRSS")
                peak = proc_status_mb(agent.pid, "VmHWM")
                private = private_mb(agent.pid)
                online = (await hub.registry.get(DEVICE_ID)).reported
            finally:
                agent.terminate()
                await asyncio.wait_for(agent.wait(), 15)
            stored = await backlog_stored(hub)
        log_text = (folder / "agent.log").read_text()
    if "Traceback" in log_text:
        raise RuntimeError(f"the agent failed:\n{log_text}")
    return {
        "tls": args.tls,
        "websocket": args.websocket,
        "rss_mb": round(rss, 1),
        "rss_peak_mb": round(peak, 1),
        "raw_rss_mb": round(raw_rss, 1),
        "rss_ratio": round(rss / raw_rss, 2),
        "private_mb": round(private, 1),
        "raw_private_mb": round(raw_private, 1),
        "idle_cpu_pct": round(idle_cpu, 2),
        "outbox_append_s": round(append_s),
        "raw_sqlite_rows_s": round(raw_rows_s),
        "append_ratio": round(append_s / raw_rows_s, 3) if raw_rows_s else 0,  # --messages 0
        "outbox_msgs_s": drain_s,
        "messages": args.messages,
        "accepted": accepted,
        "stored": stored,
        "lost": accepted - stored,
        "reported_state_keys": len(online),
        "agent_env": " ".join(f"{key}={value}" for key, value in agent_env.items()),
        "cpus": os.cpu_count(),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=50_000, help="backlog in the outbox")
    parser.add_argument("--settle-s", type=float, default=5.0, help="wait before measuring")
    parser.add_argument("--idle-s", type=float, default=15.0, help="idle CPU is measured over")
    parser.add_argument("--timeout-s", type=float, default=60.0, help="for the drain")
    parser.add_argument("--tls", action="store_true", help="the agent on mqtts://")
    parser.add_argument(
        "--websocket", action="store_true", help="the agent on ws:// (wss:// with --tls)"
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    figures = asyncio.run(main(parse_args()))
    for name, value in figures.items():
        print(f"{name}: {value}")
    print(json.dumps(figures))
