"""Several hub processes on one PostgreSQL (docs/scaling.md): the singleton lease, work that runs
once and moves when its holder dies, and live frames that reach a browser on another process.

Real parts: PostgreSQL and Mosquitto from the session fixtures; hub processes started with
``fieldhub hub`` and killed with SIGKILL where the point is a process dying.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from fieldhub.hub.app import Hub
from fieldhub.hub.cluster.feed import MAX_PAYLOAD, decode, encode
from fieldhub.hub.cluster.lease import Lease
from fieldhub.hub.ingest.batch import Batch, PresenceChange
from fieldhub.hub.store.database import create_engine
from fieldhub.hub.store.schema import devices, events
from fieldhub.protocol import Telemetry
from tests.conftest import DeviceFactory, HubFactory
from tests.device_client import TestDevice
from tests.hub_client import served
from tests.support.servers import Mosquitto, Postgres, free_port
from tests.test_live import live, token_of
from tests.waiting import eventually

pytestmark = [pytest.mark.postgres]

FIELDHUB = [sys.executable, "-m", "fieldhub"]


async def test_one_process_holds_the_lease_and_another_takes_it_when_its_session_dies(
    postgres: Postgres, uid: str
):
    url = make_url(await asyncio.to_thread(postgres.create_database, f"lease_{uid}"))
    first, second = Lease(url, retry_s=0.2), Lease(url, retry_s=0.2)
    told: list[tuple[str, bool]] = []

    async def follow(lease: Lease, name: str) -> None:
        async def changed(held: bool) -> None:
            told.append((name, held))

        await lease.run(changed)

    one = asyncio.create_task(follow(first, "first"))
    await eventually(lambda: first.held, "the first lease taken")
    two = asyncio.create_task(follow(second, "second"))
    await asyncio.sleep(1.0)  # five tries of the second: the lock is taken
    assert not second.held
    one.cancel()  # its session ends: PostgreSQL lets the lock go
    await asyncio.gather(one, return_exceptions=True)
    await eventually(lambda: second.held, "the second lease taken", within_s=5)
    two.cancel()
    await asyncio.gather(two, return_exceptions=True)
    assert told == [("first", True), ("second", True)]


async def test_on_sqlite_the_one_hub_always_holds_the_lease(tmp_path: Path):
    lease = Lease(make_url(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"))
    assert lease.held
    assert not lease.shared


def test_a_batch_travels_in_notifications_under_the_payload_limit():
    batch = Batch()
    for seq in range(1, 301):
        message = Telemetry(seq=seq, ts=1_700_000_000_000 + seq, values={"kwh": seq, "v": "€" * 40})
        batch.telemetry.append((f"dev-{seq % 7}", message))
        batch.seqs.setdefault(f"dev-{seq % 7}", []).append((seq, 0))
    batch.presence.append(PresenceChange("dev-1", "stale", 1_700_000_000_000, "no data", True))
    payloads, too_large = encode("hub-a", batch)
    assert too_large == 0
    assert len(payloads) > 1
    assert all(len(p.encode()) <= MAX_PAYLOAD for p in payloads)
    parts = [decode(p) for p in payloads]
    assert {origin for origin, _ in parts} == {"hub-a"}
    assert [m for _, part in parts for _, m in part.telemetry] == [m for _, m in batch.telemetry]
    assert [c for _, part in parts for c in part.presence] == batch.presence


@pytest.mark.slow
@pytest.mark.mosquitto
async def test_a_browser_on_one_hub_sees_telemetry_another_hub_ingested(
    make_hub: HubFactory, connect_device: DeviceFactory, tmp_path: Path, uid: str
):
    # Both hubs share the device's messages through Mosquitto ($share/ of one group): B's
    # browser must see all of them, also those that A took and stored.
    async with make_hub(broker="mosquitto", db="postgres", cluster_group=f"g{uid}") as hub_a:
        device = await connect_device(hub_a, "far")
        settings_b = hub_a.settings.model_copy(
            update={"data": tmp_path / "b", "instance": f"t{uid}b", "http": "127.0.0.1:0"}
        )
        async with Hub(settings_b) as hub_b, served(hub_b) as base:
            token = await token_of(hub_b)
            async with live(base, token=token) as socket:
                await socket.subscribe(devices=[device.device_id], topics=["telemetry"])
                sent = [40.0 + n for n in range(1, 7)]
                seen = []
                for seq, kwh in enumerate(sent, start=1):  # one at a time: each its own frame
                    device.telemetry(seq, kwh=kwh)
                    frame = await socket.next("telemetry", within_s=10, device=device.device_id)
                    seen.append(frame["values"]["kwh"])
                assert seen == sent
            # B stored only its share: the rest of what its browser saw came from A's commits.
            assert hub_b.stats.messages_stored < len(sent)
            # A device registered on A while B runs: B knows it, and that it is online.
            late = await connect_device(hub_a, "late")
            late.online()
            await eventually(
                lambda: hub_b.presence.get(late.device_id).presence == "online",
                "the late device online on hub B",
            )
            assert hub_b.directory.get(late.device_id) is not None
            async with httpx.AsyncClient(base_url=base) as http:
                metrics = await http.get("/metrics", headers={"Authorization": f"Bearer {token}"})
            # What an operator reads: one of the two holds the lease, B received the feed.
            assert 'fieldhub_cluster_feed_total{outcome="received"}' in metrics.text
            held = [hub.singletons.here() for hub in (hub_a, hub_b)]
            assert sorted(held) == [False, True]
            lease_line = f"fieldhub_singleton_lease_held {float(hub_b.singletons.here())}"
            assert lease_line in metrics.text
            assert hub_b.feed is not None
            assert hub_b.feed.received >= 1


# -- real processes ---------------------------------------------------------------------------


@contextmanager
def hub_process(name: str, log: Path, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """``fieldhub hub ARGS`` as ``name``, its output in ``log``; stopped (SIGTERM) afterwards
    unless the test killed it."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*FIELDHUB, "hub", "--instance", name, "--http", f"127.0.0.1:{free_port()}", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "COLUMNS": "200"},
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                pytest.fail(f"{name} did not stop within 20 s of SIGTERM")


async def logged(log: Path, pattern: str, what: str, within_s: float = 90.0) -> None:
    """Wait until ``log`` has a line matching ``pattern`` (a hub's start: 10-40 s loaded)."""
    await eventually(lambda: re.search(pattern, log.read_text()), what, within_s=within_s)


@asynccontextmanager
async def device_of(
    broker: Mosquitto, db: str, data: Path, device_id: str
) -> AsyncIterator[TestDevice]:
    """``device_id`` registered with ``fieldhub device add`` and connected to ``broker``."""
    add = [*FIELDHUB, "device", "add", device_id, "--db", db, "--broker", broker.url]
    added = await asyncio.to_thread(
        subprocess.run, [*add, "--data", str(data)], capture_output=True, text=True, timeout=60
    )
    assert added.returncode == 0, added.stderr
    issued = dict(line.split(": ", 1) for line in added.stdout.splitlines() if ": " in line)

    async def connected() -> TestDevice | None:  # once a hub has told the broker its key
        try:
            return await TestDevice.connect(
                f"mqtt://{broker.host}:{broker.port}", device_id,
                username=issued["username"], password=issued["secret"],
                client_id=issued["client_id"],
            )  # fmt: skip
        except ConnectionRefusedError:
            return None

    device = await eventually(connected, f"{device_id} connected", within_s=20)
    try:
        yield device
    finally:
        device.close()


@pytest.mark.slow
@pytest.mark.mosquitto
@pytest.mark.timeout(300)  # two hub processes start, one dies, two presence sweeps: 20-110 s
async def test_singleton_work_moves_to_the_other_hub_when_its_holder_is_killed(
    mosquitto: Mosquitto, postgres: Postgres, tmp_path: Path, uid: str
):
    db = await asyncio.to_thread(postgres.create_database, f"pair_{uid}")
    engine = create_engine(db)
    common = ("--broker", mosquitto.url, "--db", db, "--stale-after", "3", "--cluster", "hubs")
    log_a, log_b = tmp_path / "a.log", tmp_path / "b.log"

    async def presence(device_id: str) -> tuple[str, int]:
        """The device's presence in the store, and how many ``presence.stale`` events it has."""
        async with engine.connect() as conn:
            state = (
                await conn.execute(select(devices.c.presence).where(devices.c.id == device_id))
            ).scalar()
            stale = await conn.execute(
                select(func.count()).where(
                    events.c.device_id == device_id, events.c.type == "presence.stale"
                )
            )
            return str(state), int(stale.scalar() or 0)

    async def presence_is(expected: tuple[str, int]) -> bool:
        return await presence(device_id) == expected

    device_id = f"pair-{uid}"
    try:
        with hub_process(f"a{uid}", log_a, *common, "--data", str(tmp_path / "a")) as hub_a:
            await logged(log_a, r"lease singletons taken", "hub a holding the lease")
            with hub_process(f"b{uid}", log_b, *common, "--data", str(tmp_path / "b")):
                await logged(log_b, r"hub b\S* started", "hub b started")
                async with device_of(mosquitto, db, tmp_path / "cli", device_id) as device:
                    device.online()
                    device.telemetry(1, kwh=1.0)
                    await eventually(lambda: presence_is(("online", 0)), "online", within_s=20)
                    # Silent past --stale-after: stale, recorded once although two hubs run.
                    await eventually(lambda: presence_is(("stale", 1)), "stale", within_s=20)
                    await asyncio.sleep(3)  # another sweep of each: still one stale event
                    assert await presence(device_id) == ("stale", 1)
                    assert "lease singletons taken" not in log_b.read_text()

                    device.telemetry(2, kwh=2.0)
                    await eventually(lambda: presence_is(("online", 1)), "online again")
                    hub_a.send_signal(signal.SIGKILL)
                    killed = time.monotonic()
                    await logged(log_b, r"lease singletons taken", "hub b taking over", 15)
                    takeover_s = time.monotonic() - killed
                    await eventually(
                        lambda: presence_is(("stale", 2)),
                        "stale marked by hub b",
                        within_s=20,
                    )
        assert takeover_s <= 10, f"hub b took the lease {takeover_s:.1f} s after the kill"
        assert "Traceback" not in log_b.read_text(), log_b.read_text()
    finally:
        await engine.dispose()
