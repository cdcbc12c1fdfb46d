"""Commands that fit their actions (issue 15): a group command goes to every device that offers
the action and reports the others ``unsupported``; it can be paced and aborted; a power cycle
is waited for as long as it takes, and an off time the device lengthened is reported.

Real agents (mock pins) on the embedded broker, the hub on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from fieldhub.hub.app import Hub
from fieldhub.hub.commands.batches import Pace
from fieldhub.hub.commands.check import Fit
from tests.conftest import HubFactory, api_client
from tests.fleet import LOCK_PIN, Fleet, failing

DATABASES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.mark.parametrize("db", DATABASES)
async def test_lock_all_locks_every_device_with_a_lock_and_reports_the_others_unsupported(
    db: str, make_hub: HubFactory, fleet_of: Callable[[Hub], Fleet]
) -> None:
    async with make_hub(db=db) as hub:
        fleet = fleet_of(hub)
        with_lock = [await fleet.add(f"cab{n}") for n in range(2)]
        without = await fleet.add("plain")
        async with (
            fleet.agent(with_lock[0]),
            fleet.agent(with_lock[1]),
            fleet.agent(without, lock=False),
            api_client(hub) as api,
        ):
            for device in (*with_lock, without):
                await fleet.online(device)
            for device in with_lock:  # unlocked first, so that locking shows
                answer = await api.post(
                    f"/api/devices/{device}/commands", json={"action": "lock.unlock"}
                )
                assert answer.json()["status"] == "succeeded"

            answer = await api.post("/api/commands", json={"all": True, "action": "lock.lock"})
            assert answer.status_code == 200, answer.text
            batch = answer.json()
            mine = {c["device_id"]: c for c in batch["commands"] if c["device_id"] in fleet.issued}
            assert {d: c["status"] for d, c in mine.items()} == {
                with_lock[0]: "succeeded",
                with_lock[1]: "succeeded",
                without: "unsupported",
            }
            assert (
                "has no action 'lock.lock'; it offers: socket.cycle, socket.set"
                in (mine[without]["error"])
            )
            assert mine[without]["sent_at"] is None
            assert batch["counts"]["unsupported"] >= 1
            assert batch["finished"]
            assert all(fleet.level(device, LOCK_PIN) == 0 for device in with_lock)  # locked
            assert hub.commands.counts["unsupported"] == 1

            # What the batch shows later comes from the store as well.
            await hub.commands.flush()
            again = (await api.get(f"/api/command-batches/{batch['id']}")).json()
            assert {c["device_id"]: c["status"] for c in again["commands"]} == {
                d: c["status"] for d, c in mine.items()
            }

            # When no device of the group offers it, nothing is made: 422 with the reasons.
            none = await api.post(
                "/api/commands", json={"devices": [without], "action": "lock.lock"}
            )
            assert none.status_code == 422
            assert "has no action 'lock.lock'" in none.text
            assert hub.commands.counts["refused"] == 1
            metrics = (await api.get("/metrics")).text  # what an operator scrapes
            assert 'fieldhub_commands_total{outcome="unsupported"} 1.0' in metrics
            assert 'fieldhub_commands_total{outcome="refused"} 1.0' in metrics


async def test_a_paced_group_command_sends_one_device_after_the_other(
    hub: Hub, fleet_of: Callable[[Hub], Fleet]
) -> None:
    fleet = fleet_of(hub)
    devices = [await fleet.add(f"p{n}") for n in range(3)]
    async with (
        fleet.agent(devices[0]),
        fleet.agent(devices[1]),
        fleet.agent(devices[2]),
        api_client(hub) as api,
    ):
        for device in devices:
            await fleet.online(device)
        answer = await api.post(
            "/api/commands",
            json={"devices": devices, "action": "lock.unlock", "per_second": 2},
        )
        assert answer.status_code == 200, answer.text
        batch = answer.json()
        assert batch["per_second"] == 2
        assert batch["counts"] == {"succeeded": 3}
        commands = sorted(batch["commands"], key=lambda c: c["not_before"])
        slots = [c["not_before"] - batch["created_at"] for c in commands]
        assert slots == [0, 500, 1000]
        assert all(c["sent_at"] >= c["not_before"] for c in commands)  # none before its time


async def test_a_group_command_is_aborted_when_too_many_fail(
    hub: Hub, fleet_of: Callable[[Hub], Fleet]
) -> None:
    """Paced at one device in 5 s, the first failure (ratio 0) aborts the rest unsent."""
    fleet = fleet_of(hub)
    devices = [await fleet.add(f"f{n}") for n in range(3)]
    async with (
        fleet.agent(devices[0], actions=[failing()]) as first,
        fleet.agent(devices[1], actions=[failing()]) as second,
        fleet.agent(devices[2], actions=[failing()]) as third,
        api_client(hub) as api,
    ):
        for device in devices:
            await fleet.online(device)
        answer = await api.post(
            "/api/commands",
            json={
                "devices": devices,
                "action": "site.fail",
                "per_second": 0.2,
                "abort_failure_ratio": 0,
            },
        )
        assert answer.status_code == 200, answer.text
        batch = answer.json()
        assert batch["counts"] == {"failed": 1, "aborted": 2}
        by_device = {c["device_id"]: c for c in batch["commands"]}
        assert by_device[devices[0]]["status"] == "failed"
        for device in devices[1:]:
            assert by_device[device]["sent_at"] is None
            assert "abort_failure_ratio" in by_device[device]["error"]
        received = [a.commands.stats.received for a in (first, second, third) if a.commands]
        assert received == [1, 0, 0]
    assert hub.commands.counts["aborted"] == 2


@pytest.mark.slow
async def test_a_power_cycle_longer_than_ten_seconds_ends_succeeded_not_timed_out(
    hub: Hub, fleet_of: Callable[[Hub], Fleet]
) -> None:
    """The demo's complaint: a 10-s cycle read `timed_out`, then "late succeeded", because
    the default timeout was 10 s too. Now the action's duration sets it."""
    fleet = fleet_of(hub)
    device = await fleet.add("cycler")
    async with fleet.agent(device, min_off_s=11), api_client(hub) as api:
        await fleet.online(device)
        answer = await api.post(
            f"/api/devices/{device}/commands", json={"action": "socket.cycle", "args": {"off_s": 2}}
        )
        assert answer.status_code == 200, answer.text
        command = answer.json()
        assert command["timeout_s"] == 21.5  # 11 s x 1.5 + 5 s
        assert (command["status"], command["late"]) == ("succeeded", False)
        # The device lengthened the off time to its minimum, and says so.
        assert command["adjusted"]["off_s"]["requested"] == 2
        assert command["adjusted"]["off_s"]["used"] >= 11
        assert "min_off_s" in command["adjusted"]["off_s"]["why"]

        # A timeout shorter than the cycle is refused before anything is sent.
        short = await api.post(
            f"/api/devices/{device}/commands",
            json={"action": "socket.cycle", "timeout_s": 5},
        )
        assert short.status_code == 422
        assert short.json()["detail"][0]["loc"] == ["body", "timeout_s"]
        assert "takes 11 s" in short.text


async def test_pacing_holds_across_a_hub_restart(
    make_hub: HubFactory, fleet_of: Callable[[Hub], Fleet], tmp_path: Path
) -> None:
    """The pace is stored with each command: a hub that restarts sends the rest on time.
    (SQLite: the data folder is what survives the restart here.)"""
    data = tmp_path / "hub"
    async with make_hub(data=data) as hub:
        fleet = fleet_of(hub)
        devices = [await fleet.add(f"r{n}") for n in range(2)]
        batch, _ = await hub.commands.submit_group(
            [Fit(device, {}, 5) for device in devices],
            "lock.unlock",
            {},
            target={"devices": devices},
            ttl_s=60,
            actor="test",
            pace=Pace(per_second=0.1),
        )
    async with make_hub(data=data) as hub:
        fleet.hub = hub
        async with fleet.agent(devices[0], hub=hub), fleet.agent(devices[1], hub=hub):
            _, commands = await hub.commands.batch(batch.id, wait_s=30)
        assert [c.status for c in commands] == ["succeeded", "succeeded"]
        first, second = sorted(commands, key=lambda c: c.not_before or 0)
        assert (first.not_before, second.not_before) == (
            batch.created_at,
            batch.created_at + 10_000,
        )
        assert second.sent_at is not None
        assert second.sent_at >= second.not_before
