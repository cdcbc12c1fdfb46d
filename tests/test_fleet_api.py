"""The fleet in the API: counts of the whole fleet in one request, and the device list paged,
filtered and sorted by the database (SQLite and PostgreSQL), scoped to the caller's sites."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator

import pytest

from fieldhub.hub.app import Hub
from tests.conftest import HubFactory, api_client
from tests.support.fleet_rows import FleetRows, open_alarm, register_fleet
from tests.test_input_bounds import assert_422_list

pytestmark = pytest.mark.asyncio
COUNT = 70


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
async def fleet_hub(
    request: pytest.FixtureRequest, make_hub: HubFactory
) -> AsyncIterator[tuple[Hub, FleetRows]]:
    """A hub with 70 devices over four sites and three groups; two of them alarmed."""
    async with make_hub(db=request.param) as hub:
        fleet = await register_fleet(hub.engine, COUNT)
        await open_alarm(hub.engine, fleet.ids[0], "hot", "major")  # berlin, online
        await open_alarm(hub.engine, fleet.ids[0], "door", "critical")
        await open_alarm(hub.engine, fleet.ids[1], "door", "warning")  # paris, online
        yield hub, fleet


async def test_the_summary_counts_the_callers_fleet(fleet_hub: tuple[Hub, FleetRows]) -> None:
    hub, fleet = fleet_hub
    every = range(COUNT)
    async with api_client(hub) as admin:
        summary = (await admin.get("/api/fleet/summary")).json()
    assert summary["total"] == COUNT
    assert summary["presence"] == Counter(fleet.presence_of(i) for i in every)
    assert summary["sites"] == Counter(fleet.site_of(i) for i in every)
    assert summary["groups"] == Counter(fleet.group_of(i) for i in every)
    assert summary["alarms"] == {"critical": 1, "warning": 1}  # a device under its worst
    assert summary["alarmed"] == 2
    absent = sum(fleet.presence_of(i) in ("stale", "offline") for i in every)
    assert summary["problems"] == absent + 2  # devices 0 and 1 are online, with alarms

    async with api_client(hub, "viewer", sites=["paris"]) as viewer:
        mine = (await viewer.get("/api/fleet/summary")).json()
    paris = [i for i in every if fleet.site_of(i) == "paris"]
    assert mine["total"] == len(paris)
    assert mine["sites"] == {"paris": len(paris)}
    assert mine["presence"] == Counter(fleet.presence_of(i) for i in paris)
    assert mine["alarms"] == {"warning": 1}


async def test_the_device_list_pages_filters_and_sorts(fleet_hub: tuple[Hub, FleetRows]) -> None:
    hub, fleet = fleet_hub
    async with api_client(hub) as api:
        seen: list[str] = []
        for offset in range(0, COUNT, 25):
            page = await api.get("/api/devices", params={"limit": 25, "offset": offset})
            assert page.headers["X-Total-Count"] == str(COUNT)
            seen += [d["id"] for d in page.json()]
        assert seen == fleet.ids  # by id, every device once

        by_name = await api.get("/api/devices", params={"sort": "name", "order": "desc"})
        names = [d["name"] for d in by_name.json()]
        assert names == sorted(names, reverse=True)

        recent = (
            await api.get("/api/devices", params={"sort": "last_seen", "order": "desc"})
        ).json()
        assert recent[0]["id"] == fleet.ids[0]  # seen last; never seen at the end
        assert recent[-1]["presence"]["last_seen"] is None

        offline = await api.get(
            "/api/devices", params={"presence": "offline", "label": "site=berlin", "limit": 3}
        )
        want = [
            d
            for i, d in enumerate(fleet.ids)
            if fleet.presence_of(i) == "offline" and fleet.site_of(i) == "berlin"
        ]
        assert offline.headers["X-Total-Count"] == str(len(want))
        assert [d["id"] for d in offline.json()] == want[:3]

        found = await api.get("/api/devices", params={"q": "CABINET 6"})  # name, any case
        assert [d["name"] for d in found.json()] == ["Cabinet 6"] + [
            f"Cabinet {n}" for n in range(60, 70)
        ]
        alarmed = await api.get("/api/devices", params={"alarmed": "true"})
        assert [d["id"] for d in alarmed.json()] == fleet.ids[:2]
        quiet = await api.get("/api/devices", params={"alarmed": "false", "limit": 1})
        assert quiet.headers["X-Total-Count"] == str(COUNT - 2)
        troubled = await api.get("/api/devices", params={"problems": "true", "limit": 1})
        summary = (await api.get("/api/fleet/summary")).json()
        assert troubled.headers["X-Total-Count"] == str(summary["problems"])

    async with api_client(hub, "viewer", sites=["oslo"]) as viewer:
        listed = await viewer.get("/api/devices", params={"limit": 5})
        assert all(d["labels"]["site"] == "oslo" for d in listed.json())
        assert listed.headers["X-Total-Count"] == str(summary["sites"]["oslo"])


async def test_a_gateways_children_are_a_filter(hub: Hub, uid: str) -> None:
    await hub.devices.create(f"gw-{uid}", labels={"site": "berlin"})
    for n in range(3):
        await hub.devices.create_child(f"c{n}-{uid}", f"gw-{uid}")
    async with api_client(hub) as api:
        children = await api.get("/api/devices", params={"parent": f"gw-{uid}"})
    assert [d["id"] for d in children.json()] == [f"c{n}-{uid}" for n in range(3)]
    assert children.headers["X-Total-Count"] == "3"


async def test_details_of_a_page_in_one_request(hub: Hub, uid: str) -> None:
    await register_fleet(hub.engine, 3, prefix=uid)
    await hub.twin.change(f"{uid}-00001", version=0, changes={"fan": "on"}, actor="test")
    async with api_client(hub, "viewer", sites=["berlin"]) as viewer:
        answer = await viewer.get(
            "/api/fleet/details", params={"device": [f"{uid}-00000", f"{uid}-00001", "missing"]}
        )
    details = answer.json()
    assert list(details) == [f"{uid}-00000"]  # 00001 is of paris; "missing" is not registered
    assert details[f"{uid}-00000"]["latest"] == {}
    assert details[f"{uid}-00000"]["twin"]["in_sync"] is True


async def test_bad_list_parameters_are_named(hub: Hub) -> None:
    async with api_client(hub) as api:
        assert_422_list(await api.get("/api/devices", params={"limit": 0}), "limit")
        assert_422_list(await api.get("/api/devices", params={"limit": 10_001}), "limit")
        assert_422_list(await api.get("/api/devices", params={"sort": "secret"}), "sort")
        assert_422_list(await api.get("/api/devices", params={"order": "up"}), "order")
        assert_422_list(await api.get("/api/devices", params={"alarmed": "maybe"}), "alarmed")
        assert_422_list(await api.get("/api/devices", params={"q": "x" * 129}), "q")
        many = {"device": [f"d{n}" for n in range(201)]}
        assert_422_list(await api.get("/api/fleet/details", params=many), "device")
        assert_422_list(await api.get("/api/fleet/details"), "device")
