"""Media in alarm notifications: the alarm a stranger's picture raises carries a signed,
expiring link to the picture, in the webhook's body and in the e-mail; the link downloads the
picture (404 while it is still coming), and nothing else: a changed or expired link is refused
and counted."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from fieldhub.clock import now_ms
from fieldhub.hub.app import Hub
from tests.conftest import DeviceFactory, HubFactory, api_client
from tests.device_client import TestDevice
from tests.media_support import announce, http_of, listen_media, picture, ref, url_for
from tests.support.receivers import MailBox, WebhookReceiver, smtp_server, webhook_receiver
from tests.waiting import HTTP_TIMEOUT_S, eventually

STRANGER = {
    "id": "stranger",
    "name": "Stranger at the cabinet",
    "condition": {"kind": "event", "match": "stranger.*"},
}
DATABASES = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=[pytest.mark.postgres, pytest.mark.slow]),
]


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with webhook_receiver() as running:
        yield running


@pytest.fixture
def mailbox() -> Iterator[tuple[MailBox, int]]:
    with smtp_server() as running:
        yield running


async def _subscribed(hub: Hub, kind: str, config: dict[str, Any]) -> None:
    channel = await hub.notifications.create_channel("ops", kind, config, actor="test")
    await hub.notifications.subscriptions.subscribe_hub_wide(channel.id, actor="test")
    await hub.alarms.put_rule(STRANGER, actor="test", create=True)


async def _upload(camera: TestDevice, data: bytes) -> None:
    answer = await url_for(camera, ref(data).sha256)
    assert answer.url is not None
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_S) as device_http:
        put = await device_http.put(answer.url, content=data)
    assert put.status_code == 201, put.text


@pytest.mark.parametrize("db", DATABASES)
async def test_the_webhook_of_a_strangers_alarm_links_the_picture(
    make_hub: HubFactory, connect_device: DeviceFactory, receiver: WebhookReceiver, db: str
) -> None:
    async with make_hub(db=db, notify_retry_s=0.2) as hub, http_of(hub) as base:
        await _subscribed(hub, "webhook", {"url": receiver.url("/ops")})
        camera = await connect_device(hub, "cam", site="berlin")
        await listen_media(camera)
        data = picture()
        await announce(camera, 1, ref(data, name="stranger.jpg"))
        [request] = await eventually(lambda: receiver.to("/ops"), "the raise notified")
        body = request.json()["data"]
        assert body["change"] == "raised"
        [linked] = body["media"]
        assert (linked["name"], linked["type"], linked["size"]) == (
            "stranger.jpg",
            "image/jpeg",
            len(data),
        )
        url = linked["url"]
        assert url.startswith(f"{base}/api/media-links/{camera.device_id}/{ref(data).sha256}?")

        async with httpx.AsyncClient(
            timeout=HTTP_TIMEOUT_S
        ) as recipient:  # no session: the link is the credential
            coming = await recipient.get(url)
            assert coming.status_code == 404  # the picture follows its event
            await _upload(camera, data)
            got = await recipient.get(url)
            assert got.status_code == 200
            assert got.content == data
            assert got.headers["content-type"] == "image/jpeg"

            forged = url.replace("sig=", "sig=x")
            other = url.replace(camera.device_id, f"{camera.device_id}x")
            upload_path = url.replace("/api/media-links/", "/api/uploads/")  # not an upload URL
            assert (await recipient.get(forged)).status_code == 404
            assert (await recipient.get(other)).status_code == 404
            assert (await recipient.put(upload_path, content=data)).status_code == 404
            path = urlsplit(url).path
            expired = hub.media.links.mint_download(camera.device_id, path[-64:], now_ms() - 1)
            assert (await recipient.get(expired)).status_code == 410
        async with api_client(hub) as admin:
            metrics = (await admin.get("/metrics")).text
        assert 'fieldhub_media_refusals_total{code="download_forged"} 2.0' in metrics
        assert 'fieldhub_media_refusals_total{code="download_expired"} 1.0' in metrics


async def test_the_email_of_a_strangers_alarm_links_the_picture(
    make_hub: HubFactory, connect_device: DeviceFactory, mailbox: tuple[MailBox, int]
) -> None:
    box, port = mailbox
    smtp = {"smtp_host": "127.0.0.1", "smtp_port": port, "smtp_starttls": False}
    async with make_hub(notify_retry_s=0.2, **smtp) as hub, http_of(hub):
        await _subscribed(hub, "email", {"to": ["oncall@example.org"]})
        camera = await connect_device(hub, "cam", site="berlin")
        await listen_media(camera)
        data = picture(320, 240)
        await announce(camera, 1, ref(data))
        await _upload(camera, data)
        await eventually(lambda: box.messages, "the raise by e-mail")
        text = box.messages[0].get_payload(decode=True).decode()
        [line] = [line for line in text.splitlines() if line.startswith("media: ")]
        [linked] = json.loads(line.removeprefix("media: "))
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_S) as recipient:
            got = await recipient.get(linked["url"])
        assert got.status_code == 200
        assert got.content == data


async def test_an_alarm_raised_without_media_lists_none(
    make_hub: HubFactory, connect_device: DeviceFactory, receiver: WebhookReceiver
) -> None:
    async with make_hub(notify_retry_s=0.2) as hub:
        await _subscribed(hub, "webhook", {"url": receiver.url("/ops")})
        camera = await connect_device(hub, "cam", site="berlin")
        await announce(camera, 1)
        [request] = await eventually(lambda: receiver.to("/ops"), "the raise notified")
        assert "media" not in request.json()["data"]
