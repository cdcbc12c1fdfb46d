"""The demo's commands work as the README says (issue 15): ``lock.lock`` to all locks every
cabinet that has a lock and reports the terminals ``unsupported``; ``socket.cycle`` on the
demo's socket (10 s minimum off time) ends ``succeeded``, not ``timed_out`` then late.

The demo's own fleet (real agents on simulated hardware) against a hub on the embedded broker.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fieldhub.cli.demo_fleet import demo_devices, run_demo_fleet
from fieldhub.hub.app import Hub
from tests.conftest import api_client
from tests.waiting import eventually


@contextlib.asynccontextmanager
async def demo_fleet(
    hub: Hub, count: int, data: Path, within_s: float = 10
) -> AsyncIterator[list[str]]:
    """The demo's first ``count`` devices running, each online with its action catalog."""
    task = asyncio.create_task(run_demo_fleet(hub, count, data, door_every_s=1e9))
    ids = [device.device_id for device in demo_devices(count, data)]

    async def ready() -> bool:
        for device_id in ids:
            entry = hub.directory.get(device_id)
            if entry is None or entry.actions is None:
                return False
        return True

    try:
        await eventually(ready, "the demo's agents with their actions", within_s)
        yield ids
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.slow
async def test_the_demo_locks_every_cabinet_with_a_lock_and_cycles_its_socket(
    hub: Hub, tmp_path: Path
) -> None:
    async with demo_fleet(hub, 3, tmp_path) as ids, api_client(hub) as api:
        kinds = {d.device_id: d.labels["group"] for d in demo_devices(3, tmp_path)}
        answer = await api.post("/api/commands", json={"all": True, "action": "lock.lock"})
        assert answer.status_code == 200, answer.text
        batch = answer.json()
        outcome = {c["device_id"]: c["status"] for c in batch["commands"]}
        assert outcome == {
            device_id: "unsupported" if kinds[device_id] == "terminal" else "succeeded"
            for device_id in ids
        }
        assert sorted(kinds.values()) == ["atm", "locker", "terminal"]
        assert batch["counts"] == {"succeeded": 2, "unsupported": 1}

        atm = next(device_id for device_id in ids if kinds[device_id] == "atm")
        cycled = await api.post(
            f"/api/devices/{atm}/commands", json={"action": "socket.cycle", "args": {"off_s": 5}}
        )
        assert cycled.status_code == 200, cycled.text
        command = cycled.json()
        assert (command["status"], command["late"]) == ("succeeded", False)
        assert command["timeout_s"] == 20  # the socket's 10 s, and a margin
        assert command["adjusted"]["off_s"]["requested"] == 5
        assert command["adjusted"]["off_s"]["used"] >= 10
