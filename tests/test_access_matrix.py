"""The access matrix (tests/support/access_matrix.py) for admins and callers without valid
credentials; the checks of the matrix's own rules; a group command seen from each site."""

from __future__ import annotations

import pytest

from fieldhub.hub.api import create_app
from fieldhub.hub.app import Hub
from tests.hub_client import HubClient
from tests.support.access_matrix import (
    CALLERS,
    KNOWN,
    SITE_A,
    SITE_B,
    Case,
    Route,
    Who,
    World,
    expected,
    routes_of,
    run_matrix,
)

ADMINS_AND_STRANGERS = CALLERS[:10]


async def test_every_route_declares_a_known_permission(hub: Hub):
    routes = routes_of(create_app(hub).openapi())
    undeclared = [r.name for r in routes if r.permission is None]
    unknown = [f"{r.name}: {r.permission}" for r in routes if r.permission not in KNOWN | {None}]
    assert not undeclared, f"routes without x-fieldhub-permission: {undeclared}"
    assert not unknown, f"permissions the access rules do not know: {unknown}"


# Every route for ten kinds of caller, on real objects: about 1,300 requests (the other slice is
# tests/test_access_matrix_sites.py, so two workers share the matrix).
@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_access_matrix_for_admins_and_callers_without_credentials(
    hub: Hub, capsys: pytest.CaptureFixture[str]
):
    assert [w.role for w in ADMINS_AND_STRANGERS[5:]] == ["admin"] * 5
    await run_matrix(hub, ADMINS_AND_STRANGERS, capsys)


async def test_matrix_rules_catch_a_route_that_forgets_its_check(hub: Hub):
    """The oracle is not vacuous: an unguarded route is caught by the same rules."""
    route = Route("get", "/api/devices/{device_id}", "devices:read", 200, body=False)
    viewer_b = Who("viewer B", "viewer", (SITE_B,))
    case = Case(viewer_b, "own", None)
    world = World(hub)
    await world.fill(route, case)
    assert case.visible is False
    assert expected(route, case) == 404  # a route answering 200 here would be reported
    anonymous = Case(CALLERS[0], "own", None)
    assert expected(route, anonymous) == 401


async def test_a_group_command_across_sites_shows_each_site_only_its_share(hub: Hub):
    """An admin's batch covers two devices of site A and one of B. The operator of B finds the
    batch id on its own device's command; reading the batch, every field is about B's device
    alone: the target list, the size, the counts and the results."""
    world = World(hub)
    a1, a2, b = await world.device(SITE_A), await world.device(SITE_A), await world.device(SITE_B)
    batch, commands = await hub.commands.submit(
        [a1, a2, b],
        "socket.set",
        {"on": True},
        timeout_s=1,
        ttl_s=60,
        actor="user:admin",
        target={"devices": [a1, a2, b]},
    )
    assert batch is not None
    async with HubClient(hub, "operator", sites=[SITE_B]) as operator_b:
        own = (await operator_b.get(f"/api/devices/{b}/commands")).json()
        assert [c["batch_id"] for c in own] == [batch.id]
        answer = await operator_b.get(f"/api/command-batches/{batch.id}")
        assert answer.status_code == 200
        seen = answer.json()
        assert seen["target"] == {"devices": [b]}
        assert seen["size"] == 1
        assert sum(seen["counts"].values()) == 1
        assert [c["device_id"] for c in seen["commands"]] == [b]
        assert a1 not in answer.text
        assert a2 not in answer.text
    async with HubClient(hub, "admin") as admin:  # who sees every device sees the whole batch
        whole = (await admin.get(f"/api/command-batches/{batch.id}")).json()
        assert whole["target"] == {"devices": [a1, a2, b]}
        assert whole["size"] == 3
        assert sorted(c["id"] for c in whole["commands"]) == sorted(c.id for c in commands)
