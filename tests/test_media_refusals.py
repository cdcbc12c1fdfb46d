"""Every bad upload of issue 15 is refused with its status and code, counted, and leaves
nothing partial on disk: real HTTP to the hub's API, real MQTT for the URLs."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from typing import Any

import httpx
import pytest
import uvicorn

from fieldhub.clock import now_ms
from fieldhub.hub.api import create_app
from fieldhub.hub.app import Hub
from fieldhub.protocol import MediaRef, Upload
from tests.conftest import DeviceFactory, HubFactory, api_client
from tests.media_support import (
    announce,
    ask,
    http_of,
    listen_media,
    partials,
    picture,
    ref,
    url_for,
)
from tests.waiting import HTTP_TIMEOUT_S, eventually


async def test_bad_uploads_are_refused_counted_and_leave_nothing_behind(
    make_hub: HubFactory, connect_device: DeviceFactory, media_store: dict[str, Any]
) -> None:
    image = picture(64, 48)
    text = b"not a picture at all, though it says so" * 4
    impostor = os.urandom(len(image))
    filler = os.urandom(9500)  # fits an empty store (10,000), not one holding the picture
    big = MediaRef(
        sha256=hashlib.sha256(b"x").hexdigest(), size=len(image), type="image/jpeg", name="a.jpg"
    )
    async with make_hub(media_quota_bytes=10_000, **media_store) as hub, http_of(hub):
        camera = await connect_device(hub, "cam", site="berlin")
        other = await connect_device(hub, "other", site="berlin")
        for device in (camera, other):
            await listen_media(device)
        lying = ref(text, "image/png", "lie.png")
        await announce(camera, 1, ref(image), lying, big, ref(filler, "application/octet-stream"))
        await announce(other, 1, ref(image, name="theirs.jpg"))

        async def put(sha256: str, body: bytes, **headers: str) -> httpx.Response:
            answer = await url_for(camera, sha256)
            assert answer.url is not None, answer
            async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_S) as client:
                return await client.put(answer.url, content=body, headers=headers)

        # More bytes than announced: 413.
        assert (await put(big.sha256, image + b"more")).status_code == 413
        # Announced as PNG, but the bytes are text: 415 (the name and header say nothing).
        answer = await put(lying.sha256, text, **{"Content-Type": "image/png"})
        assert answer.status_code == 415
        assert "not image/png" in answer.json()["detail"]
        # The right size but other bytes than the hash promised: 422, the partial discarded.
        mismatch = await put(big.sha256, impostor)
        assert mismatch.status_code == 422
        assert mismatch.json()["detail"][0]["type"] == "hash_mismatch"  # the API's 422 shape
        assert partials(hub) == []

        # A URL asked for while there was room: by the time of the upload there is none.
        late = (await url_for(camera, ref(filler).sha256)).url
        assert late is not None
        good = ref(image)
        url = (await url_for(camera, good.sha256)).url
        assert url is not None
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_S) as client:
            # Another device's path with this URL's signature: 404, as for a made-up URL.
            stolen = url.replace(camera.device_id, other.device_id)
            assert (await client.put(stolen, content=image)).status_code == 404
            assert (await client.put(url[:-2] + "xx", content=image)).status_code == 404
            # An expired URL: 410.
            expired = hub.media.uploads.links.mint(
                camera.device_id, good.sha256, now_ms() - 700_000
            )
            assert (await client.put(expired.url, content=image)).status_code == 410
            assert (await client.put(url, content=image)).status_code == 201
            # Used already (the object is complete): 410.
            assert (await client.put(url, content=image)).status_code == 410
            # The store is nearly full now: the object does not fit (507), nothing is kept.
            assert (await client.put(late, content=filler)).status_code == 507
        assert partials(hub) == []

        assert hub.media.uploads.refusals == {
            "too_large": 1,
            "wrong_type": 1,
            "hash_mismatch": 1,
            "forged_url": 2,
            "expired_url": 1,
            "already_complete": 1,
            "quota": 1,
        }
        async with api_client(hub, "admin") as admin:
            metrics = (await admin.get("/metrics")).text
        assert 'fieldhub_media_refusals_total{code="forged_url"} 2.0' in metrics


async def test_the_access_log_shows_no_upload_signature(
    hub: Hub, connect_device: DeviceFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="uvicorn.access")
    camera = await connect_device(hub, "cam")
    await listen_media(camera)
    data = picture(16, 16)
    await announce(camera, 1, ref(data))
    # Served as ``fieldhub hub`` serves it, with uvicorn's access log on.
    config = uvicorn.Config(
        create_app(hub), host="127.0.0.1", port=0, log_level="info", log_config=None
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    await eventually(lambda: server.started, "the HTTP server")
    hub.media.uploads.links.base_url = (
        f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    )
    try:
        url = (await url_for(camera, ref(data).sha256)).url
        assert url is not None
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_S) as device_http:
            assert (await device_http.put(url, content=data)).status_code == 201
    finally:
        server.should_exit = True
        await serving
    signature = url.rsplit("sig=", 1)[1]
    access = [r.getMessage() for r in caplog.records if r.name == "uvicorn.access"]
    assert any("sig=<sig>" in line and '" 201' in line for line in access), access
    assert not [line for line in access if signature in line]


async def test_uploads_under_way_at_once_cannot_overrun_the_quota(
    make_hub: HubFactory, connect_device: DeviceFactory
) -> None:
    first, second = os.urandom(300), os.urandom(300)  # each fits the store; both do not
    async with make_hub(media_quota_bytes=500) as hub:
        camera = await connect_device(hub, "cam")
        await listen_media(camera)
        a, b = ref(first, "application/octet-stream"), ref(second, "application/octet-stream")
        await announce(camera, 1, a, b)
        assert (await ask(camera, Upload(sha256=a.sha256, offset=0, data=first[:150]))).received
        assert (await ask(camera, Upload(sha256=b.sha256, offset=0, data=second[:150]))).received
        assert (await ask(camera, Upload(sha256=a.sha256, offset=150, data=first[150:]))).done
        full = await ask(camera, Upload(sha256=b.sha256, offset=150, data=second[150:]))
        assert full.error == "quota"
        assert partials(hub) == []  # the second copy went with the refusal
        assert hub.media.files.used == 300
