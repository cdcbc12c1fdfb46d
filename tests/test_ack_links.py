"""Acknowledge from the message: the link an alarm notification carries acknowledges that
alarm once, as ``link:<recipient>``, with its audit entry; a GET alone changes nothing; a used
or expired link is 410, a forged one 404; refusals are counted; tokens stay out of the logs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import uvicorn

from fieldhub.clock import now_ms
from fieldhub.hub.api import create_app
from fieldhub.hub.app import Hub
from fieldhub.hub.ingest.batch import Batch
from fieldhub.hub.notify.escalation import Policy, Step
from fieldhub.hub.store.alarms import AlarmFilter
from fieldhub.protocol.messages import Event
from tests.conftest import HubFactory, api_client
from tests.support.receivers import MailBox, WebhookReceiver, smtp_server, webhook_receiver
from tests.waiting import HTTP_TIMEOUT_S, eventually

LINKS: dict[str, Any] = {"public_url": "http://hub", "notify_retry_s": 0.2}
DOOR = {"kind": "event", "match": "door.*"}
DATABASES = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with webhook_receiver() as running:
        yield running


@pytest.fixture
def mailbox() -> Iterator[tuple[MailBox, int]]:
    with smtp_server() as running:
        yield running


async def _raise(hub: Hub, escalation: str | None = None) -> int:
    await hub.devices.create("cab-1", labels={"site": "berlin"})
    rule: dict[str, Any] = {"id": "door", "name": "Door opened", "condition": DOOR}
    if escalation is not None:
        rule["escalation"] = escalation
    await hub.alarms.put_rule(rule, actor="test", create=True)
    event = Event(seq=1, ts=now_ms(), type="door.opened")
    hub.alarms.engine.committed(Batch(events=[("cab-1", now_ms(), event)]))
    await hub.alarms.engine.evaluate()
    [alarm] = await hub.alarms.find(AlarmFilter(rule="door"))
    return alarm.id


async def _link(hub: Hub, receiver: WebhookReceiver) -> tuple[int, int, str]:
    """A raised alarm, the channel that heard it and the acknowledge link it received."""
    channel = await hub.notifications.create_channel(
        "ops", "webhook", {"url": receiver.url("/ops")}, actor="test"
    )
    await hub.notifications.subscriptions.subscribe_hub_wide(channel.id, actor="test")
    alarm_id = await _raise(hub)
    [request] = await eventually(lambda: receiver.to("/ops"), "the raise notified")
    return alarm_id, channel.id, request.json()["data"]["acknowledge_url"]


@pytest.mark.parametrize("db", DATABASES)
async def test_the_link_of_a_received_webhook_acknowledges_its_alarm_once(
    make_hub: HubFactory, receiver: WebhookReceiver, db: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with make_hub(db=db, **LINKS) as hub:
        alarm_id, channel_id, url = await _link(hub, receiver)
        assert url.startswith("http://hub/ack/")
        token = url.rsplit("/", 1)[1]
        async with api_client(hub, role=None) as anyone, api_client(hub) as admin:
            for _ in range(2):  # a mail scanner's prefetch, then the person: nothing changes
                page = await anyone.get(url)
                assert page.status_code == 200
                assert "Acknowledge this alarm?" in page.text
                assert "Door opened on cab-1" in page.text
                assert '<form method="post">' in page.text
            assert (await hub.alarms.alarm(alarm_id)).state == "active"

            done = await anyone.post(url)
            assert done.status_code == 200
            assert "Acknowledged" in done.text
            alarm = await hub.alarms.alarm(alarm_id)
            assert alarm.state == "acknowledged"
            assert alarm.acknowledged_by == f"link:channel:{channel_id}"
            audit = (await admin.get("/api/audit", params={"action": "alarm.acknowledged"})).json()
            [entry] = audit["entries"] if isinstance(audit, dict) else audit
            assert entry["actor"] == f"link:channel:{channel_id}"
            assert entry["target"] == f"alarm:{alarm_id}"

            again = await anyone.post(url)
            assert again.status_code == 410
            assert "used already" in again.text
            assert (await anyone.get(url)).status_code == 410
            metrics = (await admin.get("/metrics")).text
            assert 'fieldhub_ack_link_refusals_total{reason="used"} 2.0' in metrics
    # The test's own client (httpx) logs the requests it makes; everything else is the hub's.
    hub_log = [
        r.getMessage() for r in caplog.records if not r.getMessage().startswith("HTTP Request: ")
    ]
    assert not [line for line in hub_log if token in line]


async def test_an_expired_link_is_gone_and_changes_nothing(make_hub: HubFactory) -> None:
    async with make_hub(**LINKS) as hub:
        alarm_id = await _raise(hub)
        assert hub.ack_links is not None
        long_ago = now_ms() - hub.ack_links.ttl_ms - 1000
        url = hub.ack_links.url(hub.ack_links.mint(alarm_id, "channel:1", now=long_ago))
        async with api_client(hub, role=None) as anyone:
            for answer in (await anyone.get(url), await anyone.post(url)):
                assert answer.status_code == 410
                assert "expired" in answer.text
        assert (await hub.alarms.alarm(alarm_id)).state == "active"
        assert hub.ack_links.refusals["expired"] == 2


async def test_a_tampered_or_forged_link_is_not_found_without_detail(
    make_hub: HubFactory, receiver: WebhookReceiver
) -> None:
    async with make_hub(**LINKS) as hub:
        alarm_id, _, url = await _link(hub, receiver)
        payload, mac = url.rsplit("/", 1)[1].split(".")
        flipped = "A" if payload[0] != "A" else "B"
        other_mac = "A" if mac[-1] != "A" else "B"
        forged = [
            f"{flipped}{payload[1:]}.{mac}",  # another alarm, recipient or expiry
            f"{payload}.{mac[:-1]}{other_mac}",
            "not-a-token",
            "x" * 600,
        ]
        async with api_client(hub, role=None) as anyone:
            for token in forged:
                for answer in (
                    await anyone.get(f"/ack/{token}"),
                    await anyone.post(f"/ack/{token}"),
                ):
                    assert answer.status_code == 404
                    assert "There is no page at this address." in answer.text
                    assert "signature" not in answer.text.lower()
        assert (await hub.alarms.alarm(alarm_id)).state == "active"
        assert hub.ack_links is not None
        assert hub.ack_links.refusals["forged"] == 8


async def test_a_link_to_an_alarm_someone_took_says_by_whom(
    make_hub: HubFactory, receiver: WebhookReceiver
) -> None:
    async with make_hub(**LINKS) as hub:
        alarm_id, _, url = await _link(hub, receiver)
        await hub.alarms.acknowledge(alarm_id, actor="user:ann", comment="on my way")
        async with api_client(hub, role=None) as anyone:
            for answer in (await anyone.get(url), await anyone.post(url)):
                assert answer.status_code == 200
                assert "Acknowledged by user:ann" in answer.text
        assert (await hub.alarms.alarm(alarm_id)).acknowledged_by == "user:ann"


async def test_an_escalation_email_carries_a_working_link(
    make_hub: HubFactory, mailbox: tuple[MailBox, int]
) -> None:
    box, port = mailbox
    smtp = {"smtp_host": "127.0.0.1", "smtp_port": port, "smtp_starttls": False}
    async with make_hub(**smtp, **LINKS) as hub:
        channel = await hub.notifications.create_channel(
            "on call", "email", {"to": ["oncall@example.org"]}, actor="test"
        )
        await hub.notifications.subscriptions.subscribe_hub_wide(channel.id, actor="test")
        policy = Policy("mail", "Mail", (Step(1, (channel.id,)),), None, 0)
        await hub.escalation.put(policy, actor="test", source="", create=True)
        alarm_id = await _raise(hub, escalation="mail")
        await eventually(lambda: len(box.messages) == 2, "the raise and the step by e-mail")
        step = next(m for m in box.messages if "(step 1)" in str(m["Subject"]))
        text = step.get_payload(decode=True).decode()
        [line] = [line for line in text.splitlines() if line.startswith("acknowledge_url: ")]
        url = line.removeprefix("acknowledge_url: ")
        async with api_client(hub, role=None) as anyone:
            assert (await anyone.post(url)).status_code == 200
        assert (await hub.alarms.alarm(alarm_id)).acknowledged_by == f"link:channel:{channel.id}"


async def test_the_access_log_shows_no_token(
    make_hub: HubFactory, receiver: WebhookReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="uvicorn.access")
    async with make_hub(**LINKS) as hub:
        _, _, url = await _link(hub, receiver)
        token = url.rsplit("/", 1)[1]
        # Served as ``fieldhub hub`` serves it, with uvicorn's access log on.
        config = uvicorn.Config(
            create_app(hub), host="127.0.0.1", port=0, log_level="info", log_config=None
        )
        server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve())
        await eventually(lambda: server.started, "the HTTP server")
        port = server.servers[0].sockets[0].getsockname()[1]
        try:
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}", timeout=HTTP_TIMEOUT_S
            ) as browser:
                assert (await browser.get(f"/ack/{token}")).status_code == 200
                assert (await browser.post(f"/ack/{token}")).status_code == 200
        finally:
            server.should_exit = True
            await serving
    access = [r.getMessage() for r in caplog.records if r.name == "uvicorn.access"]
    assert any('"GET /ack/<token> HTTP/1.1" 200' in line for line in access), access
    assert any('"POST /ack/<token> HTTP/1.1" 200' in line for line in access), access
    assert not [line for line in access if token in line]


async def test_without_a_public_address_there_are_no_links(
    make_hub: HubFactory, receiver: WebhookReceiver
) -> None:
    async with make_hub() as hub:
        channel = await hub.notifications.create_channel(
            "ops", "webhook", {"url": receiver.url("/ops")}, actor="test"
        )
        await hub.notifications.subscriptions.subscribe_hub_wide(channel.id, actor="test")
        await _raise(hub)
        [request] = await eventually(lambda: receiver.to("/ops"), "the raise notified")
        assert "acknowledge_url" not in request.json()["data"]
        async with api_client(hub, role=None) as anyone:
            assert (await anyone.get("/ack/anything.at-all")).status_code == 404
