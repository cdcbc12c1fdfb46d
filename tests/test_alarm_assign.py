"""Assigning alarms and commenting on them: only to users who see the alarm, kept in the
history and the audit log, told to live listeners, on both databases."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from fieldhub.hub.alarms import AlarmChange
from fieldhub.hub.app import Hub
from tests.conftest import HubFactory, api_client
from tests.hub_client import add_user
from tests.test_alarms_api import door_alarm


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
async def hub(request: pytest.FixtureRequest, make_hub: HubFactory) -> AsyncIterator[Hub]:
    """A hub on each database."""
    async with make_hub(db=request.param) as running:
        yield running


async def test_an_alarm_is_assigned_commented_and_found_by_assignee(hub: Hub):
    _, alarm_id = await door_alarm(hub, "berlin")
    told: list[AlarmChange] = []
    hub.alarms.engine.on_changed(told.extend)
    colleague = await add_user(hub, "viewer", ["berlin"], name="carla")
    async with api_client(hub, "operator", sites=["berlin"]) as api:
        assert api.user is not None
        offered = (await api.get(f"/api/alarms/{alarm_id}/assignable")).json()
        assert colleague.name in offered
        assert api.user.name in offered
        given = await api.post(
            f"/api/alarms/{alarm_id}/assign", json={"assignee": "Carla", "comment": "yours"}
        )
        assert given.status_code == 200, given.text
        assert given.json()["assignee"] == "carla"
        noted = await api.post(f"/api/alarms/{alarm_id}/comment", json={"comment": "called her"})
        assert noted.status_code == 200, noted.text
        mine = await api.post(f"/api/alarms/{alarm_id}/assign", json={"assignee": api.user.name})
        assert mine.json()["assignee"] == api.user.name
        by_me = (await api.get("/api/alarms", params={"assignee": "me"})).json()["alarms"]
        assert [a["id"] for a in by_me] == [alarm_id]
        by_carla = (await api.get("/api/alarms", params={"assignee": "carla"})).json()["alarms"]
        assert by_carla == []
        detail = (await api.get(f"/api/alarms/{alarm_id}")).json()
        actor = f"user:{api.user.name}/token:{api.token_id}"
    assert [(h["kind"], h["actor"], h["comment"]) for h in detail["history"][1:]] == [
        ("assigned", actor, "to carla: yours"),
        ("commented", actor, "called her"),
        ("assigned", actor, f"to {api.user.name}"),
    ]
    assert [c.kind for c in told] == ["assigned", "commented", "assigned"]
    entries = (await hub.audit.query(target=f"alarm:{alarm_id}")).entries
    assert sorted((e.action, e.detail.get("assignee")) for e in entries) == [
        ("alarm.assigned", "carla"),
        ("alarm.assigned", api.user.name),
        ("alarm.commented", None),
    ]


async def test_an_alarm_goes_only_to_an_enabled_user_who_sees_it(hub: Hub):
    _, alarm_id = await door_alarm(hub, "berlin")
    await add_user(hub, "operator", ["paris"], name="pierre")
    gone = await add_user(hub, "operator", ["berlin"], name="gone")
    await hub.auth.accounts.update_user(gone.id, disabled=True, actor="test")
    async with api_client(hub, "operator", sites=["berlin"]) as api:
        offered = (await api.get(f"/api/alarms/{alarm_id}/assignable")).json()
        assert "pierre" not in offered
        assert "gone" not in offered
        for name in ("pierre", "gone", "nobody-such"):
            answer = await api.post(f"/api/alarms/{alarm_id}/assign", json={"assignee": name})
            assert answer.status_code == 422, answer.text
            assert [e["loc"] for e in answer.json()["detail"]] == [["body", "assignee"]]
        empty = await api.post(f"/api/alarms/{alarm_id}/comment", json={"comment": ""})
        assert [e["loc"] for e in empty.json()["detail"]] == [["body", "comment"]]
        long = await api.post(f"/api/alarms/{alarm_id}/comment", json={"comment": "x" * 1025})
        assert long.status_code == 422
        cleared = await api.post(f"/api/alarms/{alarm_id}/clear", json={})
        assert cleared.status_code == 200, cleared.text
        late = await api.post(f"/api/alarms/{alarm_id}/assign", json={"assignee": None})
        assert late.status_code == 409
        assert (
            await api.post(f"/api/alarms/{alarm_id}/comment", json={"comment": "x"})
        ).status_code == 409
    async with api_client(hub, "viewer", sites=["berlin"]) as api:
        refused = await api.post(f"/api/alarms/{alarm_id}/comment", json={"comment": "x"})
        assert refused.status_code == 403
