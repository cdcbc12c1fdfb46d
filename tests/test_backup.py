"""Backup and restore: a snapshot taken while the hub ingests brings back the same hub.

A hub is filled over real MQTT, backed up while a device keeps publishing, restored into a new
database (SQLite, or PostgreSQL), and a second hub on it must answer every API question the
first one answered the same way, and keep ingesting.
"""

from __future__ import annotations

import asyncio
import json
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import insert

from fieldhub.clock import now_ms
from fieldhub.hub.app import Hub
from fieldhub.hub.config import HubSettings
from fieldhub.hub.ingest.pipeline import IngestSettings
from fieldhub.hub.store.backup import BackupError, backup, restore
from fieldhub.hub.store.database import create_engine, migrate, sqlite_url
from fieldhub.hub.store.schema import events as events_table
from fieldhub.protocol import Channel, Event, Sample, State, Telemetry
from tests.conftest import DeviceFactory, HubFactory, api_client
from tests.device_client import TestDevice
from tests.support.servers import Postgres

# --- a hub worth backing up ------------------------------------------------------------------


@dataclass
class Fleet:
    """Devices of the first hub and what the test knows they sent."""

    atm: TestDevice
    kiosk: TestDevice
    spare_id: str  # registered, never heard from

    @property
    def ids(self) -> list[str]:
        return sorted([self.atm.device_id, self.kiosk.device_id, self.spare_id])


async def _fill(hub: Hub, api: httpx.AsyncClient, connect_device: DeviceFactory, uid: str) -> Fleet:
    """Devices with labels and attributes, telemetry of every kind, events, state, presence."""
    atm = await connect_device(hub, "atm", site="berlin", group="atm")
    kiosk = await connect_device(hub, "kiosk", site="hamburg")
    spare_id = f"spare-{uid}"
    created = await api.post(
        "/api/devices", json={"id": spare_id, "name": "spare", "labels": {"site": "berlin"}}
    )
    assert created.status_code == 201, created.text
    renamed = await api.patch(
        f"/api/devices/{atm.device_id}", json={"name": "ATM 1", "attributes": {"floor": 2}}
    )
    assert renamed.status_code == 200, renamed.text

    ts = now_ms() - 600_000
    samples = [
        Sample(
            ts=ts + i * 1000,
            values={"temperature": 18 + i / 8, "door_open": i % 3 == 0, "mode": f"m{i % 4}"},
        )
        for i in range(100)
    ]
    atm.publish(Channel.TELEMETRY, Telemetry(seq=1, samples=samples))
    atm.publish(
        Channel.EVENT,
        Event(seq=2, ts=ts + 5, type="door.opened", severity="warning", data={"door": "front"}),
    )
    atm.publish(Channel.STATE, State(seq=3, ts=ts + 6, state={"socket": "on", "fw": "1.2"}))
    atm.publish(Channel.STATE, State(seq=4, ts=ts + 7, state={"fw": None, "lock": "locked"}))
    for seq in range(1, 6):
        kiosk.telemetry(seq, ts=ts + seq, voltage=12 + seq / 10)
    kiosk.publish(Channel.EVENT, Event(seq=6, ts=ts + 10, type="power.lost", severity="critical"))
    await atm.wait_acked(4)
    await kiosk.wait_acked(6)

    atm.online()  # presence with connected=True and a presence.online event of its own

    async def connected() -> bool:
        device = (await api.get(f"/api/devices/{atm.device_id}")).json()
        return device["presence"]["connected"] is True

    await _wait_until(connected, "atm's online status")
    return Fleet(atm, kiosk, spare_id)


async def _wait_until(
    condition: Callable[[], Awaitable[bool]], what: str, within_s: float = 10.0
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while not await condition():
        if loop.time() > deadline:
            raise TimeoutError(f"no {what} within {within_s} s")
        await asyncio.sleep(0.02)


async def _get(api: httpx.AsyncClient, path: str, **params: Any) -> Any:
    response = await api.get(path, params=params)
    assert response.status_code == 200, f"{path}: {response.text}"
    return response.json()


async def _history(api: httpx.AsyncClient, device_id: str) -> dict[str, list[list[Any]]]:
    """Every stored point of every key of ``device_id``."""
    series: dict[str, list[list[Any]]] = (
        await _get(api, f"/api/devices/{device_id}/telemetry", start=0)
    )["series"]
    return series


async def _events(api: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    page = await _get(api, "/api/events", limit=1000, **params)
    assert page["next_cursor"] is None
    events: list[dict[str, Any]] = page["events"]
    return events


async def _snapshot(api: httpx.AsyncClient, device_ids: list[str]) -> dict[str, Any]:
    """Everything the API says about ``device_ids``, their events included."""
    devices = {d["id"]: d for d in await _get(api, "/api/devices")}
    snapshot: dict[str, Any] = {"events": await _events(api, device=device_ids)}
    for device_id in device_ids:
        base = f"/api/devices/{device_id}"
        snapshot[device_id] = {
            "device": devices[device_id],
            "latest": await _get(api, f"{base}/latest"),
            "state": await _get(api, f"{base}/state"),
            "history": await _history(api, device_id),
            "by_label": [d["id"] for d in await _get(api, "/api/devices", label="site=berlin")],
        }
    return snapshot


def _check_filled(snapshot: dict[str, Any], fleet: Fleet) -> None:
    """The snapshot holds what the fleet sent: a comparison of two empty hubs proves nothing."""
    atm = snapshot[fleet.atm.device_id]
    assert atm["device"]["labels"] == {"site": "berlin", "group": "atm"}
    assert atm["device"]["attributes"] == {"floor": 2}
    assert atm["device"]["acked_seq"] == 4
    assert atm["state"]["reported"] == {"socket": "on", "lock": "locked"}
    assert sorted(atm["history"]) == ["door_open", "mode", "temperature"]
    assert all(len(points) == 100 for points in atm["history"].values())
    assert set(atm["latest"]) == {"door_open", "mode", "temperature"}
    assert len(snapshot[fleet.kiosk.device_id]["history"]["voltage"]) == 5
    types = sorted(e["type"] for e in snapshot["events"])
    assert types.count("door.opened") == 1
    assert types.count("power.lost") == 1
    assert types.count("presence.online") >= 2


# --- restore targets -------------------------------------------------------------------------


@asynccontextmanager
async def _restored_hub(
    make_hub: HubFactory, folder: Path, db_url: str | None, instance: str
) -> AsyncIterator[Hub]:
    """A hub on the restored database: in ``folder`` (SQLite), or at ``db_url``.

    It leaves presence as restored for a minute: after ``confirm_presence_s`` it shows the
    devices its broker does not confirm offline (tests/test_presence.py), and the comparison
    with the original hub is about what the backup holds.
    """
    if db_url is None:
        async with make_hub(data=folder, confirm_presence_s=60) as hub:
            yield hub
        return
    settings = HubSettings(
        data=folder,
        db=db_url,
        instance=instance,
        mqtt="127.0.0.1:0",
        http="127.0.0.1:0",
        confirm_presence_s=60,
    )
    async with Hub(settings) as hub:
        yield hub


async def _restore_into(url: str, path: Path) -> dict[str, int]:
    engine = create_engine(url)
    try:
        return (await restore(engine, path)).rows
    finally:
        await engine.dispose()


async def _keeps_ingesting(hub: Hub, api: httpx.AsyncClient, device: TestDevice) -> None:
    """A restored device resumes its sequence; new rows get fresh ids (no collision)."""
    before = await _get(api, f"/api/devices/{device.device_id}")
    old_events = await _events(api)
    seq = before["acked_seq"]
    ts = now_ms()
    device.publish(Channel.EVENT, Event(seq=seq + 1, ts=ts, type="door.closed"))
    device.telemetry(seq + 2, ts=ts + 1, humidity=55.5)  # a key never seen: a new series
    await device.wait_acked(seq + 2)
    assert not device.rejects

    events_now = await _events(api, device=device.device_id, type="door.closed")
    assert [(e["seq"], e["ts"]) for e in events_now] == [(seq + 1, ts)]
    assert events_now[0]["id"] > max(e["id"] for e in old_events)
    latest = await _get(api, f"/api/devices/{device.device_id}/latest")
    assert latest["humidity"] == {"ts": ts + 1, "value": 55.5}
    assert (await _get(api, f"/api/devices/{device.device_id}"))["acked_seq"] == seq + 2
    assert hub.stats.write_errors == 0


# --- tests -----------------------------------------------------------------------------------


async def test_backup_taken_while_ingesting_restores_the_same_hub(
    make_hub: HubFactory, connect_device: DeviceFactory, uid: str, tmp_path: Path
):
    path = tmp_path / "hub.fhb"
    # Commits follow messages closely, so that many land while the backup reads.
    fast = IngestSettings(linger_s=0.002)
    async with make_hub(ingest=fast) as first, api_client(first) as api:
        fleet = await _fill(first, api, connect_device, uid)
        await _bulk(first, connect_device)
        busy = await connect_device(first, "busy")
        busy.publish(Channel.EVENT, _tick(1))
        await busy.wait_acked(1)
        expected = await _snapshot(api, fleet.ids)
        _check_filled(expected, fleet)

        # The backup runs while the busy device keeps publishing and the hub keeps committing.
        stop = asyncio.Event()
        stored_before = first.stats.messages_stored
        async with asyncio.TaskGroup() as tasks:
            publishing = tasks.create_task(_keep_ticking(busy, stop), name="busy-device")
            summary = await backup(first.engine, path)
            stored_during = first.stats.messages_stored - stored_before
            stop.set()
        last_seq = publishing.result()
        await busy.wait_acked(last_seq)
        assert stored_during > 0, "nothing was ingested while the backup ran"
        assert await _ticks(api, busy.device_id) == list(range(1, last_seq + 1))
        assert summary.rows["devices"] == len(fleet.ids) + 2  # the bulk and the busy device

        restored = tmp_path / "restored"  # a new, empty data folder
        await asyncio.to_thread(restored.mkdir)
        rows = await _restore_into(sqlite_url(restored.resolve() / "fieldhub.db"), path)
        assert rows == summary.rows

    async with (
        _restored_hub(make_hub, restored, None, f"r{uid}") as second,
        api_client(second) as api,
    ):
        assert await _snapshot(api, fleet.ids) == expected
        bulk = await _history(api, f"bulk-{uid}")
        assert sum(len(points) for points in bulk.values()) == _BULK_ROWS
        assert len(await _events(api)) == summary.rows["events"]
        # One snapshot: the busy device's watermark (read first) and its events (read last,
        # after the long samples table) agree, whatever was committed in between.
        acked = (await _get(api, f"/api/devices/{busy.device_id}"))["acked_seq"]
        assert 1 <= acked <= last_seq
        assert await _ticks(api, busy.device_id) == list(range(1, acked + 1))

        atm = await connect_device(second, "atm", register=False)
        await _keeps_ingesting(second, api, atm)


@pytest.mark.postgres
async def test_sqlite_backup_restores_into_postgres(
    make_hub: HubFactory,
    connect_device: DeviceFactory,
    postgres: Postgres,
    uid: str,
    tmp_path: Path,
):
    path = tmp_path / "hub.fhb"
    async with make_hub() as first, api_client(first) as api:
        fleet = await _fill(first, api, connect_device, uid)
        expected = await _snapshot(api, fleet.ids)
        _check_filled(expected, fleet)
        summary = await backup(first.engine, path)
        assert first.engine.dialect.name == "sqlite"

    url = await asyncio.to_thread(postgres.create_database, f"restore_{uid}")
    assert await _restore_into(url, path) == summary.rows
    async with _restored_hub(make_hub, tmp_path / "pg-data", url, f"r{uid}") as second:
        assert second.engine.dialect.name == "postgresql"
        async with api_client(second) as api:
            assert await _snapshot(api, fleet.ids) == expected
            kiosk = await connect_device(second, "kiosk", register=False)
            await _keeps_ingesting(second, api, kiosk)
            assert await _get(api, f"/api/devices/{fleet.spare_id}")


async def test_restore_refuses_a_database_with_rows_naming_the_table(
    hub: Hub, connect_device: DeviceFactory, tmp_path: Path
):
    device = await connect_device(hub, "atm")
    device.telemetry(1, t=1)
    await device.wait_acked(1)
    path = tmp_path / "hub.fhb"
    await backup(hub.engine, path)

    # Only the event log holds a row: the error names that table, and nothing is loaded.
    engine = create_engine(sqlite_url(tmp_path / "busy.db"))
    try:
        await migrate(engine)
        row = {"device_id": "x", "ts": 1, "received_at": 1, "type": "t", "severity": "info"}
        async with engine.begin() as conn:
            await conn.execute(insert(events_table).values(message="", data={}, **row))
        with pytest.raises(BackupError, match=r"\bevents\b"):
            await restore(engine, path)
        with pytest.raises(BackupError, match=r"\bdevices\b"):
            await restore(hub.engine, path)  # the hub's own, running database
    finally:
        await engine.dispose()
    async with api_client(hub) as api:
        assert [d["id"] for d in await _get(api, "/api/devices")] == [device.device_id]


def _write_zip(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def _with_manifest(source: Path, target: Path, **changes: Any) -> None:
    """Copy the backup at ``source`` to ``target`` with changed manifest fields."""
    with zipfile.ZipFile(source) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    manifest = json.loads(members["manifest.json"])
    manifest.update(changes)
    members["manifest.json"] = json.dumps(manifest).encode()
    _write_zip(target, members)


@pytest.mark.parametrize(
    "kind", ["missing", "text", "empty-zip", "bad-manifest", "other-format", "newer-schema"]
)
async def test_restore_refuses_what_is_not_a_usable_backup(hub: Hub, tmp_path: Path, kind: str):
    good = tmp_path / "good.fhb"
    await backup(hub.engine, good)
    bad = tmp_path / "bad.fhb"
    if kind == "text":
        await asyncio.to_thread(bad.write_text, "device,temperature\natm,21.5\n")
    elif kind == "empty-zip":
        await asyncio.to_thread(_write_zip, bad, {})
    elif kind == "bad-manifest":
        await asyncio.to_thread(_write_zip, bad, {"manifest.json": b"{not json"})
    elif kind == "other-format":
        await asyncio.to_thread(_with_manifest, good, bad, format="something-else")
    elif kind == "newer-schema":
        await asyncio.to_thread(_with_manifest, good, bad, schema="9999")

    target = tmp_path / "target"
    await asyncio.to_thread(target.mkdir)
    engine = create_engine(sqlite_url(target / "fieldhub.db"))
    try:
        with pytest.raises(BackupError, match=r"backup"):
            await restore(engine, bad)
        # Refused, the database is left usable: the real backup still restores into it.
        await restore(engine, good)
    finally:
        await engine.dispose()


# --- a bulky device and a busy one, so that the backup overlaps ingest ------------------------

_BULK_MESSAGES = 8
_BULK_SAMPLES = 1000
_BULK_KEYS = 10
_BULK_ROWS = _BULK_MESSAGES * _BULK_SAMPLES * _BULK_KEYS
_BUSY_TS = now_ms() - 3_600_000  # recent: retention keeps events a year


async def _bulk(hub: Hub, connect_device: DeviceFactory) -> None:
    """Tens of thousands of rows, so that reading them takes the backup a while."""
    device = await connect_device(hub, "bulk")
    ts = now_ms() - 3_600_000
    for seq in range(1, _BULK_MESSAGES + 1):
        samples = [
            Sample(
                ts=ts + (seq * _BULK_SAMPLES + i) * 10,
                values={f"k{k}": seq * i + k / 7 for k in range(_BULK_KEYS)},
            )
            for i in range(_BULK_SAMPLES)
        ]
        device.publish(Channel.TELEMETRY, Telemetry(seq=seq, samples=samples))
    await device.wait_acked(_BULK_MESSAGES, within_s=30)


def _tick(seq: int) -> Event:
    return Event(seq=seq, ts=_BUSY_TS + seq, type="counter.tick", data={"n": seq})


async def _ticks(api: httpx.AsyncClient, device_id: str) -> list[int]:
    """The ``n`` of every tick event of ``device_id``, oldest first."""
    events = await _events(api, device=device_id, type="counter.tick")
    return [e["data"]["n"] for e in reversed(events)]


async def _keep_ticking(device: TestDevice, stop: asyncio.Event) -> int:
    """Publish a tick event every few ms until told to stop; return the last seq."""
    seq = 1  # seq 1 was sent before
    while not stop.is_set():
        seq += 1
        device.publish(Channel.EVENT, _tick(seq))
        await asyncio.sleep(0.005)
    return seq
