"""Maintenance windows end to end: an alarm inside a window is raised and marked, its
notification waits for the window's end (a real webhook receiver), one raised and cleared
inside is never sent (also when gathered for a digest); the routes refuse bad windows with 422
naming the field and scope windows by site."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from fieldhub.clock import now_ms
from fieldhub.hub.app import Hub
from fieldhub.hub.ingest.batch import Batch
from fieldhub.hub.notify.holds import SKIPPED
from fieldhub.hub.notify.subscriptions import SubscriptionSpec
from fieldhub.hub.store.alarms import AlarmFilter, AlarmRecord
from fieldhub.protocol import Event
from tests.conftest import DeviceFactory, HubFactory, api_client
from tests.support.receivers import WebhookReceiver, webhook_receiver
from tests.support.subscribe import ADMIN, hear_every_change
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
WINDOW_S = 6  # long enough to raise (and clear) inside it on a loaded machine


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
async def hub(request: pytest.FixtureRequest, make_hub: HubFactory) -> AsyncIterator[Hub]:
    """A hub on the embedded broker, on each database, retrying notifications fast."""
    async with make_hub(db=request.param, notify_retry_s=0.2, notify_retry_max_s=1.0) as running:
        yield running


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with webhook_receiver() as running:
        yield running


async def webhook(hub: Hub, receiver: WebhookReceiver) -> None:
    channel = await hub.notifications.create_channel(
        "ops", "webhook", {"url": receiver.url("/ops")}, actor="test"
    )
    await hear_every_change(hub, channel.id)


async def window_over(hub: Hub, device_id: str) -> int:
    """A one-off window over ``device_id`` open now for WINDOW_S seconds; its end (epoch ms)."""
    now = now_ms()
    end = now + WINDOW_S * 1000
    raw = {
        "name": "cabinet swap",
        "scope": {"devices": [device_id]},
        "schedule": {"kind": "once", "start": now - 1000, "end": end},
    }
    await hub.maintenance.put(raw, actor="test")
    return end


async def one_alarm(hub: Hub, device_id: str) -> AlarmRecord:
    found = await eventually(lambda: hub.alarms.find(AlarmFilter(device=device_id)), "an alarm")
    [alarm] = found
    return alarm


async def test_an_alarm_in_a_window_is_marked_and_notified_at_the_windows_end(
    hub: Hub, connect_device: DeviceFactory, receiver: WebhookReceiver
):
    await webhook(hub, receiver)
    await hub.alarms.put_rule(HOT, actor="test", create=True)
    device = await connect_device(hub, "cab", site="berlin")
    end = await window_over(hub, device.device_id)
    end_monotonic = time.monotonic() + (end - now_ms()) / 1000
    device.telemetry(1, temp=51)
    await device.wait_acked(1)
    alarm = await one_alarm(hub, device.device_id)

    async with api_client(hub) as api:
        shown = (await api.get(f"/api/alarms/{alarm.id}")).json()
    assert shown["state"] == "active"  # raised and recorded as ever
    assert shown["in_maintenance"] is True
    [mark] = [h for h in shown["history"] if h["kind"] == "maintenance"]
    assert "cabinet swap" in mark["comment"]
    assert "notifications held" in mark["comment"]
    [held] = await hub.notifications.notifications(limit=10)
    assert held.state == "pending"
    assert held.next_attempt_at == end
    assert receiver.to("/ops") == []  # not during the window

    [sent] = await eventually(lambda: receiver.to("/ops"), "the held raise", WINDOW_S + 10)
    assert sent.at >= end_monotonic - 0.1
    assert sent.headers["x-fieldhub-event"] == "alarm.raised"
    assert sent.json()["data"]["in_maintenance"] is True


async def test_an_alarm_raised_and_cleared_inside_a_window_is_never_sent(
    hub: Hub, connect_device: DeviceFactory, receiver: WebhookReceiver
):
    await webhook(hub, receiver)
    await hub.alarms.put_rule(HOT, actor="test", create=True)
    device = await connect_device(hub, "cab", site="berlin")
    await window_over(hub, device.device_id)
    device.telemetry(1, temp=51)
    await device.wait_acked(1)
    alarm = await one_alarm(hub, device.device_id)
    await hub.alarms.acknowledge(alarm.id, actor="user:ann")
    device.telemetry(2, temp=40)
    await device.wait_acked(2)

    async def cleared() -> bool:
        return (await hub.alarms.alarm(alarm.id)).state == "cleared"

    await eventually(cleared, "the clear inside the window")
    [skipped] = await hub.notifications.notifications(limit=10)  # the raise; no clear enqueued
    assert skipped.state == "cancelled"
    assert skipped.last_error == SKIPPED

    # After the window: a device outside it is notified, and only that one.
    other = await connect_device(hub, "other", site="berlin")
    other.telemetry(1, temp=60)
    [sent] = await eventually(lambda: receiver.to("/ops"), "the other device's raise", 15)
    assert sent.json()["data"]["device"] == other.device_id


WEEKLY = {"kind": "weekly", "days": [0], "start": "02:00", "duration_s": 3600, "timezone": "UTC"}


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"schedule": WEEKLY}, ["body", "name"]),
        ({"name": "x"}, ["body", "schedule"]),
        (
            {"name": "x", "schedule": {**WEEKLY, "timezone": "Nowhere/City"}},
            ["body", "schedule", "timezone"],
        ),
        ({"name": "x", "schedule": {**WEEKLY, "days": []}}, ["body", "schedule", "days"]),
        (
            {"name": "x", "schedule": {"kind": "once", "start": 1000, "end": 2000}},
            ["body", "schedule", "end"],
        ),  # already over
        (
            {"name": "x", "schedule": WEEKLY, "scope": {"devices": "atm-1"}},
            ["body", "scope", "devices"],
        ),
        ({"name": "x", "schedule": WEEKLY, "scope": {"zones": ["a"]}}, ["body", "scope", "zones"]),
        ({"name": "x", "schedule": WEEKLY, "colour": "red"}, ["body", "colour"]),
    ],
)
async def test_bad_windows_are_422_naming_the_field(
    make_hub: HubFactory, body: dict[str, Any], loc: list[str]
):
    async with make_hub() as hub, api_client(hub) as api:
        answer = await api.post("/api/maintenance-windows", json=body)
    assert answer.status_code == 422, answer.text
    assert [error["loc"] for error in answer.json()["detail"]] == [loc]


async def test_windows_are_scoped_by_site_and_listed_when_active(make_hub: HubFactory):
    now = now_ms()
    open_now = {"kind": "once", "start": now - 1000, "end": now + 3_600_000}
    later = {"kind": "once", "start": now + 3_600_000, "end": now + 7_200_000}
    async with make_hub() as hub:
        async with api_client(hub, "operator", sites=["berlin"]) as api:
            mine = await api.post(
                "/api/maintenance-windows",
                json={"name": "berlin now", "scope": {"sites": ["berlin"]}, "schedule": open_now},
            )
            assert mine.status_code == 201, mine.text
            assert mine.json()["active_until"] == now + 3_600_000
            ahead = await api.post(
                "/api/maintenance-windows",
                json={"name": "berlin later", "scope": {"sites": ["berlin"]}, "schedule": later},
            )
            assert ahead.status_code == 201
            assert ahead.json()["active_until"] is None
            for scope in ({"sites": ["paris"]}, {}, {"rules": ["hot"]}):
                refused = await api.post(
                    "/api/maintenance-windows",
                    json={"name": "not mine", "scope": scope, "schedule": open_now},
                )
                assert refused.status_code == 403, (scope, refused.text)
        async with api_client(hub) as admin:
            paris = await admin.post(
                "/api/maintenance-windows",
                json={"name": "paris", "scope": {"sites": ["paris"]}, "schedule": open_now},
            )
            assert paris.status_code == 201
            everything = await admin.post(
                "/api/maintenance-windows", json={"name": "all", "schedule": open_now}
            )
            assert everything.status_code == 201
        async with api_client(hub, "viewer", sites=["berlin"]) as api:
            listed = (await api.get("/api/maintenance-windows")).json()
            assert [w["name"] for w in listed] == ["berlin now", "berlin later", "all"]
            active = (await api.get("/api/maintenance-windows?active=true")).json()
            assert [w["name"] for w in active] == ["berlin now", "all"]
            hidden = await api.get(f"/api/maintenance-windows/{paris.json()['id']}")
            assert hidden.status_code == 404
            assert (
                await api.delete(f"/api/maintenance-windows/{mine.json()['id']}")
            ).status_code == 403
        async with api_client(hub, "operator", sites=["berlin"]) as api:
            window_id = mine.json()["id"]
            changed = await api.put(
                f"/api/maintenance-windows/{window_id}",
                json={"name": "berlin, longer", "scope": {"sites": ["berlin"]}, "schedule": later},
            )
            assert changed.status_code == 200
            assert changed.json()["name"] == "berlin, longer"
            assert (await api.delete(f"/api/maintenance-windows/{window_id}")).status_code == 204
            assert (await api.get(f"/api/maintenance-windows/{window_id}")).status_code == 404
        audited = [e.action for e in (await hub.audit.query(limit=100)).entries]
    assert {"maintenance.created", "maintenance.changed", "maintenance.deleted"} <= set(audited)


async def test_a_clear_inside_a_window_of_an_alarm_raised_before_is_sent_at_its_end(
    hub: Hub, connect_device: DeviceFactory, receiver: WebhookReceiver
):
    await webhook(hub, receiver)
    await hub.alarms.put_rule(HOT, actor="test", create=True)
    device = await connect_device(hub, "cab", site="berlin")
    device.telemetry(1, temp=51)
    await device.wait_acked(1)
    await eventually(lambda: receiver.to("/ops"), "the raise, before any window")
    alarm = await one_alarm(hub, device.device_id)
    assert not alarm.in_maintenance
    end = await window_over(hub, device.device_id)
    end_monotonic = time.monotonic() + (end - now_ms()) / 1000
    await hub.alarms.acknowledge(alarm.id, actor="user:ann")
    device.telemetry(2, temp=40)
    await device.wait_acked(2)

    async def cleared() -> bool:
        return (await hub.alarms.alarm(alarm.id)).state == "cleared"

    await eventually(cleared, "the clear inside the window")
    both = await eventually(
        lambda: (got := receiver.to("/ops")) and len(got) >= 2 and got, "the clear", WINDOW_S + 10
    )
    assert [r.headers["x-fieldhub-event"] for r in both] == ["alarm.raised", "alarm.cleared"]
    assert both[1].at >= end_monotonic - 0.1  # held until the window's end
    assert both[1].json()["data"]["in_maintenance"] is True


async def test_a_gathered_raise_waits_for_the_window_and_is_dropped_if_cleared_inside(
    hub: Hub, receiver: WebhookReceiver
):
    channel = await hub.notifications.create_channel(
        "ops", "webhook", {"url": receiver.url("/ops")}, actor="test"
    )
    spec = SubscriptionSpec(channel_id=channel.id, group_interval_s=1)  # digests after 1 s
    await hub.notifications.subscriptions.create(spec, ADMIN, owner_id=None)
    rule = {"id": "door", "condition": {"kind": "event", "match": "door.*"}}
    await hub.alarms.put_rule({**rule, "clearable_by_user": True}, actor="test", create=True)
    for device in ("outside", "fixed", "open"):
        await hub.devices.create(device, labels={"site": "berlin"})
    end = now_ms() + 3000  # time enough to raise three and clear one: they take no waiting
    window = {"devices": ["fixed", "open"]}
    schedule = {"kind": "once", "start": now_ms() - 1000, "end": end}
    await hub.maintenance.put({"name": "swap", "scope": window, "schedule": schedule}, actor="t")

    async def door(device: str) -> AlarmRecord:
        at = now_ms()
        event = Event(seq=1, ts=at, type="door.opened", message="door open")
        hub.alarms.engine.committed(Batch(events=[(device, at, event)]))
        await hub.alarms.engine.evaluate()
        return await one_alarm(hub, device)

    await door("outside")  # sent at once; it opens the group: the next two are gathered
    await door("open")
    fixed = await door("fixed")
    await hub.alarms.clear(fixed.id, actor="user:ann", comment="closed it")  # inside the window

    [first] = await eventually(lambda: receiver.to("/ops"), "the first raise, at once")
    assert first.json()["data"]["device"] == "outside"
    got = await eventually(lambda: receiver.to("/ops")[1:], "the digest", 15)
    assert now_ms() >= end  # held until the window's end, not sent after a second
    [digest] = got
    assert digest.json()["data"]["devices"] == ["open"]  # not the one fixed inside the window
    assert "hold_until" not in digest.json()["data"]["alarms"][0]
    await eventually(lambda: not hub.notifications.worker.inflight, "nothing under way")
    assert len(receiver.to("/ops")) == 2  # and its clear is not sent either
