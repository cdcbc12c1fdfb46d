"""Ingest benchmark: MQTT publish → committed row, against a C subscriber on the same load.

It starts Mosquitto (Debian package) and, in this process, a hub on it with SQLite (or
PostgreSQL with ``--db postgres``). A load generator in its own process (``loadgen.py``)
plays D devices publishing single-sample telemetry as fast as the broker takes it; the hub's
rate is messages committed per second, from its first message to its last commit. In the same
run ``mosquitto_sub`` receives the same load from the same broker at the same QoS: that is the
raw reference the ratio is taken against. With ``--tls`` everything the load touches speaks
TLS: the devices, the hub's connection and ``mosquitto_sub`` (``--cafile``) all go to the
broker's TLS listener (``deploy/mosquitto/tls.conf``, a test CA made with ``openssl``), so the
ratio is against the TLS raw reference. A second phase sends messages carrying a batch of
samples each, as an agent draining its outbox does, and reports points stored per second.

Nothing is taken on trust: after each phase every device's acknowledged watermark must equal
the last seq it sent (``lost``), and the number of rows must be exactly what was sent
(``duplicates``). The last line printed is one JSON object.

Every device logs in with its own credentials, as in production: the hub's devices with what
``DeviceLifecycle.create`` issued, the reference's devices with keys granted the same way in
Mosquitto's dynamic security (so both loads pass the same per-device topic rules).

    .venv/bin/python benchmarks/ingest.py [--devices 50] [--qos 1] [--messages 4000]
                                          [--tls | --managed]

``--managed``: the hub runs as ``fieldhub hub`` does without ``--broker``, on a Mosquitto child
of its own (``hub/broker/managed.py``), and the load goes to that broker; the raw reference
still runs on the benchmark's Mosquitto (same configuration file), whose telemetry the hub's
admin may not read.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import secrets
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).parent))  # sibling scripts
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # tests.support: the real servers

from tests.support.certs import TestCa
from tests.support.servers import Mosquitto, Postgres

from fieldhub.hub.app import Hub
from fieldhub.hub.broker.dynsec import DynSec, MosquittoAccess
from fieldhub.hub.broker.keyring import MqttIdentity
from fieldhub.hub.broker.managed import ManagedMosquitto
from fieldhub.hub.config import HubSettings
from fieldhub.hub.store.credentials import IssuedCredentials
from fieldhub.hub.store.schema import devices, samples, series
from loadgen import VALUES, LoadResult, run_in_subprocess


@dataclass(frozen=True)
class LoadTarget:
    """Where the load and the subscribers connect: the plain listener, or with ``ca_file`` the
    TLS listener (``--tls``)."""

    port: int
    ca_file: str | None = None

    @staticmethod
    def of(broker: Mosquitto, ca: TestCa | None) -> LoadTarget:
        if ca is None or broker.tls_port is None:
            return LoadTarget(broker.port)
        return LoadTarget(broker.tls_port, str(ca.cert))

    def mosquitto_sub_args(self) -> list[str]:
        """The port, and the CA to verify the broker with over TLS."""
        return ["-p", str(self.port)] + (["--cafile", self.ca_file] if self.ca_file else [])


@dataclass
class PhaseResult:
    """What one hub phase measured."""

    sent: int
    stored: int
    lost: int
    duplicates: int
    rate_msg_s: float
    points_s: float
    publish_rate_msg_s: float
    batches: int
    commit_s: float


async def raw_reference(
    broker: Mosquitto, target: LoadTarget, *, devices: int, qos: int, per_device: int
) -> float:
    """Messages per second ``mosquitto_sub`` receives of the same load (first to last)."""
    total = devices * per_device
    credentials = await _grant_devices(broker, [f"raw-{i:05d}" for i in range(devices)])
    sub = await asyncio.create_subprocess_exec(
        "mosquitto_sub", "-h", broker.host, *target.mosquitto_sub_args(), "-q", str(qos),
        "-u", broker.admin_username, "-P", broker.admin_password,
        "-t", "fh/v1/+/telemetry", "-C", str(total), "-F", "%U",
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    await asyncio.sleep(0.5)  # subscribed before the first publish
    load = asyncio.create_task(
        run_in_subprocess(
            broker.host, target.port, devices=devices, qos=qos,
            max_per_device=per_device, device_prefix="raw", credentials=credentials,
            ca_file=target.ca_file,
        )
    )  # fmt: skip
    if sub.stdout is None:
        raise RuntimeError("mosquitto_sub has no output pipe")
    first = last = 0.0
    received = 0
    async for line in sub.stdout:
        stamp = float(line)
        first = first or stamp
        last = stamp
        received += 1
    await sub.wait()
    await load
    if received < total:
        raise RuntimeError(f"mosquitto_sub received {received} of {total}")
    return (received - 1) / (last - first)


async def _grant_devices(broker: Mosquitto, ids: list[str]) -> dict[str, tuple[str, str]]:
    """Device keys made straight in Mosquitto, for the reference run (no hub is running yet;
    the hub's reconciliation deletes them when it starts, as keys it does not know)."""
    admin = MqttIdentity(broker.admin_username, broker.admin_password, "")
    credentials = {}
    async with DynSec(broker.host, broker.port, admin) as dynsec:
        access = MosquittoAccess(dynsec)
        for device_id in ids:
            issued = IssuedCredentials(
                device_id, f"{device_id}.{secrets.token_hex(4)}", secrets.token_urlsafe(32)
            )
            await access.grant(issued, [])
            credentials[device_id] = (issued.username, issued.secret)
    return credentials


async def hub_phase(
    hub: Hub,
    broker: Mosquitto | ManagedMosquitto,
    target: LoadTarget,
    *,
    devices: int,
    qos: int,
    per_device: int,
    samples: int,
    prefix: str,
    rate: float | None = None,
) -> PhaseResult:
    """Publish the load to the hub (paced at ``rate`` msg/s if given) and wait until every
    message is committed."""
    ids = [f"{prefix}-{i:05d}" for i in range(devices)]
    credentials = {}
    for device_id in ids:
        issued = (await hub.devices.create(device_id)).credentials
        credentials[device_id] = (issued.username, issued.secret)
    stats = hub.stats
    stored_before, batches_before = stats.messages_stored, stats.batches
    commit_before = stats.commit_seconds
    total = devices * per_device
    load = asyncio.create_task(
        run_in_subprocess(
            broker.host, target.port, devices=devices, qos=qos, max_per_device=per_device,
            samples_per_msg=samples, device_prefix=prefix, credentials=credentials,
            ca_file=target.ca_file, rate=rate,
        )
    )  # fmt: skip
    first = 0.0
    deadline = time.monotonic() + 600
    while stats.messages_stored - stored_before < total and time.monotonic() < deadline:
        if not first and sum(stats.received.values()) > 0:
            first = time.perf_counter()
        if load.done() and load.exception():
            break
        await asyncio.sleep(0.005)
    done = time.perf_counter()
    result: LoadResult = await load
    await asyncio.sleep(0.5)  # let a late duplicate, if any, be committed and counted
    return await _verify(hub, ids, result, first, done, samples, stats.batches - batches_before,
                         stats.commit_seconds - commit_before)  # fmt: skip


async def _verify(
    hub: Hub,
    ids: list[str],
    load: LoadResult,
    first: float,
    done: float,
    samples_per_msg: int,
    batches: int,
    commit_s: float,
) -> PhaseResult:
    async with hub.engine.connect() as conn:
        watermarks = select(devices.c.id, devices.c.acked_seq).where(devices.c.id.in_(ids))
        acked = dict((await conn.execute(watermarks)).all())
        rows = (
            await conn.execute(
                select(func.count())
                .select_from(samples.join(series, samples.c.series_id == series.c.id))
                .where(series.c.device_id.in_(ids))
            )
        ).scalar_one()
    lost = sum(max(0, load.sent[d] - acked.get(d, 0)) for d in ids)
    sent = load.total
    stored = sent - lost
    points = stored * samples_per_msg * len(VALUES)
    elapsed = max(done - first, 1e-9)
    return PhaseResult(
        sent=sent,
        stored=stored,
        lost=lost,
        duplicates=max(0, rows - points),
        rate_msg_s=round(stored / elapsed),
        points_s=round(points / elapsed),
        publish_rate_msg_s=round(load.rate),
        batches=batches,
        commit_s=round(commit_s, 3),
    )


async def main(args: argparse.Namespace) -> dict[str, Any]:
    """Run the reference and both hub phases; return the figures."""
    with (
        tempfile.TemporaryDirectory(prefix="fieldhub-bench-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        ca = TestCa(Path(tmp) / "ca") if args.tls else None
        server = ca.issue("broker", hosts=["127.0.0.1"]) if ca is not None else None
        broker = stack.enter_context(
            Mosquitto(
                Path(tmp) / "mosquitto",
                tls=(server.cert, server.key) if server is not None else None,
            )
        )
        target = LoadTarget.of(broker, ca)
        db_url = None
        if args.db == "postgres":
            db_url = stack.enter_context(Postgres(Path(tmp) / "pg")).url
        raw_rate = await raw_reference(
            broker, target, devices=args.devices, qos=args.qos, per_device=args.messages
        )
        settings = HubSettings(
            data=Path(tmp) / "data",
            broker=broker.tls_url if ca is not None else broker.url,
            broker_ca=ca.cert if ca is not None else None,
            db=db_url,
            qos=args.qos,
        )
        if args.managed:  # never amqtt by mistake: "mosquitto" fails where "auto" falls back
            settings = HubSettings(data=Path(tmp) / "data", db=db_url, qos=args.qos,
                                   local_broker="mosquitto", mqtt="127.0.0.1:0")  # fmt: skip
        async with Hub(settings) as hub:
            phase_broker: Mosquitto | ManagedMosquitto = hub.managed_broker or broker
            if hub.managed_broker is not None:
                target = LoadTarget(hub.managed_broker.port)
            single = await hub_phase(hub, phase_broker, target, devices=args.devices, qos=args.qos,
                                     per_device=args.messages, samples=1, prefix="one")  # fmt: skip
            batched = await hub_phase(hub, phase_broker, target, devices=args.devices, qos=args.qos,
                                      per_device=args.batch_messages, samples=args.batch_samples,
                                      prefix="many")  # fmt: skip
            dropped = await _managed_dropped(phase_broker) if args.managed else None
        if dropped is None:
            dropped = broker.dropped_messages()
    return {
        "devices": args.devices,
        "qos": args.qos,
        "db": args.db,
        "tls": args.tls,
        "sent": single.sent,
        "stored": single.stored,
        "lost": single.lost + batched.lost,
        "duplicates": single.duplicates + batched.duplicates,
        "rate_msg_s": single.rate_msg_s,
        "raw_rate_msg_s": round(raw_rate),
        "ratio": round(single.rate_msg_s / raw_rate, 3),
        "points_s": batched.points_s,
        "batch_samples": args.batch_samples,
        "batch_rate_msg_s": batched.rate_msg_s,
        "publish_rate_msg_s": single.publish_rate_msg_s,
        "hub_batches": single.batches,
        "hub_commit_s": single.commit_s,
        "broker_dropped": dropped,
        "broker": "managed-mosquitto" if args.managed else "mosquitto",
        "cpus": os.cpu_count(),
    }


async def _managed_dropped(broker: Mosquitto | ManagedMosquitto) -> int:
    """The hub's Mosquitto's count of dropped messages, read as its admin once it has
    republished its ``$SYS`` counters (every 10 s by default)."""
    assert isinstance(broker, ManagedMosquitto)
    await asyncio.sleep(11)
    admin = urlsplit(broker.admin_url)
    sub = await asyncio.create_subprocess_exec(
        "mosquitto_sub", "-h", broker.host, "-p", str(broker.port), "-u", str(admin.username),
        "-P", str(admin.password), "-t", "$SYS/broker/publish/messages/dropped",
        "-C", "1", "-W", "5",
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    said, _ = await sub.communicate()
    return int(said.strip() or 0)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--qos", type=int, choices=(0, 1), default=1)
    parser.add_argument("--messages", type=int, default=4000, help="per device, phase one")
    parser.add_argument("--batch-samples", type=int, default=50, help="samples per message")
    parser.add_argument("--batch-messages", type=int, default=200, help="per device, phase two")
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument(
        "--tls", action="store_true", help="everything over TLS, against a TLS raw reference"
    )
    parser.add_argument(
        "--managed", action="store_true", help="the hub on its own Mosquitto, as `fieldhub hub`"
    )
    args = parser.parse_args(argv)
    if args.tls and args.managed:
        parser.error("--tls and --managed: the hub's managed Mosquitto has no TLS listener yet")
    return args


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    figures = asyncio.run(main(parse_args()))
    print(json.dumps(figures))
