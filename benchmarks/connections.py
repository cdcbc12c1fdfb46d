"""10,000 connected devices: the hub's memory and CPU, a broker restart, the fleet summary.

The hub runs as an operator runs it, ``fieldhub hub`` in a process of its own (SQLite) on its
managed Mosquitto (``--local-broker mosquitto``: this benchmark needs Mosquitto installed).
Then:

1. **Register** ``--devices`` devices, each with its own credentials. Mosquitto 2.0's dynamic
   security rewrites its whole state file after every command, so registering devices one by
   one on a running broker slows down with the fleet (about 5 a second past 1,000 here: hours
   for 10,000). So, as an operator would provision a fleet in bulk, the hub is started once
   (to make its database and Mosquitto's files), stopped, and all but ``--live-register`` of
   the devices are registered the way ``fieldhub device add`` does next to a stopped hub
   (the hub's device service on its store) with their clients, roles and hashed passwords
   written into the dynamic-security file Mosquitto loads at its next start
   (``register_stopped_s``). The hub starts again and the last ``--live-register`` devices
   are registered while it runs, exactly as ``fieldhub device add`` does (store, audit log,
   dynamic security), one after the other: ``register_live_per_s`` is that rate at this
   fleet size.
2. **Connect**: ``--processes`` load processes (``benchmarks/connection_load.py``) hold one
   real MQTT connection per device, each behaving as the agent's uplink on the wire (will,
   retained status, an agent's subscriptions, a QoS 1 report every ``--report-s``). Each
   load process raises its own open-file limit (``RLIMIT_NOFILE``) to the hard limit;
   Mosquitto inherits the hub's, which inherits this process's (the hub's systemd unit sets
   ``LimitNOFILE=65536``). ``connect_all_s``: from the first load process's start until the
   hub's ``GET /api/fleet/summary`` counts every device online.
3. **Steady state**: after ``--settle-s``, the hub process's RSS and CPU over ``--steady-s``
   (``hub_rss_mb``, ``hub_cpu_pct``: 100 = one core), from ``/proc``; the managed Mosquitto's
   too (``broker_rss_mb``, ``broker_cpu_pct``). Meanwhile ``--requests`` requests for the
   fleet summary, one at a time, spread over that window as a dashboard polls, as an admin
   with an API token, over HTTP: ``fleet_summary_p50_ms`` and ``fleet_summary_ms`` (its p99,
   as in ``benchmarks/fleet.py``). Its raw reference, every tenth request: the census's
   grouped scan alone by the standard library's sqlite3 on the hub's database file
   (``census_raw_p50_ms``, ``census_raw_max_ms``).
4. **Broker restart**: the managed Mosquitto is killed (SIGKILL, a crash: no last wills, no
   final save) and the hub's supervisor starts it again (``hub/broker/managed.py``).
   ``reconnect_all_s``: from the kill until every device is connected again (load side) and
   then the summary counts every device online (hub side); both figures are printed too, and
   ``broker_up_s`` (until the new Mosquitto accepts connections) and
   ``online_lowest_in_restart`` (the fewest the summary counted online meanwhile).

Raw references measured in the same run, as the other benchmarks do: ``raw_rss_mb`` is a
bare ``python -c "import asyncio"`` process waiting in its loop; ``idle_hub_rss_mb`` the hub
with the devices registered but none connected (what the connections themselves cost is the
difference). Everything here shares the machine (2 cores) with the load processes and with
whatever else runs: figures are under that load.

Targets (issue 18): ``online == devices == 10000``, ``hub_rss_mb <= 300``,
``fleet_summary_ms <= 100``, ``reconnect_all_s <= 60``. The last line printed is one JSON object.

    .venv/bin/python benchmarks/connections.py [--devices 10000] [--processes 2]
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
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from fieldhub.hub import secrets as tokens
from fieldhub.hub.auth import Role
from fieldhub.hub.auth.offline import open_auth
from fieldhub.hub.broker.dynsec import device_role, device_role_acls
from fieldhub.hub.broker.identities import BrokerAccess, DeviceIdentities, StoreOnlyAccess
from fieldhub.hub.broker.selection import open_access
from fieldhub.hub.config import HubSettings
from fieldhub.hub.devices.lifecycle import DeviceLifecycle
from fieldhub.hub.store.audit import AuditLog
from fieldhub.hub.store.claims import ClaimStore
from fieldhub.hub.store.credentials import CredentialStore
from fieldhub.hub.store.database import create_engine
from fieldhub.hub.store.devices import DeviceRegistry
from fieldhub.private_files import write_private

LOAD = Path(__file__).resolve().with_name("connection_load.py")
SITES = ("north", "south", "east", "west")
CLK_TCK = os.sysconf("SC_CLK_TCK")
RAW_CENSUS = (
    "SELECT presence, json_extract(labels, '$.site'), json_extract(labels, '$.group'), count(*)"
    " FROM devices GROUP BY 1, 2, 3"
)


def free_port() -> int:
    """A loopback port nobody listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def rss_mb(pid: int) -> float:
    """VmRSS of a process, MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def cpu_s(pid: int) -> float:
    """User plus system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def children(pid: int) -> list[int]:
    """Direct child processes of ``pid`` (the hub's: its Mosquitto)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def raw_rss_mb() -> float:
    """RSS of a bare Python process waiting in an asyncio loop: the floor of any hub."""
    process = subprocess.Popen(
        [sys.executable, "-c", "import asyncio; asyncio.run(asyncio.sleep(60))"]
    )
    try:
        time.sleep(2.0)
        return rss_mb(process.pid)
    finally:
        process.terminate()
        process.wait()


class HubProcess:
    """``fieldhub hub`` on SQLite and its managed Mosquitto, in a folder of its own."""

    def __init__(self, folder: Path) -> None:
        self.settings = HubSettings(
            data=folder / "hub",
            http=f"127.0.0.1:{free_port()}",
            mqtt=f"127.0.0.1:{free_port()}",
            local_broker="mosquitto",
        )
        self.log = folder / "hub.log"
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://{self.settings.http}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def broker_pid(self) -> int:
        """The managed Mosquitto's process id (the hub's one child)."""
        pids = children(self.pid)
        if len(pids) != 1:
            raise RuntimeError(f"the hub has {len(pids)} child processes, not its one Mosquitto")
        return pids[0]

    async def start(self) -> None:
        s = self.settings
        command = [sys.executable, "-m", "fieldhub", "hub", "--data", str(s.data)]
        command += ["--http", s.http, "--mqtt", s.mqtt, "--local-broker", "mosquitto"]
        with self.log.open("ab") as log:  # started twice: both runs' lines
            self.process = await asyncio.create_subprocess_exec(
                *command, stdout=log, stderr=subprocess.STDOUT
            )
        async with httpx.AsyncClient(base_url=self.url) as client:
            for _ in range(600):
                if self.process.returncode is not None:
                    raise RuntimeError(f"the hub exited:\n{self.log.read_text()[-3000:]}")
                try:
                    if (await client.get("/api/health")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError("the hub did not answer /api/health within 60 s")

    async def stop(self) -> None:
        """SIGTERM, as systemd stops it; killed if it has not stopped within 30 s."""
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 30)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


def _lifecycle(engine: AsyncEngine, access: BrokerAccess) -> DeviceLifecycle:
    """The hub's own device service on its database, as ``fieldhub device add`` builds it."""
    credentials = CredentialStore(engine)
    identities = DeviceIdentities(credentials, AuditLog(engine), access)
    return DeviceLifecycle(
        DeviceRegistry(engine), credentials, ClaimStore(engine), identities=identities
    )


async def _create(devices: DeviceLifecycle, numbers: range, at_once: int) -> list[list[str]]:
    """Devices ``dev-NNNNN`` over four sites, ``at_once`` at a time: [id, user name, secret]."""
    gate = asyncio.Semaphore(at_once)

    async def add(i: int) -> list[str]:
        device_id = f"dev-{i:05d}"
        async with gate:
            new = await devices.create(
                device_id, labels={"site": SITES[i % len(SITES)]}, actor="benchmark"
            )
        return [device_id, new.credentials.username, new.credentials.secret]

    return list(await asyncio.gather(*(add(i) for i in numbers)))


async def register_stopped(settings: HubSettings, count: int, at_once: int) -> list[list[str]]:
    """``count`` devices with their own credentials while the hub is stopped: in its store
    (``StoreOnlyAccess``, as ``fieldhub device add`` next to the embedded broker) and in its
    Mosquitto's dynamic-security state file, which the managed broker loads at its next start
    (``hub/broker/mosquitto_files.py`` keeps the file; each client with its own role, as
    ``DynSecAccess.grant`` makes them, and its password hashed as Mosquitto hashes it)."""
    engine = create_engine(settings.db_url)
    try:
        entries = await _create(_lifecycle(engine, StoreOnlyAccess()), range(count), at_once)
    finally:
        await engine.dispose()
    path = settings.data / "mosquitto" / "dynamic-security.json"
    state = json.loads(path.read_text(encoding="utf-8"))
    for device_id, username, secret in entries:
        role = device_role(device_id)
        state["roles"].append({"rolename": role, "acls": device_role_acls(device_id)})
        state["clients"].append(
            {"username": username, "roles": [{"rolename": role}]} | _hashed(secret)
        )
    write_private(path, json.dumps(state).encode())
    return entries


def _hashed(secret: str) -> dict[str, Any]:
    """A password as Mosquitto's dynamic security stores it (PBKDF2-SHA512, 101 rounds)."""
    salt = os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", secret.encode(), salt, 101)
    return {
        "password": base64.b64encode(digest).decode(),
        "salt": base64.b64encode(salt).decode(),
        "iterations": 101,
    }


async def register_live(settings: HubSettings, numbers: range) -> list[list[str]]:
    """Devices registered while the hub runs, exactly as ``fieldhub device add`` does (the
    store, the audit log, the hub's Mosquitto told through dynamic security), one at a time:
    with 10,000 clients, 32 at once made Mosquitto answer none within the 10 s the hub
    waits (each command rewrites its whole state file)."""
    engine = create_engine(settings.db_url)
    try:
        async with AsyncExitStack() as stack:
            access = await open_access(settings, stack)
            return await _create(_lifecycle(engine, access), numbers, 1)
    finally:
        await engine.dispose()


async def admin_token(settings: HubSettings) -> str:
    """An API token of a new admin (as the dashboard's *My API tokens* makes one)."""
    async with open_auth(settings.db_url) as auth:
        user = await auth.accounts.create_user(
            "bench-admin", role=Role.ADMIN, sites=[], password=None, actor="benchmark"
        )
        token = tokens.mint(tokens.API_TOKEN_PREFIX)
        await auth.users.create_token(
            user.id, name="bench", token_hash=tokens.digest(token), scopes=["read"], expires_at=None
        )
    return token


class Load:
    """The load processes and what they last said."""

    def __init__(
        self,
        folder: Path,
        hub: HubSettings,
        devices: list[list[str]],
        processes: int,
        report_s: float,
    ) -> None:
        host, _, port = hub.mqtt.rpartition(":")
        self._specs: list[Path] = []
        for n in range(processes):
            spec = folder / f"load-{n}.json"
            body = {
                "host": host,
                "port": int(port),
                "report_s": report_s,
                "devices": devices[n::processes],
            }
            write_private(spec, json.dumps(body).encode())
            self._specs.append(spec)
        self._processes: list[asyncio.subprocess.Process] = []
        self.latest: list[dict[str, Any]] = [{} for _ in self._specs]
        self._readers: list[asyncio.Task[None]] = []
        self._changed = asyncio.Condition()

    async def start(self) -> None:
        for n, spec in enumerate(self._specs):
            process = await asyncio.create_subprocess_exec(
                sys.executable, str(LOAD), str(spec), stdout=asyncio.subprocess.PIPE
            )
            self._processes.append(process)
            self._readers.append(asyncio.create_task(self._read(n, process)))

    async def _read(self, n: int, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        async for line in process.stdout:
            self.latest[n] = json.loads(line)
            async with self._changed:
                self._changed.notify_all()

    async def until(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        """Wait until ``predicate`` holds for what the load processes said; False: timed out."""
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(predicate), timeout_s)
            except TimeoutError:
                return False
        return True

    def total(self, key: str) -> int:
        return sum(int(figures.get(key) or 0) for figures in self.latest)

    def all_connected_at(self) -> float | None:
        """When every device of every process was last connected at once (monotonic)."""
        moments = [figures.get("all_connected_at") for figures in self.latest]
        return None if None in moments else max(float(m) for m in moments if m is not None)

    async def stop(self) -> None:
        for process in self._processes:
            if process.returncode is None:
                process.kill()
            await process.wait()
        for reader in self._readers:
            reader.cancel()


async def online(client: httpx.AsyncClient) -> int:
    """Devices the hub's fleet summary counts online."""
    answer = await client.get("/api/fleet/summary")
    answer.raise_for_status()
    return int(answer.json()["presence"].get("online", 0))


async def until_online(
    client: httpx.AsyncClient, devices: int, timeout_s: float
) -> tuple[float, int]:
    """Poll the summary until all ``devices`` are online: the moment (monotonic), the count."""
    deadline = time.monotonic() + timeout_s
    count = 0
    while time.monotonic() < deadline:
        count = await online(client)
        if count >= devices:
            return time.monotonic(), count
        await asyncio.sleep(0.25)
    return float("nan"), count


class OnlineWatch:
    """The fewest devices the summary counted online while it ran (during the restart: did
    the hub see them go? With a crashed broker there are no last wills: the hub doubts its
    devices when its own connection comes back, ``hub/devices/presence.py``)."""

    def __init__(self, client: httpx.AsyncClient, devices: int) -> None:
        self._client = client
        self.lowest = devices

    async def run(self) -> None:
        while True:
            self.lowest = min(self.lowest, await online(self._client))
            await asyncio.sleep(0.25)


def raw_census_ms(db: Path) -> float:
    """The fleet census's grouped scan alone (``hub/store/fleet.py``, without its test for
    open alarms), by the standard library's sqlite3 on the hub's database file, read-only,
    milliseconds: what the database needs for the counts, without the hub around it."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        started = time.perf_counter()
        conn.execute(RAW_CENSUS).fetchall()
        return (time.perf_counter() - started) * 1000


async def summary_latency(
    client: httpx.AsyncClient, db: Path, requests: int, over_s: float
) -> dict[str, Any]:
    """The fleet summary route asked ``requests`` times, one at a time, spread over
    ``over_s`` as a dashboard polls it (so about one request a second pays for the census,
    ``CENSUS_TTL_S``); every tenth request the raw census beside it."""
    took: list[float] = []
    raw: list[float] = []
    slow: list[float] = []  # when (s into the window) a request took over 100 ms
    pause = over_s / requests
    window = time.perf_counter()
    for n in range(requests):
        started = time.perf_counter()
        (await client.get("/api/fleet/summary")).raise_for_status()
        took.append((time.perf_counter() - started) * 1000)
        if took[-1] > 100:
            slow.append(round(started - window, 1))
        if n % 10 == 0:
            raw.append(await asyncio.to_thread(raw_census_ms, db))
        await asyncio.sleep(pause)
    cuts = statistics.quantiles(took, n=100)
    return {
        "fleet_summary_p50_ms": round(statistics.median(took), 1),
        "fleet_summary_ms": round(cuts[98], 1),
        "fleet_summary_over_100ms": len(slow),
        "fleet_summary_slow_at_s": slow[:40],
        "census_raw_p50_ms": round(statistics.median(raw), 1),
        "census_raw_max_ms": round(max(raw), 1),
    }


async def steady_state(
    hub: HubProcess, client: httpx.AsyncClient, load: Load, args: argparse.Namespace
) -> dict[str, Any]:
    """Phase 3: memory and CPU of hub and broker while the summary route is asked."""
    broker = hub.broker_pid()
    hub_cpu, broker_cpu, since = cpu_s(hub.pid), cpu_s(broker), time.monotonic()
    db = hub.settings.data / "fieldhub.db"
    latency = await summary_latency(client, db, args.requests, args.steady_s)
    wall = time.monotonic() - since
    return latency | {
        "online": await online(client),
        "hub_rss_mb": round(rss_mb(hub.pid), 1),
        "hub_cpu_pct": round(100 * (cpu_s(hub.pid) - hub_cpu) / wall, 1),
        "broker_rss_mb": round(rss_mb(broker), 1),
        "broker_cpu_pct": round(100 * (cpu_s(broker) - broker_cpu) / wall, 1),
        "reports": load.total("reports"),
    }


async def listening(address: str, timeout_s: float) -> float:
    """When (monotonic) ``HOST:PORT`` next accepts a TCP connection; NaN if not in time."""
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            _reader, writer = await asyncio.open_connection(host, int(port))
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return time.monotonic()
    return float("nan")


async def broker_restart(
    hub: HubProcess, client: httpx.AsyncClient, load: Load, args: argparse.Namespace
) -> dict[str, Any]:
    """Phase 4: the managed Mosquitto crashes; how long until every device is back."""
    broker = hub.broker_pid()
    killed = time.monotonic()
    os.kill(broker, signal.SIGKILL)
    watch = OnlineWatch(client, args.devices)
    watching = asyncio.create_task(watch.run())
    try:
        await asyncio.sleep(0.2)  # the old listener is gone
        broker_up = await listening(hub.settings.mqtt, args.timeout_s) - killed
        half = args.devices // 2
        await load.until(lambda: load.total("connected") <= half, args.timeout_s)
        await load.until(lambda: (load.all_connected_at() or 0) > killed, args.timeout_s)
        load_back = (load.all_connected_at() or float("nan")) - killed
        back, count = await until_online(client, args.devices, args.timeout_s)
    finally:
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)
    hub_back = back - killed
    return {
        "reconnect_all_s": round(max(load_back, hub_back), 1),
        "reconnect_load_s": round(load_back, 1),
        "broker_up_s": round(broker_up, 1),
        "reconnect_hub_s": round(hub_back, 1),
        "online_after_restart": count,
        "online_lowest_in_restart": watch.lowest,
        "broker_restarted": hub.broker_pid() != broker,
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    """Register, connect, measure, restart the broker; the figures."""
    figures: dict[str, Any] = {"devices": args.devices, "raw_rss_mb": round(raw_rss_mb(), 1)}
    with tempfile.TemporaryDirectory(prefix="fieldhub-connections-") as tmp:
        folder = Path(tmp)
        hub = HubProcess(folder)
        load: Load | None = None
        try:
            await hub.start()  # its first start makes the database and Mosquitto's files
            await hub.stop()
            bulk = args.devices - min(args.live_register, args.devices)
            started = time.monotonic()
            devices = await register_stopped(hub.settings, bulk, args.register_at_once)
            figures["register_stopped_s"] = round(time.monotonic() - started, 1)
            await hub.start()
            started = time.monotonic()
            live = range(bulk, args.devices)
            devices += await register_live(hub.settings, live)
            took = time.monotonic() - started
            figures["register_live_per_s"] = round(len(live) / took, 1) if live else None
            headers = {"Authorization": f"Bearer {await admin_token(hub.settings)}"}
            async with httpx.AsyncClient(base_url=hub.url, headers=headers, timeout=30) as client:
                await asyncio.sleep(args.settle_s)
                figures["idle_hub_rss_mb"] = round(rss_mb(hub.pid), 1)
                load = Load(folder, hub.settings, devices, args.processes, args.report_s)
                started = time.monotonic()
                await load.start()
                reached, _count = await until_online(client, args.devices, args.timeout_s)
                figures["connect_all_s"] = round(reached - started, 1)
                await asyncio.sleep(args.settle_s)
                figures |= await steady_state(hub, client, load, args)
                figures |= await broker_restart(hub, client, load, args)
                figures["refused"] = load.total("refused")
        finally:
            if load is not None:
                await load.stop()
            await hub.stop()
        figures["hub_tracebacks"] = hub.log.read_text(errors="replace").count("Traceback")
    return figures | {
        "report_s": args.report_s,
        "processes": args.processes,
        "cpus": os.cpu_count(),
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=10_000, help="connected devices")
    parser.add_argument("--processes", type=int, default=2, help="load processes")
    parser.add_argument("--report-s", type=float, default=10.0, help="each device reports every")
    parser.add_argument("--register-at-once", type=int, default=32, help="registrations in flight")
    parser.add_argument(
        "--live-register", type=int, default=50, help="of the devices, registered with the hub up"
    )
    parser.add_argument("--settle-s", type=float, default=10.0, help="wait before measuring")
    parser.add_argument("--steady-s", type=float, default=30.0, help="CPU is measured over")
    parser.add_argument("--requests", type=int, default=200, help="fleet summary requests")
    parser.add_argument("--timeout-s", type=float, default=300.0, help="for all to be online")
    return parser.parse_args(argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    figures = asyncio.run(main(parse_args()))
    for name, value in figures.items():
        print(f"{name}: {value}")
    print(json.dumps(figures))
