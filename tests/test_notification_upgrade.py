"""The upgrade to subscriptions: a channel made before them keeps hearing every alarm raised
and cleared (the migration gives it a hub-wide catch-all), on both databases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from fieldhub.clock import now_ms
from fieldhub.hub.app import Hub
from fieldhub.hub.auth.rules import principal_for
from fieldhub.hub.config import HubSettings
from fieldhub.hub.ingest.batch import Batch
from fieldhub.hub.store.database import migrate
from fieldhub.hub.store.schema import notification_channels
from fieldhub.protocol import Event
from tests.support.receivers import WebhookReceiver, webhook_receiver
from tests.waiting import eventually

ADMIN = principal_for(via="session", user_id=1, name="root", role="admin", sites=[])


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with webhook_receiver() as running:
        yield running


async def test_a_channel_from_before_the_upgrade_keeps_hearing_every_alarm(
    empty_engine: AsyncEngine, receiver: WebhookReceiver, tmp_path: Path, uid: str
) -> None:
    await migrate(empty_engine, "0007")  # the release before subscriptions
    async with empty_engine.begin() as conn:
        await conn.execute(
            insert(notification_channels).values(
                name="old hook",
                kind="webhook",
                config={"url": receiver.url("/old"), "secret": ""},
                enabled=True,
                created_at=now_ms(),
                created_by="user:admin",
            )
        )
    settings = HubSettings(
        data=tmp_path / "data",
        db=empty_engine.url.render_as_string(hide_password=False),
        instance=f"t{uid}",
        mqtt="127.0.0.1:0",
        http="127.0.0.1:0",
        notify_retry_s=0.2,
    )
    async with Hub(settings) as hub:  # migrates to the newest schema on start
        [subscription] = await hub.notifications.subscriptions.list(ADMIN)
        assert subscription.owner_id is None  # hub-wide: every site
        assert subscription.changes == ("raised", "cleared")
        await hub.devices.create("cab-1", labels={"site": "anywhere"})
        rule = {"id": "door", "condition": {"kind": "event", "match": "door.*"}}
        await hub.alarms.put_rule({**rule, "clearable_by_user": True}, actor="t", create=True)
        at = now_ms()
        event = Event(seq=1, ts=at, type="door.opened", message="open")
        hub.alarms.engine.committed(Batch(events=[("cab-1", at, event)]))
        await hub.alarms.engine.evaluate()
        [request] = await eventually(lambda: receiver.to("/old"), "the old channel notified")
    assert request.json()["subject"] == "[WARNING] door on cab-1: raised"
