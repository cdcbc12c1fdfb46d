"""Rollouts (issue 16, hub side): a signed bundle reaches devices in waves, each device followed
to its end; a failing canary aborts the rollout and rolls back what it updated; a restarted
hub resumes; a silent device fails at its deadline.

The devices speak the bundle contract over real MQTT connections
(``tests/support/bundle_devices.py``) and download through the hub's API with their command's
token; the hub runs on the embedded broker, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from fieldhub.bundles import SigningKey, make_bundle
from fieldhub.hub.app import Hub
from fieldhub.hub.rollouts.plan import Plan
from tests.conftest import HubFactory, api_client
from tests.hub_client import HubClient
from tests.support.bundle_devices import BundleDevice, api_download, start_fleet
from tests.waiting import eventually

DATABASES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
PAYLOAD = {"actions/hello.py": b"def run(args):\n    return {'hello': 'world'}\n"}


def signed(key: SigningKey, version: str = "1.1.0", name: str = "site-actions") -> bytes:
    """A bundle file signed by ``key``."""
    return make_bundle(PAYLOAD, key, name=name, version=version)


async def uploaded(api: HubClient, key: SigningKey, data: bytes) -> dict[str, Any]:
    """Register ``key`` (if it is not yet) and upload ``data``; the bundle as the API shows it."""
    await api.post("/api/bundle-keys", json={"name": "release", "public_key": key.public.to_text()})
    answer = await api.post("/api/bundles", content=data)
    assert answer.status_code in (200, 201), answer.text
    return dict(answer.json())


async def ready(hub: Hub, devices: list[BundleDevice]) -> None:
    """Wait until the hub knows every device's catalog (its command check needs it)."""

    def known() -> bool:
        return all(
            (entry := hub.directory.get(d.device_id)) is not None and entry.actions for d in devices
        )

    await eventually(known, "the devices' catalogs")


async def rollout(api: HubClient, rollout_id: str) -> dict[str, Any]:
    answer = await api.get(f"/api/rollouts/{rollout_id}")
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


async def settled(
    api: HubClient, rollout_id: str, status: str, within_s: float = 30
) -> dict[str, Any]:
    """The rollout once it reads ``status``."""

    async def check() -> dict[str, Any] | None:
        shown = await rollout(api, rollout_id)
        return shown if shown["status"] == status else None

    try:
        return dict(await eventually(check, f"rollout {rollout_id} {status}", within_s))
    except BaseException:
        print("the rollout when time ran out:", await rollout(api, rollout_id))
        raise


@pytest.mark.parametrize("db", DATABASES)
async def test_a_rollout_goes_in_waves_waits_for_approval_and_completes(
    db: str, make_hub: HubFactory, uid: str
) -> None:
    async with make_hub(db=db) as hub, api_client(hub) as api, api_client(hub, None) as anonymous:
        key = SigningKey.generate()
        bundle = await uploaded(api, key, signed(key))
        names = [f"w{n}-{uid}" for n in range(4)]
        devices = await start_fleet(hub, names, download=api_download(anonymous), site="berlin")
        try:
            await ready(hub, devices)
            # The fleet page's filter: who would this bundle update?
            behind = {"bundle": "site-actions", "below": "1.1.0", "label": "site=berlin"}
            listed = (await api.get("/api/devices", params=behind)).json()
            assert sorted(d["id"] for d in listed) == names
            assert listed[0]["software"] == {"agent_version": "1.0.0", "bundles": {}}
            answer = await api.post(
                "/api/rollouts",
                json={
                    "bundle": bundle["id"],
                    "target": {"labels": {"site": "berlin"}},
                    "canary": 1,
                    "waves": [100],
                    "approval": True,
                },
            )
            assert answer.status_code == 201, answer.text
            started = answer.json()
            assert started["waves"] == 2
            assert [d["wave"] for d in started["devices"]] == [0, 1, 1, 1]

            waiting = await settled(api, started["id"], "waiting")
            assert waiting["counts"] == {"confirmed": 1, "pending": 3}
            assert "approval" in waiting["reason"]
            canary = next(d for d in devices if d.commands)
            assert canary.bundles == {"site-actions": "1.1.0"}
            assert canary.downloaded == 1  # through the token in its command
            assert sum(bool(d.commands) for d in devices) == 1  # no one else yet

            approved = await api.post(f"/api/rollouts/{started['id']}/approve")
            assert approved.status_code == 200, approved.text
            done = await settled(api, started["id"], "completed")
            assert done["counts"] == {"confirmed": 4}
            assert all(d.bundles == {"site-actions": "1.1.0"} for d in devices)
            again = await api.post(f"/api/rollouts/{started['id']}/approve")
            assert again.status_code == 409

            # Every step is audited, who did it and what it changed.
            audit = (await api.get("/api/audit", params={"target": started["id"]})).json()
            steps = [entry["action"] for entry in audit["entries"]]
            for step in (
                "rollout.created",
                "rollout.waiting",
                "rollout.wave.1",
                "rollout.completed",
            ):
                assert step in steps

            # Inventory: each device says what it runs; none is behind any more.
            await hub.ingest.flush()
            shown = (await api.get(f"/api/devices/{names[0]}")).json()
            assert shown["software"]["bundles"] == {"site-actions": "1.1.0"}
            assert (await api.get("/api/devices", params=behind)).json() == []
            running = {"bundle": "site-actions", "label": "site=berlin"}
            assert len((await api.get("/api/devices", params=running)).json()) == 4

            # Devices that run this version already need nothing: a second rollout is refused.
            none = await api.post(
                "/api/rollouts", json={"bundle": bundle["id"], "target": {"all": True}}
            )
            assert none.status_code == 422
            assert none.json()["detail"][0]["loc"] == ["body", "target"]
        finally:
            await asyncio.gather(*(device.close() for device in devices))


@pytest.mark.slow
async def test_a_failing_canary_aborts_at_the_threshold_and_rolls_back(hub: Hub, uid: str) -> None:
    """100 devices; the canary of 10 holds 4 whose health check fails (they roll themselves
    back). 4 failures of 10 cannot reach abort_below = 0.7: the rollout aborts, the 6 canary
    devices that confirmed are rolled back, and the other 90 are never sent anything."""
    async with api_client(hub) as api, api_client(hub, None) as anonymous:
        key = SigningKey.generate()
        bundle = await uploaded(api, key, signed(key, "2.0.0"))
        names = [f"c{n:03d}-{uid}" for n in range(100)]
        broken = {names[n] for n in (1, 3, 5, 7)}  # all in the canary (the first 10 by id)
        devices = await start_fleet(
            hub,
            names,
            lambda n: "roll_back" if names[n] in broken else "confirm",
            api_download(anonymous),
            site="paris",
        )
        try:
            await ready(hub, devices)
            answer = await api.post(
                "/api/rollouts",
                json={
                    "bundle": bundle["id"],
                    "target": {"labels": {"site": "paris"}},
                    "canary": 10,
                    "waves": [50, 100],
                    "promote_at": 0.9,
                    "abort_below": 0.7,
                    "retries": 0,
                },
            )
            assert answer.status_code == 201, answer.text
            done = await settled(api, answer.json()["id"], "aborted", within_s=60)
            assert done["counts"] == {"rolled_back": 6, "failed": 4, "skipped": 90}
            assert "below abort_below" in done["reason"]
            by_id = {d["device_id"]: d for d in done["devices"]}
            assert all("health_failed" in by_id[name]["reason"] for name in broken)
            assert all(not d.commands for d in devices[10:])  # never sent anything
            assert all(d.bundles == {} for d in devices)  # the canary is back where it was
        finally:
            await asyncio.gather(*(device.close() for device in devices))


async def test_a_device_that_goes_silent_fails_at_its_deadline_and_is_retried(
    hub: Hub, uid: str
) -> None:
    """A device that takes the install and is never heard of again is not "in progress"
    forever: at its deadline it fails, is retried once (the plan's retries), then fails."""
    async with api_client(hub) as api:
        key = SigningKey.generate()
        bundle = await uploaded(api, key, signed(key))
        [device] = await start_fleet(hub, [f"s-{uid}"], lambda _n: "silent")
        try:
            await ready(hub, [device])
            run = await hub.rollouts.create(
                await hub.bundles.get(bundle["id"]),
                Plan(target={"devices": [device.device_id]}, canary=0, deadline_s=1, retries=1),
                [(device.device_id, {})],
                actor="test",
                source="",
            )
            done = await settled(api, run.record.id, "aborted")
            [shown] = done["devices"]
            assert shown["state"] == "failed"
            assert shown["attempts"] == 2
            assert "deadline passed" in shown["reason"]
            assert len(device.commands) == 2
        finally:
            await device.close()


async def test_a_restarted_hub_resumes_the_rollout_where_it_was(
    make_hub: HubFactory, tmp_path: Path, uid: str
) -> None:
    """The canary is installing when the hub stops; the new hub hears its confirmation,
    promotes, and sends the next wave."""
    data = tmp_path / "restart"
    key = SigningKey.generate()
    names = [f"r{n}-{uid}" for n in range(2)]
    async with make_hub(data=data) as hub, api_client(hub) as api:
        bundle = await uploaded(api, key, signed(key))
        devices = await start_fleet(hub, names, lambda n: "hold" if n == 0 else "confirm")
        await ready(hub, devices)
        answer = await api.post(
            "/api/rollouts",
            json={"bundle": bundle["id"], "target": {"devices": names}, "canary": 1},
        )
        rollout_id = answer.json()["id"]

        async def installing() -> bool:
            shown = await rollout(api, rollout_id)
            return bool(shown["counts"] == {"installing": 1, "pending": 1})

        await eventually(installing, "the canary installing")
    async with make_hub(data=data) as hub, api_client(hub) as api:
        shown = await rollout(api, rollout_id)
        assert shown["status"] == "running"
        assert shown["counts"] == {"installing": 1, "pending": 1}
        try:
            for device in devices:
                await device.move_to(hub)
            devices[0].release()  # the install under way ends: reported to the new hub
            done = await settled(api, rollout_id, "completed")
            assert done["counts"] == {"confirmed": 2}
            assert [len(device.commands) for device in devices] == [1, 1]
        finally:
            await asyncio.gather(*(device.close() for device in devices))


async def test_a_wave_between_the_thresholds_pauses_and_an_operator_decides(
    hub: Hub, uid: str
) -> None:
    """Half the canary fails: not bad enough to abort (abort_below 0.5), not good enough to go
    on (promote_at 1.0): the rollout pauses; resuming accepts the wave. A second rollout that
    an operator aborts rolls its updated canary back."""
    async with api_client(hub) as api, api_client(hub, None) as anonymous:
        key = SigningKey.generate()
        bundle = await uploaded(api, key, signed(key))
        names = [f"p{n}-{uid}" for n in range(3)]
        devices = await start_fleet(
            hub,
            names,
            lambda n: "roll_back" if n == 1 else "confirm",
            api_download(anonymous),
        )
        try:
            await ready(hub, devices)
            body = {"bundle": bundle["id"], "target": {"devices": names}, "canary": 2, "retries": 0}
            started = (await api.post("/api/rollouts", json=body)).json()
            paused = await settled(api, started["id"], "paused")
            assert "1 of 2 confirmed, 1 failed (below promote_at)" in paused["reason"]
            assert not devices[2].commands  # the next wave waits for the decision
            resumed = await api.post(f"/api/rollouts/{started['id']}/resume")
            assert resumed.status_code == 200, resumed.text
            done = await settled(api, started["id"], "completed")
            assert done["counts"] == {"confirmed": 2, "failed": 1}

            # Version 1.2.0 to those below it (all three: the failed one runs none), waiting for
            # approval after the canary; the operator aborts instead.
            newer = await uploaded(api, key, signed(key, "1.2.0"))
            await hub.ingest.flush()
            body = {
                "bundle": newer["id"],
                "target": {"devices": names, "below": "1.2.0"},
                "approval": True,
            }
            second = (await api.post("/api/rollouts", json=body)).json()
            assert sum(second["counts"].values()) == 3
            await settled(api, second["id"], "waiting")
            aborted = await api.post(f"/api/rollouts/{second['id']}/abort", json={"rollback": True})
            assert aborted.status_code == 200, aborted.text
            done = await settled(api, second["id"], "aborted")
            assert done["counts"] == {"rolled_back": 1, "skipped": 2}
            canary = next(d for d in devices if d.device_id == done["devices"][0]["device_id"])
            assert canary.bundles["site-actions"] == "1.1.0"  # back to what it ran before
        finally:
            await asyncio.gather(*(device.close() for device in devices))
