"""A full disk under the hub's SQLite store: health says why the hub is degraded, reads and
requests with API tokens keep answering, writes people ask for are refused with 503 and why,
the log says "disk full" once instead of a traceback per commit, nothing is acknowledged that
is not stored, and once space is freed the held writes (data and presence changes) go in
and are acknowledged within seconds, without the devices having to resend.

The disk is real: a small tmpfs mounted for the test, filled with a file. PostgreSQL's full
disk (SQLSTATE 53100) takes the same path through ``store/health.py`` but is not staged here:
it would need a tablespace on a small file system owned by the server's user.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy.exc import IntegrityError, OperationalError

from fieldhub.hub.store.health import SETTLE_S, StorageHealth, storage_problem
from tests.conftest import DeviceFactory, HubFactory, api_client
from tests.support.disk import SmallDisk, small_disk
from tests.waiting import eventually

LAST = 400
"""The meter's last seq while the disk is full: 399 reports of 5 KB, 2 MB, far more than the
store's files have room for (SQLite's write-ahead log is reused after a checkpoint, so a few
hundred kilobytes could still commit without growing any file)."""


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[SmallDisk]:
    with small_disk(tmp_path) as mounted:
        yield mounted


async def _health(client: httpx.AsyncClient) -> dict[str, object]:
    response = await client.get("/api/health")
    assert response.status_code == 200, response.text  # alive, even when degraded
    body: dict[str, object] = response.json()
    return body


@pytest.mark.slow  # about 6 s: health says ok again only once writes succeeded for SETTLE_S
async def test_a_full_disk_degrades_the_hub_without_blinding_it_and_writes_resume_once_freed(
    make_hub: HubFactory,
    disk: SmallDisk,
    connect_device: DeviceFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    async with make_hub(data=disk.path / "data") as hub:
        meter = await connect_device(hub, "meter")
        door = await connect_device(hub, "door")
        door.online()
        meter.telemetry(1, t=1)
        await meter.wait_acked(1)
        admin = api_client(hub)  # a user with an API token, never used yet: its use is due
        anon = api_client(hub, None)
        async with admin, anon:
            await eventually(lambda: _state(admin, door.device_id, "online"), "the door online", 5)
            disk.fill()
            try:
                caplog.clear()

                # More than fits into what the store's files hold: these commits need the disk.
                note = "x" * 250
                for seq in range(2, LAST + 1):
                    meter.telemetry(seq, **{f"k{n}": note for n in range(20)})
                health = await eventually(lambda: _degraded(admin), "health to say degraded", 10)
                acked_when_full = meter.acked  # what fitted before the disk ran out
                assert acked_when_full < LAST
                reasons = health["reasons"]
                assert isinstance(reasons, list)
                assert any(r.startswith("storage: disk full (SQLITE_FULL) since ") for r in reasons)
                assert await _health(anon) == {"status": "degraded"}  # strangers learn no more

                door.vanish()  # stopped while the disk is full: its last will, a presence change
                for _ in range(10):  # reads answer, with the token whose last use is due
                    assert (await admin.get("/api/health")).status_code == 200
                    assert (await admin.get("/api/devices")).status_code == 200
                    assert (await admin.get(f"/api/devices/{meter.device_id}/latest")).json()["t"]
                    assert (await admin.get("/api/events")).status_code == 200
                await eventually(lambda: hub.storage.retry_in_s() >= 0.4, "failed retries", 10)
                await hub.auth.token_use.flush()  # the token's use, due: written meanwhile
                big = {"attributes": {"manual": "x" * 500_000}}  # more than the files have
                refused = await admin.patch(f"/api/devices/{door.device_id}", json=big)
                assert refused.status_code == 503, refused.text
                assert "disk full" in refused.json()["detail"]
                assert refused.headers["retry-after"]
                assert meter.acked == acked_when_full  # nothing acknowledged that is not stored

                full = [r for r in caplog.records if "disk full" in r.getMessage()]
                assert len(full) == 1, [r.getMessage() for r in full]  # once, not per commit
                assert sum(r.exc_info is not None for r in caplog.records) <= 1  # one traceback
            finally:  # a failure above must not leave the hub to stop on a full disk
                disk.free()
            await meter.wait_acked(LAST, within_s=10)  # held, retried, acked: nobody resent
            await eventually(lambda: _ok(admin), "health to say ok", SETTLE_S + 5)
            door_now = await eventually(
                lambda: _state(admin, door.device_id, "offline"), "the door offline", 5
            )
            assert door_now["reason"]
            await hub.auth.token_use.flush()
            tokens = (await admin.get("/api/tokens")).json()
            assert [t["last_used_at"] is not None for t in tokens] == [True]
        assert any("writes succeed again" in r.getMessage() for r in caplog.records)


async def _degraded(client: httpx.AsyncClient) -> dict[str, object] | None:
    health = await _health(client)
    return health if health["status"] == "degraded" else None


async def _ok(client: httpx.AsyncClient) -> bool:
    return (await _health(client))["status"] == "ok"


async def _state(client: httpx.AsyncClient, device_id: str, state: str) -> dict[str, object] | None:
    response = await client.get(f"/api/devices/{device_id}")
    assert response.status_code == 200, response.text
    presence: dict[str, object] = response.json()["presence"]
    return presence if presence["state"] == state else None


def test_storage_problems_are_told_apart_from_faults_of_a_write() -> None:
    assert storage_problem(OSError(errno.ENOSPC, "No space left on device")) == "disk full (ENOSPC)"
    pg_full = asyncpg.exceptions.DiskFullError("could not extend file")
    wrapped = OperationalError("INSERT ...", {}, pg_full)  # as SQLAlchemy raises it
    assert storage_problem(wrapped) == "disk full (PostgreSQL 53100)"
    unique = asyncpg.exceptions.UniqueViolationError("duplicate key")
    assert storage_problem(IntegrityError("INSERT ...", {}, unique)) is None
    assert storage_problem(ValueError("a bad value")) is None


def test_a_write_that_fits_between_failures_does_not_end_the_outage() -> None:
    # A full disk still takes a small write (into space the WAL has) but not a batch of data.
    full = OSError(errno.ENOSPC, "No space left on device")
    health = StorageHealth()
    health.failed(full)
    health.succeeded()  # a command's state
    assert health.failed(full) == "disk full (ENOSPC)"  # the held batch, again
    outage = health.outage
    assert outage is not None
    assert outage.failures == 2  # one outage, not a second one (and its traceback)

    settled = StorageHealth(settle_s=0)
    settled.failed(full)
    settled.succeeded()
    assert settled.outage is None
