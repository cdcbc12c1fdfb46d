"""Notifications end to end against real parts: a real HTTP receiver, a real SMTP server
(aiosmtpd), SQLite and PostgreSQL. Given a channel, when something is enqueued, then the
far side gets it once, signed, retried through failures, and the outbox says what happened."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from fieldhub.clock import now_ms
from fieldhub.hub.app import Hub
from fieldhub.hub.config import HubSettings
from fieldhub.hub.notify import NewNotification, enqueue
from fieldhub.hub.notify.outbox import prune
from fieldhub.hub.notify.records import NotificationNotFound, NotificationRecord
from fieldhub.hub.notify.worker import DeliverySettings, retry_delay_s
from fieldhub.hub.store.schema import notification_deliveries
from fieldhub.mqtt import MqttClient
from tests.support.receivers import HANG, MailBox, WebhookReceiver, smtp_server, webhook_receiver
from tests.support.servers import free_port
from tests.waiting import eventually

SECRET = "s3cret-for-tests"
FAST = {"notify_retry_s": 0.05, "notify_retry_max_s": 0.2, "notify_timeout_s": 2.0}


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with webhook_receiver() as running:
        yield running


@pytest.fixture
def mailbox() -> Iterator[tuple[MailBox, int]]:
    with smtp_server() as running:
        yield running


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
async def hub(request: pytest.FixtureRequest, make_hub: Any) -> AsyncIterator[Hub]:
    """A hub on either database that retries fast."""
    async with make_hub(db=request.param, **FAST) as running:
        yield running


async def webhook(hub: Hub, receiver: WebhookReceiver, path: str = "/hook", **config: Any) -> int:
    channel = await hub.notifications.create_channel(
        f"hook {path}",
        "webhook",
        {"url": receiver.url(path), "secret": SECRET, **config},
        actor="test",
    )
    return channel.id


def item(channel_id: int, key: str, **body: Any) -> NewNotification:
    return NewNotification(
        channel_id=channel_id,
        dedup_key=key,
        event="alarm.raised",
        subject=f"door open: {key}",
        body={"device": "atm-1", **body},
    )


async def settled(hub: Hub, state: str, within_s: float = 10.0) -> NotificationRecord:
    """The one notification of the test, once it reached ``state``."""

    async def check() -> NotificationRecord | None:
        found = await hub.notifications.notifications()
        return found[0] if found and found[0].state == state else None

    result: NotificationRecord = await eventually(check, f"a notification {state}", within_s)
    return result


# -- webhooks -------------------------------------------------------------------------------------
async def test_a_webhook_is_delivered_signed_and_logged(hub: Hub, receiver: WebhookReceiver):
    channel_id = await webhook(hub, receiver)

    assert await hub.notifications.enqueue([item(channel_id, "alarm-1:raised", value=31.5)]) == 1

    delivered = await settled(hub, "delivered")
    [request] = receiver.to("/hook")
    headers = request.headers
    assert request.method == "POST"
    assert headers["content-type"] == "application/json"
    assert headers["x-fieldhub-event"] == "alarm.raised"
    assert headers["x-fieldhub-delivery"] == delivered.id
    timestamp = headers["x-fieldhub-timestamp"]
    assert abs(int(timestamp) - time.time()) < 60
    # The receiver's check, as docs/notifications.md shows it.
    expected = hmac.new(SECRET.encode(), f"{timestamp}.".encode() + request.body, hashlib.sha256)
    assert hmac.compare_digest(headers["x-fieldhub-signature"], "sha256=" + expected.hexdigest())
    assert request.json() == {
        "id": delivered.id,
        "event": "alarm.raised",
        "subject": "door open: alarm-1:raised",
        "created_at": delivered.created_at,
        "data": {"device": "atm-1", "value": 31.5},
    }
    record, log = await hub.notifications.notification(delivered.id)
    assert record.attempts == 1
    assert record.delivered_at is not None
    assert [(d.ok, d.status) for d in log] == [(True, "200")]


async def test_a_failing_endpoint_is_retried_until_it_answers(hub: Hub, receiver: WebhookReceiver):
    receiver.script["/hook"] = [500, 503, 200]
    channel_id = await webhook(hub, receiver)

    await hub.notifications.enqueue([item(channel_id, "k")])

    delivered = await settled(hub, "delivered")
    _, log = await hub.notifications.notification(delivered.id)
    assert [(d.ok, d.status) for d in log] == [(False, "500"), (False, "503"), (True, "200")]
    assert "HTTP 500" in log[0].error
    assert all(d.latency_ms >= 0 for d in log)
    assert delivered.attempts == 3
    ids = {r.headers["x-fieldhub-delivery"] for r in receiver.to("/hook")}
    assert ids == {delivered.id}  # the same delivery id on every retry


async def test_a_client_error_is_dead_at_once_but_429_is_retried(
    hub: Hub, receiver: WebhookReceiver
):
    receiver.script["/gone"] = [404]
    receiver.script["/busy"] = [429, 200]
    gone = await webhook(hub, receiver, "/gone")
    busy = await webhook(hub, receiver, "/busy")

    await hub.notifications.enqueue([item(gone, "a"), item(busy, "b")])

    async def states() -> dict[int, str] | None:
        found = {n.channel_id: n.state for n in await hub.notifications.notifications()}
        return found if found == {gone: "dead", busy: "delivered"} else None

    await eventually(states, "404 dead and 429 then delivered")
    [dead] = await hub.notifications.notifications(state="dead")
    assert dead.attempts == 1
    assert "HTTP 404" in dead.last_error
    assert len(receiver.to("/gone")) == 1
    assert len(receiver.to("/busy")) == 2


async def test_a_notification_is_dead_after_the_attempt_limit(
    make_hub: Any, receiver: WebhookReceiver
):
    receiver.script["/down"] = [500] * 10
    async with make_hub(notify_max_attempts=3, **FAST) as hub:
        channel_id = await webhook(hub, receiver, "/down")
        await hub.notifications.enqueue([item(channel_id, "k")])
        dead = await settled(hub, "dead")
    assert dead.attempts == 3
    assert len(receiver.to("/down")) == 3


async def test_a_hanging_endpoint_does_not_delay_another_channel(
    make_hub: Any, receiver: WebhookReceiver
):
    receiver.script["/slow"] = [HANG, HANG, HANG]
    async with make_hub(**{**FAST, "notify_timeout_s": 3.0, "notify_retry_s": 30.0}) as hub:
        slow = await webhook(hub, receiver, "/slow")
        fast = await webhook(hub, receiver, "/fast")
        await hub.notifications.enqueue([item(slow, "slow")])
        await eventually(lambda: receiver.to("/slow"), "the slow endpoint called")
        started = time.monotonic()

        await hub.notifications.enqueue([item(fast, "fast")])

        await eventually(lambda: receiver.to("/fast"), "the fast endpoint called", 2.0)
        assert time.monotonic() - started < 1.0  # not after the slow one's 3 s timeout
        _, log = await hub.notifications.notification(
            (await hub.notifications.notifications(channel_id=slow))[0].id
        )
        assert log == []  # the slow one is still waiting for its answer

        async def slow_failed() -> Any:
            [n] = await hub.notifications.notifications(channel_id=slow)
            return n.attempts == 1 and n

        timed_out = await eventually(slow_failed, "the slow attempt timed out", 6.0)
    assert timed_out.state == "pending"
    assert "no answer within 3 s" in timed_out.last_error


async def test_the_same_dedup_key_twice_is_one_delivery(hub: Hub, receiver: WebhookReceiver):
    channel_id = await webhook(hub, receiver)

    assert await hub.notifications.enqueue([item(channel_id, "alarm-7:raised")]) == 1
    assert await hub.notifications.enqueue([item(channel_id, "alarm-7:raised")]) == 0
    # ... also within one batch, and inside a caller's own write job (the alarms engine's way)
    in_job = await hub.notifications._writes.run(
        lambda conn: enqueue(
            conn, [item(channel_id, "alarm-7:raised"), item(channel_id, "alarm-7:raised")], now=1
        )
    )
    assert in_job == 0

    await settled(hub, "delivered")
    await asyncio.sleep(0.3)
    assert len(receiver.to("/hook")) == 1
    assert len(await hub.notifications.notifications()) == 1


async def test_a_held_notification_waits_until_its_time_then_is_sent(
    hub: Hub, receiver: WebhookReceiver
):
    channel_id = await webhook(hub, receiver)
    due = now_ms() + 1500
    sent_from = time.monotonic() + 1.4
    held = NewNotification(
        channel_id=channel_id,
        dedup_key="held",
        event="alarm.raised",
        subject="after the window",
        body={},
        not_before=due,
    )
    await hub.notifications.enqueue([held, item(channel_id, "now")])

    await eventually(lambda: len(receiver.to("/hook")) >= 1, "the one not held is sent")
    assert [r.json()["subject"] for r in receiver.to("/hook")] == ["door open: now"]
    await eventually(lambda: len(receiver.to("/hook")) == 2, "the held one, later")
    assert receiver.to("/hook")[1].json()["subject"] == "after the window"
    assert receiver.to("/hook")[1].at >= sent_from


async def test_a_storm_enqueued_in_one_job_is_stored_once_per_key(hub: Hub):
    channel = await hub.notifications.create_channel(
        "held", "webhook", {"url": "http://127.0.0.1:9/"}, enabled=False, actor="test"
    )
    items = [item(channel.id, f"alarm-{n}:raised") for n in range(1200)]

    added = await hub.notifications._writes.run(lambda conn: enqueue(conn, items + items[:300]))

    assert added == 1200
    assert len(await hub.notifications.notifications(limit=1000)) == 1000
    assert await hub.notifications.enqueue(items[1100:]) == 0


async def test_finished_notifications_are_pruned_with_their_logs_pending_ones_kept(
    hub: Hub, receiver: WebhookReceiver
):
    receiver.script["/gone"] = [404]
    done = await webhook(hub, receiver)
    gone = await webhook(hub, receiver, "/gone")
    held = await hub.notifications.create_channel(
        "held", "webhook", {"url": "http://127.0.0.1:9/"}, enabled=False, actor="test"
    )
    await hub.notifications.enqueue([item(done, "a"), item(gone, "b"), item(held.id, "c")])

    async def finished() -> bool:
        states = sorted(n.state for n in await hub.notifications.notifications())
        return states == ["dead", "delivered", "pending"]

    await eventually(finished, "one delivered, one dead, one held")
    run = hub.notifications._writes.run
    assert await run(lambda conn: prune(conn, before=1)) == 0  # nothing that old
    delivered_id = (await hub.notifications.notifications(state="delivered"))[0].id

    assert await run(lambda conn: prune(conn, before=now_ms() + 1, limit=1)) == 1
    assert await run(lambda conn: prune(conn, before=now_ms() + 1)) == 1

    [left] = await hub.notifications.notifications()
    assert left.state == "pending"
    with pytest.raises(NotificationNotFound):
        await hub.notifications.notification(delivered_id)
    log_rows = await run(
        lambda conn: conn.execute(
            select(func.count()).select_from(notification_deliveries)
        ).scalar()
    )
    assert log_rows == 0


async def test_enqueued_in_a_transaction_that_fails_is_never_sent(
    hub: Hub, receiver: WebhookReceiver
):
    channel_id = await webhook(hub, receiver)

    def job(conn: Any) -> None:
        enqueue(conn, [item(channel_id, "rolled-back")], now=1)
        raise RuntimeError("the alarm change failed")

    with pytest.raises(RuntimeError):
        await hub.notifications._writes.run(job)
    hub.notifications.wake()
    await asyncio.sleep(0.3)
    assert await hub.notifications.notifications() == []
    assert receiver.requests == []


async def test_pending_notifications_are_delivered_once_after_a_restart(
    make_hub: Any, receiver: WebhookReceiver, tmp_path: Path
):
    receiver.script["/hook"] = [503] * 1000  # down while the first hub runs
    data = tmp_path / "restart"
    async with make_hub(data=data, **{**FAST, "notify_max_attempts": 1000}) as first:
        channel_id = await webhook(first, receiver)
        await first.notifications.enqueue([item(channel_id, "k")])
        await eventually(lambda: receiver.to("/hook"), "a first attempt")
    tries = len(receiver.to("/hook"))
    receiver.script["/hook"] = []  # back: answers 200

    async with make_hub(data=data, **FAST) as second:
        delivered = await settled(second, "delivered")
        await asyncio.sleep(0.3)
    ok = receiver.to("/hook")[tries:]
    assert len(ok) == 1
    assert ok[0].headers["x-fieldhub-delivery"] == delivered.id


async def test_a_notification_handed_with_its_enqueue_is_sent_at_once_and_another_hubs_waits(
    hub: Hub, receiver: WebhookReceiver
):
    """An alarm change's notification is enqueued leased to the hub that wrote the change
    (outbox.py): that hub sends it at once, without a claim and long before the lease runs
    out; one leased to another hub stays that hub's."""
    channel_id = await webhook(hub, receiver)
    now = now_ms()
    mine, theirs = hub.notifications.worker.lease(now), ("other-hub", now + 60_000)

    def job(conn: Any) -> None:
        enqueue(conn, [item(channel_id, "mine")], now=now, lease=mine)
        enqueue(conn, [item(channel_id, "theirs")], now=now, lease=theirs)

    await hub.notifications._writes.run(job)
    hub.notifications.wake()
    # Its lease runs 40 s (the send's limit and a margin): only the handed read sends it now.
    await eventually(lambda: receiver.to("/hook"), "the handed notification sent", within_s=5)
    await asyncio.sleep(0.5)  # a second request, if any, would be in by now
    assert [r.json()["subject"] for r in receiver.to("/hook")] == ["door open: mine"]
    found = {n.dedup_key: n for n in await hub.notifications.notifications()}
    assert (found["mine"].state, found["mine"].attempts) == ("delivered", 1)
    assert (found["theirs"].state, found["theirs"].attempts) == ("pending", 0)


async def test_a_send_cut_off_by_a_stop_is_sent_again_at_the_next_start(
    make_hub: Any, receiver: WebhookReceiver, tmp_path: Path
):
    """The documented window: the hub stopped while the receiver held the request. The
    notification stays pending and goes out at the next start, with the same delivery id."""
    receiver.script["/hook"] = [HANG]
    data = tmp_path / "cut"
    settings = {**FAST, "notify_timeout_s": 30.0}
    async with make_hub(data=data, **settings) as first:
        channel_id = await webhook(first, receiver)
        await first.notifications.enqueue([item(channel_id, "k")])
        await eventually(lambda: receiver.to("/hook"), "the request held")

    async with make_hub(data=data, **settings) as second:
        started = time.monotonic()
        delivered = await settled(second, "delivered")
        assert time.monotonic() - started < 5  # its lease was this instance's: due at once
    first_try, second_try = receiver.to("/hook")
    assert first_try.headers["x-fieldhub-delivery"] == delivered.id
    assert second_try.headers["x-fieldhub-delivery"] == delivered.id


async def test_a_disabled_channel_holds_its_notifications_until_enabled(
    hub: Hub, receiver: WebhookReceiver
):
    channel_id = await webhook(hub, receiver)
    await hub.notifications.update_channel(channel_id, enabled=False, actor="test")
    await hub.notifications.enqueue([item(channel_id, "k")])
    await asyncio.sleep(0.3)
    assert receiver.requests == []
    assert (await hub.notifications.notifications())[0].state == "pending"

    await hub.notifications.update_channel(channel_id, enabled=True, actor="test")

    await settled(hub, "delivered")


# -- e-mail ----------------------------------------------------------------------------------------
async def test_an_email_arrives_with_subject_and_body(make_hub: Any, mailbox: tuple[MailBox, int]):
    box, port = mailbox
    smtp = {"smtp_host": "127.0.0.1", "smtp_port": port, "smtp_starttls": False}
    async with make_hub(smtp_from="hub@example.org", **smtp, **FAST) as hub:
        channel = await hub.notifications.create_channel(
            "ops mail", "email", {"to": ["ops@example.org", "oncall@example.org"]}, actor="test"
        )
        await hub.notifications.enqueue([item(channel.id, "k", temperature=71.5)])
        delivered = await settled(hub, "delivered")
        _, log = await hub.notifications.notification(delivered.id)

    [message] = box.messages
    assert message["Subject"] == "door open: k"
    assert message["From"] == "hub@example.org"
    assert message["X-Fieldhub-Delivery"] == delivered.id
    assert box.envelopes == [("hub@example.org", ["ops@example.org", "oncall@example.org"])]
    text = message.get_payload(decode=True).decode()
    assert "device: atm-1" in text
    assert "temperature: 71.5" in text
    assert [(d.ok, d.status) for d in log] == [(True, "250")]


async def test_a_webhook_answer_with_a_large_body_is_not_read(hub: Hub, receiver: WebhookReceiver):
    receiver.big_body = 50 * 1024 * 1024  # announced, and sent until the client goes away
    channel_id = await webhook(hub, receiver)
    await hub.notifications.enqueue([item(channel_id, "k")])
    delivered = await settled(hub, "delivered")
    assert delivered.attempts == 1


async def test_an_smtp_server_that_refuses_is_retried_and_logged(
    make_hub: Any, mailbox: tuple[MailBox, int]
):
    box, port = mailbox
    box.refuse = 2
    smtp = {"smtp_host": "127.0.0.1", "smtp_port": port, "smtp_starttls": False}
    async with make_hub(**smtp, **FAST) as hub:
        channel = await hub.notifications.create_channel(
            "ops mail", "email", {"to": ["ops@example.org"]}, actor="test"
        )
        await hub.notifications.enqueue([item(channel.id, "k")])
        delivered = await settled(hub, "delivered")
        _, log = await hub.notifications.notification(delivered.id)

    assert box.refused == 2
    assert len(box.messages) == 1
    assert [(d.ok, d.status) for d in log] == [(False, "451"), (False, "451"), (True, "250")]
    assert "try again later" in log[0].error


async def test_an_unreachable_smtp_server_is_retried_and_its_password_never_shown(
    make_hub: Any, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG)
    smtp = {
        "smtp_host": "127.0.0.1",
        "smtp_port": free_port(),
        "smtp_starttls": False,
        "smtp_user": "fieldhub",
        "smtp_password": "smtp-password-never-shown",
    }
    async with make_hub(notify_max_attempts=2, **smtp, **FAST) as hub:
        assert "smtp-password-never-shown" not in repr(hub.settings)
        channel = await hub.notifications.create_channel(
            "ops mail", "email", {"to": ["ops@example.org"]}, actor="test"
        )
        await hub.notifications.enqueue([item(channel.id, "k")])
        dead = await settled(hub, "dead")
        _, log = await hub.notifications.notification(dead.id)
    assert len(log) == 2
    assert not any(d.ok for d in log)
    assert log[0].error  # says why (connection refused)
    assert "smtp-password-never-shown" not in caplog.text
    assert all("smtp-password-never-shown" not in d.error for d in log)


def test_retries_wait_doubling_with_jitter_up_to_the_ceiling():
    settings = DeliverySettings(retry_s=5.0, retry_max_s=600.0)
    rng = random.Random(7)
    for failures, ceiling in [(1, 5.0), (2, 10.0), (3, 20.0), (7, 320.0), (8, 600.0), (90, 600.0)]:
        waits = [retry_delay_s(failures, settings, rng) for _ in range(200)]
        assert all(ceiling / 2 <= wait <= ceiling for wait in waits), failures
        assert max(waits) - min(waits) > ceiling / 4  # spread: no thundering herd


# -- MQTT ------------------------------------------------------------------------------------------
async def test_an_mqtt_notification_is_published_on_the_embedded_broker(make_hub: Any):
    async with make_hub(**FAST) as hub:
        channel = await hub.notifications.create_channel(
            "ops topic", "mqtt", {"topic": "ops/alarms"}, actor="test"
        )
        await hub.notifications.enqueue([item(channel.id, "k")])
        delivered = await settled(hub, "delivered")
        _, log = await hub.notifications.notification(delivered.id)
        assert hub.broker is not None
        violations = hub.broker.violations
    assert [(d.ok, d.status) for d in log] == [(True, "puback")]
    assert not violations  # the hub may publish under fh/notify/


@pytest.mark.mosquitto
async def test_an_mqtt_notification_reaches_a_subscriber_on_mosquitto(
    make_hub: Any, mosquitto: Any
):
    received: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
    reader = MqttClient(
        mosquitto.host,
        mosquitto.port,
        client_id="notify-reader",
        username=mosquitto.admin_username,
        password=mosquitto.admin_password,
        on_message=lambda topic, payload: received.put_nowait((topic, payload)),
    )
    await reader.connect()
    try:
        await reader.subscribe([("fh/notify/#", 1)])
        async with make_hub(broker="mosquitto", **FAST) as hub:
            channel = await hub.notifications.create_channel(
                "ops topic", "mqtt", {"topic": "ops/alarms"}, actor="test"
            )
            await hub.notifications.enqueue([item(channel.id, "k")])
            delivered = await settled(hub, "delivered")
            topic, payload = await asyncio.wait_for(received.get(), 10)
    finally:
        await reader.close()
    assert topic == "fh/notify/ops/alarms"
    message = json.loads(payload)
    assert message["id"] == delivered.id
    assert message["event"] == "alarm.raised"
    assert message["data"] == {"device": "atm-1"}


# -- stopping, and several hubs ------------------------------------------------------------------
async def test_a_stopping_hub_lets_a_send_under_way_finish_and_records_it(
    make_hub: Any, receiver: WebhookReceiver, tmp_path: Path
):
    receiver.delay_s = 0.5  # answers 200, slowly
    data = tmp_path / "stop"
    async with make_hub(data=data, **FAST) as first:
        channel_id = await webhook(first, receiver)
        await first.notifications.enqueue([item(channel_id, "k")])
        await eventually(lambda: receiver.to("/hook"), "the request under way")
    # stopped while the receiver was still answering: the answer came within the grace

    receiver.delay_s = 0.0
    async with make_hub(data=data, **FAST) as second:
        [done] = await second.notifications.notifications()
        await asyncio.sleep(0.3)
    assert done.state == "delivered"
    assert len(receiver.to("/hook")) == 1  # recorded before the stop: not sent again


@pytest.mark.postgres
async def test_two_hubs_on_one_database_deliver_each_notification_once(
    postgres: Any, receiver: WebhookReceiver, tmp_path: Path, uid: str
):
    url = await asyncio.to_thread(postgres.create_database, f"two_{uid}")
    receiver.delay_s = 0.02

    def settings(name: str) -> HubSettings:
        return HubSettings(
            data=tmp_path / name,
            instance=f"{name}{uid}",
            mqtt="127.0.0.1:0",
            http="127.0.0.1:0",
            db=url,
            **FAST,
        )

    async with Hub(settings("a")) as a, Hub(settings("b")) as b:
        channel_id = await webhook(a, receiver)
        await a.notifications.enqueue([item(channel_id, f"k{n}") for n in range(60)])
        b.notifications.wake()  # both claim at once

        async def all_delivered() -> bool:
            found = await a.notifications.notifications(state="delivered", limit=100)
            return len(found) == 60

        await eventually(all_delivered, "60 notifications delivered")
        counts = (a.notifications.worker.counts.delivered, b.notifications.worker.counts.delivered)
    ids = [r.headers["x-fieldhub-delivery"] for r in receiver.to("/hook")]
    assert len(ids) == 60
    assert len(set(ids)) == 60
    assert sum(counts) == 60
    assert min(counts) > 0  # both hubs took a share
