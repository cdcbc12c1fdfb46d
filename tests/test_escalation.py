"""Escalation: an alarm nobody acknowledges reaches the policy's channels at each step's time,
then reminds up to the limit; an acknowledgement or a clear stops it, also at the last moment;
a restart between the raise and a step sends the step once (issue 13)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from fieldhub.clock import now_ms
from fieldhub.hub.app import Hub
from fieldhub.hub.config import HubSettings
from fieldhub.hub.ingest.batch import Batch
from fieldhub.hub.notify.escalation import Policy, Step
from fieldhub.hub.store.alarms import AlarmFilter
from fieldhub.hub.store.schema import alarms
from fieldhub.protocol.messages import Event
from tests.conftest import HubFactory, api_client
from tests.support.receivers import WebhookReceiver, webhook_receiver
from tests.waiting import eventually

FAST: dict[str, Any] = {"notify_retry_s": 0.2, "notify_retry_max_s": 1.0}
DOOR = {"kind": "event", "match": "door.*"}
DATABASES = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with webhook_receiver() as running:
        yield running


async def _channel(hub: Hub, receiver: WebhookReceiver, path: str) -> int:
    channel = await hub.notifications.create_channel(
        f"hook {path}", "webhook", {"url": receiver.url(path)}, actor="test"
    )
    # It hears every raise (its subscription) and the policy's steps (the policy names it).
    await hub.notifications.subscriptions.subscribe_hub_wide(channel.id, actor="test")
    return channel.id


async def _policy(
    hub: Hub, channel_id: int, *, after_s: int, repeat_every_s: int | None = None, limit: int = 0
) -> None:
    policy = Policy("night", "Night shift", (Step(after_s, (channel_id,)),), repeat_every_s, limit)
    await hub.escalation.put(policy, actor="test", source="", create=True)


async def _raise(hub: Hub, rule_id: str = "door") -> int:
    """An alarm of an event rule naming the policy ``night``, raised as ingest hands a
    committed event to the engine; its id."""
    device_id = f"cab-{rule_id}"
    await hub.devices.create(device_id, labels={"site": "berlin"})
    await hub.alarms.put_rule(
        {"id": rule_id, "condition": DOOR, "escalation": "night"}, actor="test", create=True
    )
    event = Event(seq=1, ts=now_ms(), type="door.opened")
    hub.alarms.engine.committed(Batch(events=[(device_id, now_ms(), event)]))
    await hub.alarms.engine.evaluate()
    [alarm] = await hub.alarms.find(AlarmFilter(rule=rule_id))
    return alarm.id


def _events(receiver: WebhookReceiver, path: str) -> list[str]:
    return [r.headers["x-fieldhub-event"] for r in receiver.to(path)]


@pytest.mark.parametrize("db", DATABASES)
async def test_an_unacknowledged_alarm_escalates_after_the_step_and_reminds_up_to_the_limit(
    make_hub: HubFactory, receiver: WebhookReceiver, db: str
) -> None:
    async with make_hub(db=db, **FAST) as hub:
        on_call = await _channel(hub, receiver, "/on-call")
        await _policy(hub, on_call, after_s=1, repeat_every_s=1, limit=2)
        raised_at = now_ms()
        alarm_id = await _raise(hub)
        wanted = ["alarm.raised", "alarm.escalated", "alarm.reminder", "alarm.reminder"]
        await eventually(lambda: _events(receiver, "/on-call") == wanted, "step and 2 reminders")
        step = receiver.to("/on-call")[1].json()
        assert step["subject"].endswith("not acknowledged after 1 s (step 1)")
        assert step["data"]["alarm"] == alarm_id
        assert step["data"]["step"] == 1
        async with api_client(hub) as api:
            sent = (await api.get("/api/notifications", params={"state": "delivered"})).json()
        times = {n["dedup_key"]: n["delivered_at"] for n in sent}
        assert times[f"escalation:{alarm_id}:step:1:channel:{on_call}"] >= raised_at + 1000
        assert times[f"escalation:{alarm_id}:repeat:2:channel:{on_call}"] >= raised_at + 3000
        # The limit: two reminders, nothing further waits in the outbox.
        async with api_client(hub) as api:
            pending = (await api.get("/api/notifications", params={"state": "pending"})).json()
        assert pending == []
    assert _events(receiver, "/on-call") == wanted


@pytest.mark.parametrize("db", DATABASES)
async def test_acknowledged_before_the_step_it_is_never_sent_and_shows_cancelled(
    make_hub: HubFactory, receiver: WebhookReceiver, db: str
) -> None:
    async with make_hub(db=db, **FAST) as hub:
        on_call = await _channel(hub, receiver, "/on-call")
        await _policy(hub, on_call, after_s=2, repeat_every_s=1, limit=1)
        alarm_id = await _raise(hub)
        await hub.alarms.acknowledge(alarm_id, actor="user:ann")
        async with api_client(hub) as api:
            cancelled = (await api.get("/api/notifications", params={"state": "cancelled"})).json()
        assert sorted(n["event"] for n in cancelled) == ["alarm.escalated", "alarm.reminder"]
        assert {n["last_error"] for n in cancelled} == {
            f"alarm {alarm_id} was acknowledged by user:ann"
        }
        await _past(4.0)  # the step's and the reminder's time are over
        assert _events(receiver, "/on-call") == ["alarm.raised"]


@pytest.mark.parametrize("db", DATABASES)
async def test_cleared_before_the_step_it_is_never_sent_and_shows_cancelled(
    make_hub: HubFactory, receiver: WebhookReceiver, db: str
) -> None:
    async with make_hub(db=db, **FAST) as hub:
        on_call = await _channel(hub, receiver, "/on-call")
        await _policy(hub, on_call, after_s=2)
        alarm_id = await _raise(hub)
        await hub.alarms.clear(alarm_id, actor="user:bob", comment="fixed")
        async with api_client(hub) as api:
            [cancelled] = (
                await api.get("/api/notifications", params={"state": "cancelled"})
            ).json()
        assert cancelled["last_error"] == f"alarm {alarm_id} was cleared by user:bob"
        await _past(3.0)
        assert _events(receiver, "/on-call") == ["alarm.raised", "alarm.cleared"]


async def test_a_step_whose_alarm_was_acknowledged_behind_its_back_is_cancelled_at_claim(
    make_hub: HubFactory, receiver: WebhookReceiver
) -> None:
    """Belt and braces: even if the acknowledgement's own cancel missed it (a hub of an older
    version acknowledged it), the worker looks at the alarm before sending."""
    async with make_hub(**FAST) as hub:
        on_call = await _channel(hub, receiver, "/on-call")
        await _policy(hub, on_call, after_s=1)
        alarm_id = await _raise(hub)
        async with hub.engine.begin() as conn:
            await conn.execute(
                update(alarms)
                .where(alarms.c.id == alarm_id)
                .values(state="acknowledged", acknowledged_by="user:old-hub")
            )
        async with api_client(hub) as api:

            async def cancelled() -> list[dict[str, Any]]:
                answer = await api.get("/api/notifications", params={"state": "cancelled"})
                return list(answer.json())

            [step] = await eventually(cancelled, "the step cancelled at claim time")
        assert step["last_error"] == f"alarm {alarm_id} was acknowledged by user:old-hub"
        assert _events(receiver, "/on-call") == ["alarm.raised"]


async def test_a_shelved_alarm_does_not_escalate_until_its_shelving_ends(
    make_hub: HubFactory, receiver: WebhookReceiver
) -> None:
    async with make_hub(**FAST) as hub:
        on_call = await _channel(hub, receiver, "/on-call")
        await _policy(hub, on_call, after_s=1)
        alarm_id = await _raise(hub)
        until = now_ms() + 3000
        await hub.alarms.shelve(alarm_id, until=until, actor="user:ann")
        step = await eventually(
            lambda: (got := receiver.to("/on-call")) and len(got) == 2 and got[1],
            "the step after the shelving",
        )
        assert step.headers["x-fieldhub-event"] == "alarm.escalated"
        assert int(step.headers["x-fieldhub-timestamp"]) * 1000 >= until - 1000


@pytest.mark.parametrize("db", DATABASES)
async def test_a_restart_between_the_raise_and_the_step_sends_the_step_once(
    make_hub: HubFactory, receiver: WebhookReceiver, db: str
) -> None:
    async with make_hub(db=db, **FAST) as hub:
        on_call = await _channel(hub, receiver, "/on-call")
        await _policy(hub, on_call, after_s=2)
        alarm_id = await _raise(hub)
        settings = hub.settings
    assert "alarm.escalated" not in _events(receiver, "/on-call")  # stopped before its time
    async with Hub(settings) as again:
        await eventually(
            lambda: "alarm.escalated" in _events(receiver, "/on-call"), "the step after restart"
        )
        await _past(1.5)  # time for a second copy, if there were one
        async with api_client(again) as api:
            sent = (await api.get("/api/notifications", params={"state": "delivered"})).json()
    assert _events(receiver, "/on-call").count("alarm.escalated") == 1
    keys = [n["dedup_key"] for n in sent if n["event"] == "alarm.escalated"]
    assert keys == [f"escalation:{alarm_id}:step:1:channel:{on_call}"]


@pytest.mark.postgres
async def test_two_hubs_on_one_database_send_each_step_once(
    make_hub: HubFactory, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    async with make_hub(db="postgres", **FAST) as first:
        on_call = await _channel(first, receiver, "/on-call")
        await _policy(first, on_call, after_s=1, repeat_every_s=1, limit=2)
        second_settings = HubSettings(
            **{
                **first.settings.model_dump(),
                "instance": f"{first.settings.instance}b",
                "data": tmp_path / "second",
            }
        )
        async with Hub(second_settings):  # its worker claims from the same outbox
            await _raise(first)
            wanted = ["alarm.raised", "alarm.escalated", "alarm.reminder", "alarm.reminder"]
            await eventually(lambda: _events(receiver, "/on-call") == wanted, "step and reminders")
            await _past(1.5)  # time for a second copy, if there were one
    assert _events(receiver, "/on-call") == wanted


async def _past(seconds: float) -> None:
    """Let ``seconds`` go by (a time that must pass, never a measure of speed)."""
    deadline = time.monotonic() + seconds
    await eventually(lambda: time.monotonic() >= deadline, f"{seconds} s", within_s=seconds + 5)
