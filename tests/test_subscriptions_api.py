"""The subscription routes: users keep their own, admins anyone's; every bad value is a 422
naming the field; another user's subscription does not exist for you; changes are audited."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from fieldhub.hub.app import Hub
from tests.conftest import api_client

QUIET = {"timezone": "Europe/Berlin", "from": "22:00", "to": "07:00"}


@pytest.fixture
async def channel(hub: Hub) -> int:
    config = {"url": "http://127.0.0.1:9/hook"}
    return (await hub.notifications.create_channel("hook", "webhook", config, actor="t")).id


@pytest.fixture
async def ann(hub: Hub) -> AsyncIterator[httpx.AsyncClient]:
    """An operator of site a."""
    async with api_client(hub, "operator", sites=["a"]) as client:
        yield client


def problem(answer: httpx.Response) -> list[Any]:
    assert answer.status_code == 422, answer.text
    [detail] = answer.json()["detail"]
    return list(detail["loc"])


@pytest.mark.parametrize(
    ("change", "loc"),
    [
        ({"channel_id": 999}, ["body", "channel_id"]),
        ({"sites": ["b"]}, ["body", "sites", 0]),
        ({"sites": ["a"] * 101}, ["body", "sites"]),
        ({"min_severity": "loud"}, ["body", "min_severity"]),
        ({"rules": ["Not A Rule!"]}, ["body", "rules", 0]),
        ({"rules": ["x" * 65]}, ["body", "rules", 0]),
        ({"changes": ["exploded"]}, ["body", "changes", 0]),
        ({"changes": []}, ["body", "changes"]),
        (
            {"quiet_hours": {**QUIET, "timezone": "Mars/Olympus"}},
            ["body", "quiet_hours", "timezone"],
        ),
        ({"quiet_hours": {**QUIET, "from": "25:00"}}, ["body", "quiet_hours", "from"]),
        ({"quiet_hours": {**QUIET, "days": ["someday"]}}, ["body", "quiet_hours", "days", 0]),
        (
            {"quiet_hours": {**QUIET, "pass_severities": ["loud"]}},
            ["body", "quiet_hours", "pass_severities", 0],
        ),
        ({"group_interval_s": -1}, ["body", "group_interval_s"]),
        ({"max_per_hour": 0}, ["body", "max_per_hour"]),
        ({"to": ["ann@example.org"]}, ["body", "to"]),  # a webhook takes no addresses
        ({"colour": "red"}, ["body", "colour"]),
    ],
)
async def test_bad_subscriptions_are_422_naming_the_field(
    hub: Hub, ann: httpx.AsyncClient, channel: int, change: dict[str, Any], loc: list[Any]
) -> None:
    answer = await ann.post(
        "/api/notification-subscriptions", json={"channel_id": channel, **change}
    )
    assert problem(answer) == loc
    assert (await ann.get("/api/notification-subscriptions")).json() == []


async def test_an_email_subscription_needs_addresses_when_its_channel_has_none(
    make_hub: Any,
) -> None:
    async with make_hub(smtp_host="127.0.0.1") as hub, api_client(hub) as api:
        made = await api.post(
            "/api/notification-channels", json={"name": "mail", "kind": "email", "config": {}}
        )
        assert made.status_code == 201, made.text
        mail = made.json()["id"]
        path = "/api/notification-subscriptions"
        assert problem(await api.post(path, json={"channel_id": mail})) == ["body", "to"]
        bad = await api.post(path, json={"channel_id": mail, "to": ["not an address"]})
        assert problem(bad) == ["body", "to", 0]
        good = await api.post(path, json={"channel_id": mail, "to": ["me@example.org"]})
        assert good.status_code == 201, good.text
        assert good.json()["to"] == ["me@example.org"]


async def test_a_user_keeps_their_own_and_never_sees_anothers(
    hub: Hub, ann: httpx.AsyncClient, channel: int
) -> None:
    made = await ann.post(
        "/api/notification-subscriptions",
        json={"channel_id": channel, "sites": ["a"], "rules": ["door-*"], "quiet_hours": QUIET},
    )
    assert made.status_code == 201, made.text
    mine = made.json()
    assert ann.user is not None
    assert mine["owner_id"] == ann.user.id
    assert mine["changes"] == ["raised", "cleared"]
    assert mine["quiet_hours"] == {
        **QUIET,
        "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
        "pass_severities": ["critical"],
    }
    path = f"/api/notification-subscriptions/{mine['id']}"
    replaced = await ann.put(path, json={"channel_id": channel, "min_severity": "major"})
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["min_severity"] == "major"
    assert replaced.json()["quiet_hours"] is None  # replaced whole

    async with api_client(hub, "viewer", sites=["a"]) as other:
        assert (await other.get(path)).status_code == 404
        assert (await other.put(path, json={"channel_id": channel})).status_code == 404
        assert (await other.delete(path)).status_code == 404
        assert (await other.get("/api/notification-subscriptions")).json() == []
        for_ann = await other.post(
            "/api/notification-subscriptions",
            json={"channel_id": channel, "owner_id": ann.user.id},
        )
        assert for_ann.status_code == 403
        hub_wide = await other.post(
            "/api/notification-subscriptions", json={"channel_id": channel, "owner_id": None}
        )
        assert hub_wide.status_code == 403

    async with api_client(hub) as admin:
        assert (await admin.get(path)).status_code == 200
        everyone = await admin.get("/api/notification-subscriptions")
        assert [s["id"] for s in everyone.json()] == [mine["id"]]
        for_ann = await admin.post(
            "/api/notification-subscriptions",
            json={"channel_id": channel, "owner_id": ann.user.id, "sites": ["b"]},
        )
        assert problem(for_ann) == ["body", "sites", 0]  # ann's sites bound even an admin

    assert (await ann.delete(path)).status_code == 204
    assert (await ann.get(path)).status_code == 404
    actions = [
        e.action for e in (await hub.audit.query(target=f"subscription:{mine['id']}")).entries
    ]
    assert sorted(actions) == [
        "notification.subscription.changed",
        "notification.subscription.created",
        "notification.subscription.deleted",
    ]


async def test_deleting_a_channel_deletes_its_subscriptions(
    hub: Hub, ann: httpx.AsyncClient, channel: int
) -> None:
    made = await ann.post("/api/notification-subscriptions", json={"channel_id": channel})
    assert made.status_code == 201, made.text
    await hub.notifications.delete_channel(channel, actor="test")
    assert (await ann.get("/api/notification-subscriptions")).json() == []


async def test_every_user_lists_the_enabled_channels_without_their_config(hub: Hub):
    hook = await hub.notifications.create_channel(
        "hook-b", "webhook", {"url": "http://127.0.0.1:9/b", "secret": "s3cret-value"}, actor="t"
    )
    off = await hub.notifications.create_channel(
        "hook-off", "webhook", {"url": "http://127.0.0.1:9/off"}, enabled=False, actor="t"
    )
    async with api_client(hub, "viewer", sites=["a"]) as viewer:
        answer = await viewer.get("/api/notification-channels/choices")
        assert answer.status_code == 200, answer.text
        assert answer.json() == [{"id": hook.id, "name": "hook-b", "kind": "webhook"}]
        assert off.id not in {c["id"] for c in answer.json()}
        assert "s3cret" not in answer.text
        assert (await viewer.get(f"/api/notification-channels/{hook.id}")).status_code == 403


async def test_a_subscription_may_hear_of_assignments_and_comments(
    hub: Hub, channel: int, ann: httpx.AsyncClient
):
    kinds = ["raised", "cleared", "assigned", "commented", "acknowledged"]
    made = await ann.post(
        "/api/notification-subscriptions", json={"channel_id": channel, "changes": kinds}
    )
    assert made.status_code == 201, made.text
    assert sorted(made.json()["changes"]) == sorted(kinds)
