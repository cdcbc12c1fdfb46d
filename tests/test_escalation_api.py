"""``/api/escalation-policies``: admins write, alarm readers read; a bad policy or a rule naming
a policy that does not exist is a 422 naming the field; a policy in use cannot be deleted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fieldhub.hub.api.escalation_models import PolicyIn
from fieldhub.hub.app import Hub
from tests.conftest import HubFactory, api_client
from tests.test_alarms_cli import fieldhub

DOOR = {"kind": "event", "match": "door.*"}


async def _channel(hub: Hub) -> int:
    channel = await hub.notifications.create_channel(
        "on call", "webhook", {"url": "http://127.0.0.1:9/hook"}, actor="test"
    )
    return channel.id


def _policy(channel_id: int, **changes: Any) -> dict[str, Any]:
    return {
        "id": "night",
        "name": "Night shift",
        "steps": [{"after_s": 600, "channels": [channel_id]}],
        "repeat_every_s": 3600,
        "repeat_limit": 3,
        **changes,
    }


async def test_an_admin_keeps_policies_and_alarm_readers_read_them(hub: Hub) -> None:
    channel_id = await _channel(hub)
    async with api_client(hub) as admin, api_client(hub, "viewer", sites=["berlin"]) as viewer:
        created = await admin.post("/api/escalation-policies", json=_policy(channel_id))
        assert created.status_code == 201
        assert created.json()["steps"] == [{"after_s": 600, "channels": [channel_id]}]
        assert created.json()["updated_by"].startswith("user:")
        assert (
            await admin.post("/api/escalation-policies", json=_policy(channel_id))
        ).status_code == 409

        [seen] = (await viewer.get("/api/escalation-policies")).json()
        assert seen["id"] == "night"
        assert (await viewer.get("/api/escalation-policies/night")).json()["repeat_limit"] == 3
        refused = await viewer.post("/api/escalation-policies", json=_policy(channel_id, id="x"))
        assert refused.status_code == 403
        assert (await viewer.delete("/api/escalation-policies/night")).status_code == 403

        replaced = await admin.put(
            "/api/escalation-policies/night", json=_policy(channel_id, id=None, repeat_limit=0)
        )
        assert replaced.json()["repeat_limit"] == 0
        assert (await admin.get("/api/escalation-policies/nope")).status_code == 404
        assert (await admin.delete("/api/escalation-policies/night")).status_code == 204
        assert (await admin.get("/api/escalation-policies")).json() == []


@pytest.mark.parametrize(
    ("change", "loc"),
    [
        ({"steps": []}, ["body", "steps"]),
        ({"steps": [{"after_s": -1, "channels": [1]}]}, ["body", "steps", 0, "after_s"]),
        ({"steps": [{"after_s": 60, "channels": []}]}, ["body", "steps", 0, "channels"]),
        (
            {"steps": [{"after_s": 60, "channels": list(range(1, 12))}]},
            ["body", "steps", 0, "channels"],
        ),
        ({"steps": [{"after_s": 60, "channels": [999]}]}, ["body", "steps", 0, "channels"]),
        (
            {"steps": [{"after_s": 600, "channels": ["CH"]}, {"after_s": 60, "channels": ["CH"]}]},
            ["body", "steps", 1, "after_s"],
        ),
        ({"steps": [{"after_s": 1, "channels": ["CH"]}] * 11}, ["body", "steps"]),
        ({"repeat_every_s": None}, ["body", "repeat_every_s"]),
        ({"repeat_limit": 51}, ["body", "repeat_limit"]),
        ({"id": "Night Shift"}, ["body", "id"]),
        ({"id": None}, ["body", "id"]),
        ({"colour": "red"}, ["body", "colour"]),
    ],
)
async def test_a_bad_policy_is_a_422_naming_the_field(
    hub: Hub, change: dict[str, Any], loc: list[Any]
) -> None:
    channel_id = await _channel(hub)
    body = _policy(channel_id, **change)
    for step in body["steps"]:
        step["channels"] = [channel_id if c == "CH" else c for c in step["channels"]]
    async with api_client(hub) as admin:
        answer = await admin.post("/api/escalation-policies", json=body)
        assert answer.status_code == 422, answer.text
        assert answer.json()["detail"][0]["loc"] == loc
        assert (await admin.get("/api/escalation-policies")).json() == []


async def test_a_rule_names_only_a_policy_that_exists_and_keeps_it_in_use(hub: Hub) -> None:
    channel_id = await _channel(hub)
    async with api_client(hub) as admin:
        rule = {"id": "door", "condition": DOOR, "escalation": "night"}
        unknown = await admin.post("/api/alarm-rules", json=rule)
        assert unknown.status_code == 422
        [error] = unknown.json()["detail"]
        assert error["loc"] == ["body", "escalation"]
        assert "no such escalation policy" in error["msg"]
        malformed = await admin.post("/api/alarm-rules", json={**rule, "escalation": "A B"})
        assert malformed.json()["detail"][0]["loc"] == ["body", "escalation"]

        await admin.post("/api/escalation-policies", json=_policy(channel_id))
        stored = await admin.post("/api/alarm-rules", json=rule)
        assert stored.status_code == 201
        assert stored.json()["escalation"] == "night"
        in_use = await admin.delete("/api/escalation-policies/night")
        assert in_use.status_code == 409
        assert "door" in in_use.json()["detail"]


async def test_rules_apply_refuses_a_file_naming_an_unknown_policy(
    make_hub: HubFactory, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    async with make_hub(data=data) as hub:
        channel_id = await _channel(hub)
        policy = PolicyIn.model_validate(_policy(channel_id)).policy("night")
        await hub.escalation.put(policy, actor="test", source="", create=True)
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "rules:\n"
        "  - {id: first, condition: {kind: event, match: door.*}, escalation: night}\n"
        "  - {id: second, condition: {kind: event, match: door.*}, escalation: nobody}\n"
    )
    result = await fieldhub(data, "rules", "apply", str(rules))
    assert result.returncode == 1
    assert (
        "rule 'second': escalation: no escalation policy 'nobody'" in result.stdout + result.stderr
    )
    async with make_hub(data=data) as hub:
        assert await hub.alarms.rules() == []  # the whole file stopped, the good rule too
