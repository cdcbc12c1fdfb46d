"""From a device's message to a person's webhook: an alarm raised and cleared is notified,
once per channel, with what happened (issue 13: the bridge from alarms to notifications)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from fieldhub.hub.app import Hub
from fieldhub.hub.store.alarms import AlarmFilter
from tests.conftest import DeviceFactory, HubFactory
from tests.support.receivers import WebhookReceiver, webhook_receiver
from tests.waiting import eventually

HOT = {
    "id": "hot",
    "name": "Too hot",
    "severity": "major",
    "condition": {
        "kind": "threshold",
        "key": "temp",
        "direction": "above",
        "raise": 50,
        "clear": 45,
    },
}
FAST: dict[str, Any] = {"notify_retry_s": 0.2, "notify_retry_max_s": 1.0}


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with webhook_receiver() as running:
        yield running


async def test_a_raised_and_cleared_alarm_reaches_every_enabled_channel_once(
    make_hub: HubFactory, connect_device: DeviceFactory, receiver: WebhookReceiver
) -> None:
    async with make_hub(**FAST) as hub:
        await _webhook(hub, receiver, "/ops")
        await _webhook(hub, receiver, "/muted", enabled=False)
        await hub.alarms.put_rule(HOT, actor="test", create=True)
        device = await connect_device(hub, "cab", site="berlin")
        for seq, value in enumerate([40, 51, 52, 55], start=1):  # one crossing, then above
            device.telemetry(seq, temp=value)
        await device.wait_acked(4)
        raised = await eventually(lambda: receiver.to("/ops") or None, "the raise notified")
        [alarm] = await hub.alarms.find(AlarmFilter(rule="hot"))
        [request] = raised
        assert request.headers["x-fieldhub-event"] == "alarm.raised"
        body = request.json()
        assert body["subject"] == f"[MAJOR] Too hot on {device.device_id}: raised"
        assert body["data"]["alarm"] == alarm.id
        assert body["data"]["device"] == device.device_id
        assert body["data"]["labels"] == {"site": "berlin"}
        assert body["data"]["value"] == 51
        assert body["data"]["message"] == "temp = 51 ≥ 50"

        await hub.alarms.acknowledge(alarm.id, actor="user:ann", comment="on my way")
        device.telemetry(5, temp=40)
        await device.wait_acked(5)
        both = await eventually(
            lambda: (got := receiver.to("/ops")) and len(got) >= 2 and got, "the clear notified"
        )
        assert [r.headers["x-fieldhub-event"] for r in both] == ["alarm.raised", "alarm.cleared"]
        assert both[1].json()["data"]["state"] == "cleared"
    assert receiver.to("/muted") == []  # a disabled channel hears nothing
    assert len(receiver.to("/ops")) == 2  # the acknowledgement is the person's own: not sent


async def _webhook(hub: Hub, receiver: WebhookReceiver, path: str, *, enabled: bool = True) -> int:
    channel = await hub.notifications.create_channel(
        f"hook {path}",
        "webhook",
        {"url": receiver.url(path), "secret": "s3cret"},
        enabled=enabled,
        actor="test",
    )
    await hub.notifications.subscriptions.subscribe_hub_wide(channel.id, actor="test")
    return channel.id
