"""``GET /api/fleet/names``: the names of the devices a page shows (alarms, a rule's preview),
asked for by id, scoped to the caller's sites, on SQLite and PostgreSQL; bad input named."""

from __future__ import annotations

import pytest

from tests.conftest import HubFactory, api_client
from tests.support.fleet_rows import register_fleet
from tests.test_input_bounds import assert_422_list

pytestmark = pytest.mark.asyncio


@pytest.mark.parametrize(
    "db", [pytest.param("sqlite"), pytest.param("postgres", marks=pytest.mark.postgres)]
)
async def test_names_of_the_asked_devices_of_the_callers_sites(
    make_hub: HubFactory, uid: str, db: str
) -> None:
    async with make_hub(db=db) as hub:
        fleet = await register_fleet(hub.engine, 3, prefix=uid)  # berlin, paris, madrid
        unnamed = f"bare-{uid}"
        await hub.devices.create(unnamed, labels={"site": "berlin"})
        asked = {"device": [*fleet.ids, unnamed, "missing"]}
        async with api_client(hub, "viewer", sites=["berlin"]) as viewer:
            mine = (await viewer.get("/api/fleet/names", params=asked)).json()
        assert mine == {fleet.ids[0]: "Cabinet 0", unnamed: ""}  # paris, madrid: not theirs
        async with api_client(hub) as admin:
            every = (await admin.get("/api/fleet/names", params=asked)).json()
        assert every == {**{d: f"Cabinet {i}" for i, d in enumerate(fleet.ids)}, unnamed: ""}


async def test_bad_name_requests_are_named(make_hub: HubFactory) -> None:
    async with make_hub() as hub, api_client(hub) as api:
        many = {"device": [f"d{n}" for n in range(201)]}
        assert_422_list(await api.get("/api/fleet/names", params=many), "device")
        assert_422_list(await api.get("/api/fleet/names"), "device")
