"""Several hubs ingest one fleet (issue 18): shared subscriptions on Mosquitto, one PostgreSQL,
each (device, seq) stored once whichever hub got it and however often a hub is killed; and the
configurations that cannot work are refused at start with a message that says why.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from fieldhub.hub.store.database import create_engine
from fieldhub.protocol import hub_subscriptions
from tests.support.cluster import FIELDHUB, HubProcess, Reporter, admin_session, is_event, register
from tests.support.servers import Mosquitto, Postgres, free_port
from tests.test_cli import running


def test_a_cluster_shares_the_sequenced_channels_and_keeps_status_and_replies_its_own():
    assert hub_subscriptions("hub-a", "ingest") == [
        "$share/ingest/fh/v1/+/telemetry",
        "$share/ingest/fh/v1/+/event",
        "$share/ingest/fh/v1/+/state",
        "fh/v1/+/status",
        "fh/v1/+/upload",
        "fh/v1/+/reply/hub-a",
    ]
    assert not any(s.startswith("$share") for s in hub_subscriptions("hub-a"))


def _fieldhub(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FIELDHUB, *args], capture_output=True, text=True, timeout=60)


@pytest.mark.slow
def test_a_second_hub_on_one_sqlite_folder_is_refused(tmp_path: Path):
    data = ("--data", str(tmp_path), "--local-broker", "embedded")
    first = ("hub", *data, "--http", f"127.0.0.1:{free_port()}", "--mqtt", "127.0.0.1:0")
    with running(*first) as (_, process):
        second = _fieldhub(
            "hub", *data, "--http", f"127.0.0.1:{free_port()}", "--mqtt", "127.0.0.1:0"
        )
        assert second.returncode == 1
        assert f"another hub (pid {process.pid}) runs on the SQLite database" in second.stderr
        assert "Traceback" not in second.stderr
    # Once the first hub is gone (a crash would do too: the kernel drops the lock), one starts.
    with running(*first):
        pass


@pytest.mark.slow
@pytest.mark.postgres
def test_cluster_mode_needs_postgresql_and_a_broker_with_shared_subscriptions(
    tmp_path: Path, postgres: Postgres, uid: str
):
    on_sqlite = _fieldhub("hub", "--cluster", "ingest", "--data", str(tmp_path))
    assert on_sqlite.returncode == 2
    assert "several hubs need one PostgreSQL database" in on_sqlite.stderr

    db = postgres.create_database(f"embedded_{uid}")
    embedded = _fieldhub(
        "hub",
        *("--cluster", "ingest", "--db", db, "--local-broker", "embedded"),
        *("--data", str(tmp_path), "--http", f"127.0.0.1:{free_port()}", "--mqtt", "127.0.0.1:0"),
    )
    assert embedded.returncode == 1
    assert "the embedded amqtt broker does not do" in embedded.stderr
    assert "Traceback" not in embedded.stderr


async def _stored_by(hub: HubProcess, api: httpx.AsyncClient) -> float:
    metrics = (await api.get(hub.url + "metrics")).text
    match = re.search(r"^fieldhub_ingest_messages_stored_total (\S+)$", metrics, re.M)
    return float(match.group(1)) if match else 0.0


@pytest.mark.slow
@pytest.mark.mosquitto
@pytest.mark.postgres
@pytest.mark.timeout(300)  # 58 s alone, 123 s beside a benchmark: three hub restarts, then checks
async def test_two_hubs_killed_in_turn_store_every_seq_once_and_ack_all(
    tmp_path: Path, mosquitto: Mosquitto, postgres: Postgres, uid: str
):
    db = await asyncio.to_thread(postgres.create_database, f"cluster_{uid}")
    hubs = [HubProcess(tmp_path, f"{n}-{uid}", mosquitto.url, db, f"g{uid}") for n in "ab"]
    await hubs[0].start()
    api = await admin_session(hubs[0])
    reporters: list[Reporter] = []
    try:
        devices = await register(api, [f"meter{n}-{uid}" for n in range(12)])
        await hubs[1].start()
        reporters = [
            Reporter(device_id, *secret, port=mosquitto.port, count=300, rate=15)
            for device_id, secret in devices.items()
        ]
        sending = asyncio.gather(*(reporter.run() for reporter in reporters))

        async def both_ingest() -> bool:
            return all([await _stored_by(hub, api) > 0 for hub in hubs])

        for _ in range(100):  # the broker shares the load: each hub stores some of it
            if await both_ingest():
                break
            await asyncio.sleep(0.1)
        assert await both_ingest()
        for victim in (hubs[1], hubs[0], hubs[1]):
            await victim.kill()
            await asyncio.sleep(1)
            await victim.start()
            await asyncio.sleep(2)
        async with asyncio.timeout(90):
            await sending
    finally:
        await api.aclose()
        await asyncio.gather(*(hub.stop() for hub in hubs))

    assert all(reporter.acked == 300 for reporter in reporters)  # every outbox is empty
    engine = create_engine(db)
    try:
        async with engine.connect() as conn:
            samples = dict(
                (
                    await conn.execute(
                        text(
                            "SELECT s.device_id, count(*) FROM samples JOIN series s"
                            " ON s.id = samples.series_id GROUP BY s.device_id"
                        )
                    )
                ).all()
            )
            events = (
                await conn.execute(
                    text(
                        "SELECT device_id, seq, count(*) FROM events WHERE seq IS NOT NULL"
                        " GROUP BY device_id, seq"
                    )
                )
            ).all()
            marks = dict((await conn.execute(text("SELECT id, acked_seq FROM devices"))).all())
            left = (await conn.execute(text("SELECT count(*) FROM received"))).scalar_one()
    finally:
        await engine.dispose()
    telemetry_seqs = sum(not is_event(seq) for seq in range(1, 301))
    assert samples == dict.fromkeys(devices, telemetry_seqs)  # one row per seq: ts = T0 + seq
    assert {count for *_, count in events} == {1}
    assert sorted((d, s) for d, s, _ in events) == sorted(
        (d, s) for d in devices for s in range(1, 301) if is_event(s)
    )
    assert marks == dict.fromkeys(devices, 300)
    assert left == 0
