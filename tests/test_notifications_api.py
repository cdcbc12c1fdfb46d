"""The notification REST API, over the real app: channels (secrets write-only), refusals that
name the field, a test message followed to its delivery through a real HTTP receiver, the
outbox and its delivery log. Who may call what is in test_access_matrix.py."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from fieldhub.hub.app import Hub
from tests.conftest import api_client
from tests.support.receivers import WebhookReceiver, webhook_receiver
from tests.waiting import eventually


@pytest.fixture
async def hub(make_hub: Any) -> AsyncIterator[Hub]:
    async with make_hub(notify_retry_s=0.05, notify_retry_max_s=0.2) as running:
        yield running


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with webhook_receiver() as running:
        yield running


def problem(answer: httpx.Response) -> tuple[list[Any], str]:
    assert answer.status_code == 422, answer.text
    [detail] = answer.json()["detail"]
    return detail["loc"], detail["msg"]


async def test_a_channel_is_made_read_changed_and_deleted_without_showing_its_secret(
    api: httpx.AsyncClient, receiver: WebhookReceiver
):
    made = await api.post(
        "/api/notification-channels",
        json={
            "name": "ops hook",
            "kind": "webhook",
            "config": {"url": receiver.url("/hook"), "secret": "top-secret-value"},
        },
    )
    assert made.status_code == 201, made.text
    channel = made.json()
    assert channel["config"] == {"url": receiver.url("/hook"), "secret_set": True}
    assert channel["enabled"] is True
    assert channel["created_by"].startswith("user:")
    path = f"/api/notification-channels/{channel['id']}"

    changed = await api.patch(path, json={"config": {"url": receiver.url("/other")}})
    assert changed.status_code == 200, changed.text
    assert changed.json()["config"] == {"url": receiver.url("/other"), "secret_set": True}
    for answer in (await api.get(path), await api.get("/api/notification-channels")):
        assert answer.status_code == 200
        assert "top-secret-value" not in answer.text

    taken = await api.post(
        "/api/notification-channels",
        json={"name": "ops hook", "kind": "mqtt", "config": {"topic": "ops"}},
    )
    assert taken.status_code == 409

    assert (await api.delete(path)).status_code == 204
    assert (await api.get(path)).status_code == 404
    assert (await api.get("/api/notification-channels")).json() == []


@pytest.mark.parametrize(
    ("body", "loc", "says"),
    [
        (
            {"kind": "webhook", "config": {"url": "ftp://example.org/hook"}},
            ["body", "config", "url"],
            "ftp://example.org/hook",
        ),
        (
            {"kind": "webhook", "config": {"url": "file:///etc/passwd"}},
            ["body", "config", "url"],
            "http",
        ),
        ({"kind": "webhook", "config": {}}, ["body", "config", "url"], "url"),
        (
            {"kind": "webhook", "config": {"url": "https://me:pw@example.org/hook"}},
            ["body", "config", "url"],
            "credentials",
        ),
        (
            {"kind": "webhook", "config": {"url": "http://x", "colour": "red"}},
            ["body", "config", "colour"],
            "colour",
        ),
        ({"kind": "mqtt", "config": {"topic": "ops/#"}}, ["body", "config", "topic"], "ops/#"),
        ({"kind": "mqtt", "config": {"topic": "a//b"}}, ["body", "config", "topic"], "a//b"),
        (
            {"kind": "email", "config": {"to": ["ops@example.org"]}},
            ["body", "kind"],
            "FIELDHUB_SMTP_HOST",
        ),
        ({"kind": "sms", "config": {}}, ["body", "kind"], ""),
    ],
)
async def test_a_bad_channel_is_refused_naming_the_field(
    api: httpx.AsyncClient, body: dict[str, Any], loc: list[Any], says: str
):
    where, message = problem(
        await api.post("/api/notification-channels", json={"name": "bad", **body})
    )
    assert where == loc
    assert says in message


async def test_bad_recipients_are_refused_naming_the_one(make_hub: Any):
    async with make_hub(smtp_host="127.0.0.1") as hub, api_client(hub) as api:
        answer = await api.post(
            "/api/notification-channels",
            json={
                "name": "mail",
                "kind": "email",
                "config": {"to": ["ops@example.org", "ops@example.org>\r\nBcc: x@evil"]},
            },
        )
    where, message = problem(answer)
    assert where == ["body", "config", "to", 1]
    assert "not an e-mail address" in message


async def test_a_test_message_is_delivered_and_its_log_shown(hub: Hub, receiver: WebhookReceiver):
    receiver.script["/hook"] = [500]
    async with api_client(hub) as api:
        channel = (
            await api.post(
                "/api/notification-channels",
                json={
                    "name": "ops",
                    "kind": "webhook",
                    "config": {"url": receiver.url("/hook"), "secret": "k"},
                },
            )
        ).json()
        sent = await api.post(f"/api/notification-channels/{channel['id']}/test")
        assert sent.status_code == 202, sent.text
        notification = sent.json()
        assert notification["event"] == "test"
        assert notification["state"] == "pending"

        async def delivered() -> Any:
            answer = await api.get(f"/api/notifications/{notification['id']}")
            found = answer.json()
            return found if found["state"] == "delivered" else None

        detail = await eventually(delivered, "the test message delivered")
        assert [(d["ok"], d["status"]) for d in detail["deliveries"]] == [
            (False, "500"),
            (True, "200"),
        ]
        assert detail["attempts"] == 2
        assert detail["next_attempt_at"] is None
        assert detail["delivered_at"] >= detail["created_at"]

        listed = await api.get("/api/notifications", params={"state": "delivered"})
        assert [n["id"] for n in listed.json()] == [notification["id"]]
        assert (await api.get("/api/notifications", params={"state": "dead"})).json() == []
        assert (await api.get("/api/notifications", params={"state": "lost"})).status_code == 422
        missing = await api.get(f"/api/notifications/{'0' * 32}")
        assert missing.status_code == 404
        assert (await api.get("/api/notifications/not-an-id")).status_code == 422
        missing_channel = await api.post("/api/notification-channels/999999/test")
        assert missing_channel.status_code == 404
        metrics = (await api.get("/metrics")).text
        assert 'fieldhub_notification_attempts_total{outcome="delivered"} 1.0' in metrics
        assert 'fieldhub_notification_attempts_total{outcome="retried"} 1.0' in metrics
        assert 'fieldhub_notification_attempts_total{outcome="dead"} 0.0' in metrics

    request = receiver.to("/hook")[-1]
    assert request.headers["x-fieldhub-event"] == "test"
    timestamp = request.headers["x-fieldhub-timestamp"]
    mac = hmac.new(b"k", f"{timestamp}.".encode() + request.body, hashlib.sha256)
    assert request.headers["x-fieldhub-signature"] == "sha256=" + mac.hexdigest()


async def test_the_outbox_pages_newest_first(hub: Hub):
    channel = await hub.notifications.create_channel(
        "held", "webhook", {"url": "http://127.0.0.1:9/"}, enabled=False, actor="test"
    )
    made = [(await hub.notifications.send_test(channel.id, actor="t")).id for _ in range(5)]
    async with api_client(hub) as api:
        first = (await api.get("/api/notifications", params={"limit": 2})).json()
        rest = (
            await api.get("/api/notifications", params={"limit": 10, "before": first[-1]["id"]})
        ).json()
    seen = [n["id"] for n in first + rest]
    assert sorted(seen) == sorted(made)
    assert len(set(seen)) == 5
    assert [n["created_at"] for n in first + rest] == sorted(
        (n["created_at"] for n in first + rest), reverse=True
    )


async def test_deleting_a_channel_kills_its_pending_notifications_visibly(hub: Hub):
    channel = await hub.notifications.create_channel(
        "held", "webhook", {"url": "http://127.0.0.1:9/"}, enabled=False, actor="test"
    )
    waiting = await hub.notifications.send_test(channel.id, actor="t")
    async with api_client(hub) as api:
        assert (await api.delete(f"/api/notification-channels/{channel.id}")).status_code == 204
        dead = (await api.get(f"/api/notifications/{waiting.id}")).json()
    assert dead["state"] == "dead"
    assert "deleted" in dead["last_error"]
