"""Several hubs on one database: a rollout is driven by the one hub that holds its lease
(``hub/rollouts/lease.py``), on SQLite and PostgreSQL.

The other hub plays its part through the lease's own functions on the same database: it
cannot take a live hub's rollout, takes it once the lease ran out, and the hub that lost it
stops driving it (an operator's action there is refused, naming why) until the lease comes
back to it.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from fieldhub.bundles import SigningKey, make_bundle
from fieldhub.clock import now_ms
from fieldhub.hub.app import Hub
from fieldhub.hub.config import HubSettings
from fieldhub.hub.rollouts import lease
from fieldhub.hub.rollouts.plan import Plan
from tests.conftest import HubFactory, api_client
from tests.support.bundle_devices import api_download, start_fleet
from tests.test_rollouts import DATABASES, ready
from tests.waiting import eventually

OTHER = "other-hub"


async def _in_db(hub: Hub, job: partial[object]) -> object:
    """Run one of ``lease``'s functions on the hub's database, as another hub would."""
    async with hub.engine.begin() as conn:
        return await conn.run_sync(job)


@pytest.mark.slow  # a held rollout, taken over and given back: ~6 s
@pytest.mark.parametrize("db", DATABASES)
async def test_a_rollout_is_driven_only_by_the_hub_holding_its_lease(
    db: str, make_hub: HubFactory, uid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lease, "RENEW_MS", 200)  # the hub renews and looks often, for the test
    async with make_hub(db=db) as hub, api_client(hub) as api, api_client(hub, None) as anon:
        key = SigningKey.generate()
        await hub.bundles.add_key(key.public.to_text(), "release", actor="test", source="")
        data = make_bundle({"a.py": b"x = 1\n"}, key, name="leased", version="1.0.0")
        bundle, _new = await hub.bundles.upload(data, actor="test", source="")
        names = [f"lease{n}-{uid}" for n in range(2)]
        devices = await start_fleet(hub, names, lambda _n: "hold", api_download(anon))
        try:
            await ready(hub, devices)
            run = await hub.rollouts.create(
                bundle,
                Plan(target={"devices": names}),
                [(n, {}) for n in names],
                actor="t",
                source="",
            )
            rollout_id = run.record.id
            now = run.record.created_at

            claim = partial(lease.claim, instance=OTHER, lease_ms=lease.LEASE_MS)
            assert await _in_db(hub, partial(claim, now=now)) == []  # the creator's, and alive
            later = now_ms() + lease.LEASE_MS + 10_000  # as if the hub had stopped renewing
            assert await _in_db(hub, partial(claim, now=later)) == [rollout_id]

            async def let_go() -> bool:
                return not hub.rollouts.drives(rollout_id)

            await eventually(let_go, "the hub that lost the lease stops driving it")
            answer = await api.post(f"/api/rollouts/{rollout_id}/pause")
            assert answer.status_code == 409
            assert "driven by another hub process" in answer.text

            await _in_db(hub, partial(lease.release, instance=OTHER))  # the other one stops

            async def paused() -> bool:
                answer = await api.post(f"/api/rollouts/{rollout_id}/pause")
                return answer.status_code == 200 and answer.json()["status"] == "paused"

            await eventually(paused, "the hub takes the released rollout up again")
            for device in devices:
                device.release()
        finally:
            await asyncio.gather(*(device.close() for device in devices))


@pytest.mark.postgres
@pytest.mark.slow  # two hubs on one PostgreSQL, one after the other: ~8 s
async def test_a_second_hub_leaves_a_live_hubs_rollout_and_takes_it_up_when_it_stops(
    postgres: Any, tmp_path: Path, uid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lease, "RENEW_MS", 200)
    url = await asyncio.to_thread(postgres.create_database, f"lease_{uid}")

    def settings(name: str) -> HubSettings:
        return HubSettings(
            data=tmp_path / name, instance=f"{name}{uid}", mqtt="127.0.0.1:0",
            http="127.0.0.1:0", db=url,
        )  # fmt: skip

    first_running = AsyncExitStack()
    first = await first_running.enter_async_context(Hub(settings("a")))
    try:
        key = SigningKey.generate()
        await first.bundles.add_key(key.public.to_text(), "release", actor="test", source="")
        data = make_bundle({"a.py": b"x = 1\n"}, key, name="leased", version="1.0.0")
        bundle, _new = await first.bundles.upload(data, actor="test", source="")
        names = [f"two{n}-{uid}" for n in range(2)]
        async with api_client(first, None) as anon:
            devices = await start_fleet(first, names, lambda _n: "hold", api_download(anon))
            try:
                await ready(first, devices)
                run = await first.rollouts.create(
                    bundle, Plan(target={"devices": names}), [(n, {}) for n in names],
                    actor="t", source="",
                )  # fmt: skip
            finally:
                await asyncio.gather(*(device.close() for device in devices))
        async with Hub(settings("b")) as second, api_client(second) as api:
            path = f"/api/rollouts/{run.record.id}/pause"
            answer = await api.post(path)
            assert answer.status_code == 409, answer.text  # the first hub drives it
            assert "driven by another hub process" in answer.text
            await first_running.aclose()  # a clean stop gives the lease back

            async def paused() -> bool:
                answer = await api.post(path)
                return answer.status_code == 200 and answer.json()["status"] == "paused"

            await eventually(paused, "the second hub takes the rollout up")
    finally:
        await first_running.aclose()
