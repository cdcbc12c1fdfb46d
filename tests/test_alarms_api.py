"""The alarm routes: rules refused with 422 naming the field, alarms seen by site, and every
acknowledgement, clear and shelving audited."""

from __future__ import annotations

from typing import Any

import pytest

from fieldhub.clock import now_ms
from fieldhub.hub.alarms import AlarmFilter
from fieldhub.hub.app import Hub
from fieldhub.hub.ingest.batch import Batch
from fieldhub.protocol import Event, Telemetry
from tests.conftest import api_client

DOOR = {"kind": "event", "match": "door.*"}
HOT = {"kind": "threshold", "key": "temp", "direction": "above", "raise": 50, "clear": 45}


async def door_alarm(hub: Hub, site: str) -> tuple[str, int]:
    """A device of ``site`` with an open door alarm, raised by the engine from a committed
    batch (as ingest hands it over)."""
    device_id = f"dev-{site}-{now_ms() % 100000}"
    await hub.devices.create(device_id, labels={"site": site})
    rule = {"target": {"labels": {"site": site}}, "condition": DOOR, "id": f"door-{site}"}
    if not [s for s in await hub.alarms.rules() if s.rule.id == rule["id"]]:
        await hub.alarms.put_rule(rule, actor="test", create=True)
    event = Event(seq=1, ts=now_ms(), type="door.opened", message="door open")
    hub.alarms.engine.committed(Batch(events=[(device_id, now_ms(), event)]))
    await hub.alarms.engine.evaluate()
    [alarm] = await hub.alarms.find(AlarmFilter(device=device_id))
    return device_id, alarm.id


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"condition": {**HOT, "clear": 55}}, ["body", "condition", "clear"]),
        ({"condition": {**HOT, "direction": "sideways"}}, ["body", "condition", "direction"]),
        ({"condition": {"kind": "weather"}}, ["body", "condition", "kind"]),
        ({"condition": HOT, "for_s": -1}, ["body", "for_s"]),
        ({"condition": HOT, "severity": "loud"}, ["body", "severity"]),
        ({"condition": HOT, "target": {"everything": True}}, ["body", "target", "everything"]),
        ({"condition": HOT, "colour": "red"}, ["body", "colour"]),
        ({"condition": DOOR, "clearable_by_user": False}, ["body", "clearable_by_user"]),
    ],
)
async def test_bad_rules_are_422_naming_the_field(hub: Hub, body: dict[str, Any], loc: list[str]):
    async with api_client(hub) as api:
        answer = await api.post("/api/alarm-rules", json=body)
    assert answer.status_code == 422, answer.text
    assert [error["loc"] for error in answer.json()["detail"]] == [loc]


async def test_rules_are_created_read_replaced_and_deleted(hub: Hub):
    async with api_client(hub) as api:
        made = await api.post("/api/alarm-rules", json={"id": "hot", "condition": HOT})
        assert made.status_code == 201, made.text
        assert made.json()["condition"]["raise"] == 50
        again = await api.post("/api/alarm-rules", json={"id": "hot", "condition": HOT})
        assert again.status_code == 409
        changed = await api.put(
            "/api/alarm-rules/hot", json={"condition": {**HOT, "raise": 60}, "for_s": 5}
        )
        assert changed.status_code == 200, changed.text
        read = (await api.get("/api/alarm-rules/hot")).json()
        assert (read["condition"]["raise"], read["for_s"]) == (60, 5)
        assert [r["id"] for r in (await api.get("/api/alarm-rules")).json()] == ["hot"]
        assert (await api.delete("/api/alarm-rules/hot")).status_code == 204
        assert (await api.get("/api/alarm-rules/hot")).status_code == 404
    assert "hot" not in hub.alarms.engine.index.rules
    actions = [e.action for e in (await hub.audit.query(target="hot")).entries]
    assert actions == ["alarm_rule.deleted", "alarm_rule.changed", "alarm_rule.created"]


async def test_a_caller_sees_and_writes_only_its_sites(hub: Hub):
    mine, my_alarm = await door_alarm(hub, "berlin")
    _theirs, their_alarm = await door_alarm(hub, "paris")
    async with api_client(hub, "operator", sites=["berlin"]) as api:
        listed = (await api.get("/api/alarms")).json()["alarms"]
        assert [a["device_id"] for a in listed] == [mine]
        assert (await api.get(f"/api/alarms/{their_alarm}")).status_code == 404
        ack = await api.post(f"/api/alarms/{their_alarm}/acknowledge", json={})
        assert ack.status_code == 404
        assert [r["id"] for r in (await api.get("/api/alarm-rules")).json()] == ["door-berlin"]
        assert (await api.get("/api/alarm-rules/door-paris")).status_code == 404
        foreign = {"target": {"labels": {"site": "paris"}}, "condition": DOOR}
        assert (await api.post("/api/alarm-rules", json=foreign)).status_code == 403
        everyone = {"condition": DOOR}  # every device: an admin's rule
        assert (await api.post("/api/alarm-rules", json=everyone)).status_code == 403
        own = {"target": {"devices": [mine]}, "condition": DOOR}
        assert (await api.post("/api/alarm-rules", json=own)).status_code == 201
    async with api_client(hub, "viewer", sites=["berlin"]) as api:
        assert (await api.get(f"/api/alarms/{my_alarm}")).status_code == 200
        assert (await api.post(f"/api/alarms/{my_alarm}/acknowledge", json={})).status_code == 403


async def test_acknowledge_clear_and_shelve_are_kept_in_history_and_audited(hub: Hub):
    _, alarm_id = await door_alarm(hub, "berlin")
    async with api_client(hub, "operator", sites=["berlin"]) as api:
        until = now_ms() + 3_600_000
        shelved = await api.post(
            f"/api/alarms/{alarm_id}/shelve", json={"until": until, "comment": "night"}
        )
        assert shelved.status_code == 200, shelved.text
        assert shelved.json()["shelved_until"] == until
        late = await api.post(f"/api/alarms/{alarm_id}/shelve", json={"until": 1})
        assert late.status_code == 422
        assert late.json()["detail"][0]["loc"] == ["body", "until"]
        acked = await api.post(f"/api/alarms/{alarm_id}/acknowledge", json={"comment": "mine"})
        assert acked.json()["state"] == "acknowledged"
        twice = await api.post(f"/api/alarms/{alarm_id}/acknowledge", json={})
        assert twice.status_code == 409
        cleared = await api.post(f"/api/alarms/{alarm_id}/clear", json={"comment": "shut"})
        assert cleared.json()["state"] == "cleared"
        assert (await api.post(f"/api/alarms/{alarm_id}/clear", json={})).status_code == 409
        detail = (await api.get(f"/api/alarms/{alarm_id}")).json()
        assert api.user is not None
        actor = f"user:{api.user.name}/token:{api.token_id}"
    assert [(h["kind"], h["actor"]) for h in detail["history"]] == [
        ("raised", "hub"),
        ("shelved", actor),
        ("acknowledged", actor),
        ("cleared", actor),
    ]
    entries = (await hub.audit.query(target=f"alarm:{alarm_id}")).entries
    assert sorted(e.action for e in entries) == [
        "alarm.acknowledged",
        "alarm.cleared",
        "alarm.shelved",
    ]
    assert {e.detail["comment"] for e in entries} == {"night", "mine", "shut"}


async def test_a_threshold_alarm_is_not_cleared_by_hand(hub: Hub):
    await hub.devices.create("cab-1", labels={"site": "berlin"})
    await hub.alarms.put_rule({"id": "hot", "condition": HOT}, actor="test", create=True)
    telemetry = Telemetry(seq=1, ts=now_ms(), values={"temp": 80})
    hub.alarms.engine.committed(Batch(telemetry=[("cab-1", telemetry)]))
    await hub.alarms.engine.evaluate()
    [alarm] = await hub.alarms.find(AlarmFilter(rule="hot"))
    async with api_client(hub) as api:
        answer = await api.post(f"/api/alarms/{alarm.id}/clear", json={})
        assert answer.status_code == 403
        assert "clearable_by_user" in answer.text
        page = (await api.get("/api/alarms", params={"state": "active", "limit": 1})).json()
        assert [a["id"] for a in page["alarms"]] == [alarm.id]
