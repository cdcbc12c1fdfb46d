"""Media attached to events, end to end: a device announces a picture with an event, asks for
an upload URL over MQTT, uploads over real HTTP, and users of its site see and download it."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image

from fieldhub.clock import now_ms
from fieldhub.hub.app import Hub
from fieldhub.hub.broker.dynsec import DynSec, device_role, device_role_acls
from fieldhub.hub.broker.keyring import MqttIdentity
from fieldhub.hub.config import HubSettings
from fieldhub.hub.media.files import backup_elsewhere, backup_folders
from fieldhub.hub.media.uploads import FLUSH_BYTES
from fieldhub.hub.store.backup import BackupError, backup, restore
from fieldhub.hub.store.database import create_engine, sqlite_url
from fieldhub.private_files import private_dir
from fieldhub.protocol import Channel, Upload, topic_for
from tests.conftest import DeviceFactory, HubFactory, api_client
from tests.media_support import (
    announce,
    answers,
    ask,
    http_of,
    listen_media,
    partials,
    picture,
    ref,
    url_for,
)
from tests.support.s3_server import SeaweedS3
from tests.support.servers import Mosquitto
from tests.waiting import HTTP_TIMEOUT_S, eventually


async def _media_of_events(hub: Hub, device_id: str, sites: list[str]) -> list[dict]:
    async with api_client(hub, "viewer", sites=sites) as client:
        page = (await client.get("/api/events", params={"device": device_id})).json()
    return [m for event in page["events"] for m in event["media"]]


async def test_a_picture_is_announced_uploaded_checked_and_downloaded_by_its_site_only(
    any_hub: Hub, connect_device: DeviceFactory
) -> None:
    hub = any_hub
    camera = await connect_device(hub, "cam", site="berlin")
    await listen_media(camera)
    data = picture()
    announced = ref(data, name="door front.jpg")
    await announce(camera, 1, announced)

    [coming] = await _media_of_events(hub, camera.device_id, ["berlin"])
    assert coming["state"] == "pending"
    assert coming["thumbnail"] is None
    assert (coming["size"], coming["type"], coming["name"]) == (
        len(data),
        "image/jpeg",
        "door front.jpg",
    )

    answer = await url_for(camera, announced.sha256)
    assert answer.url is not None
    assert answer.received == 0
    assert answer.req == "r1"
    assert answer.expires_at is not None
    assert answer.expires_at > now_ms()
    async with http_of(hub):
        answer = await url_for(camera, announced.sha256)  # now pointing at the served API
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_S) as device_http:
            put = await device_http.put(
                answer.url, content=data, headers={"Content-Type": "image/jpeg"}
            )
    assert put.status_code == 201, put.text
    assert put.json() == {
        "id": coming["id"],
        "sha256": announced.sha256,
        "size": len(data),
        "type": "image/jpeg",
    }

    [arrived] = await _media_of_events(hub, camera.device_id, ["berlin"])
    assert arrived["state"] == "complete"  # at the 201; its thumbnail follows, made once
    [arrived] = await eventually(lambda: _with_thumbnail(hub, camera.device_id), "a thumbnail")
    assert arrived["thumbnail"] == f"/api/media/{arrived['id']}/thumbnail"
    async with api_client(hub, "viewer", sites=["berlin"]) as berlin:
        full = await berlin.get(arrived["url"])
        thumb = await berlin.get(arrived["thumbnail"])
    assert full.status_code == 200
    assert full.content == data
    assert full.headers["content-type"] == "image/jpeg"
    assert full.headers["x-content-type-options"] == "nosniff"
    assert full.headers["content-disposition"].startswith('inline; filename="door front.jpg"')
    assert thumb.status_code == 200
    assert thumb.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(thumb.content)) as small:
        assert small.size == (320, 240)

    async with api_client(hub, "viewer", sites=["paris"]) as paris:  # another site: not there
        assert (await paris.get(arrived["url"])).status_code == 404
        assert (await paris.get(arrived["thumbnail"])).status_code == 404
        assert (await paris.get("/api/media/999999")).status_code == 404
    assert partials(hub) == []
    # The same picture announced again is complete at once, and a request says it is done.
    await announce(camera, 2, announced)
    done = await url_for(camera, announced.sha256, req="r2")
    assert done.done
    assert done.req == "r2"
    states = await eventually(
        lambda: _complete(hub, camera.device_id), "the second announcement complete"
    )
    assert len(states) == 2


async def _with_thumbnail(hub: Hub, device_id: str) -> list[dict] | None:
    media = await _media_of_events(hub, device_id, ["berlin"])
    return media if all(m["thumbnail"] for m in media) else None


async def _complete(hub: Hub, device_id: str) -> list[str] | None:
    states = [m["state"] for m in await _media_of_events(hub, device_id, ["berlin"])]
    return states if states and all(s == "complete" for s in states) else None


async def test_an_upload_resumes_after_a_dropped_connection(
    hub: Hub, connect_device: DeviceFactory
) -> None:
    camera = await connect_device(hub, "cam", site="berlin")
    await listen_media(camera)
    data = os.urandom(FLUSH_BYTES + 100_000)
    announced = ref(data, "application/octet-stream", "trace.bin")
    await announce(camera, 1, announced)
    async with http_of(hub), httpx.AsyncClient(timeout=HTTP_TIMEOUT_S) as device_http:
        first = await url_for(camera, announced.sha256)
        assert first.url is not None
        # The link drops once the hub has written what came (a whole flush: no bytes of the
        # body wait in the hub's buffer when the connection ends).
        parts = urlsplit(first.url)
        _reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        writer.write(
            f"PUT {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            f"Content-Length: {len(data)}\r\n\r\n".encode()
            + data[:FLUSH_BYTES]
        )
        await writer.drain()
        await eventually(
            lambda: _held(device_http, first.url), "the hub to write the bytes that came"
        )
        writer.close()
        await writer.wait_closed()

        again = await url_for(camera, announced.sha256, req="r2")
        assert again.received == FLUSH_BYTES  # the answer says where to resume
        assert again.url is not None
        assert await _held(device_http, again.url) == FLUSH_BYTES
        wrong = await device_http.put(
            again.url,
            content=data[1:],
            headers={"Content-Range": f"bytes 1-{len(data) - 1}/{len(data)}"},
        )
        assert wrong.status_code == 409
        assert wrong.json()["received"] == FLUSH_BYTES
        rest = await device_http.put(
            again.url,
            content=data[FLUSH_BYTES:],
            headers={"Content-Range": f"bytes {FLUSH_BYTES}-{len(data) - 1}/{len(data)}"},
        )
        assert rest.status_code == 201, rest.text
    [arrived] = await _media_of_events(hub, camera.device_id, ["berlin"])
    assert arrived["thumbnail"] is None  # not an image
    async with api_client(hub, "viewer", sites=["berlin"]) as berlin:
        download = await berlin.get(arrived["url"])
    assert download.content == data
    assert download.headers["content-type"] == "application/octet-stream"
    assert download.headers["content-disposition"].startswith('attachment; filename="trace.bin"')
    assert partials(hub) == []


async def _held(client: httpx.AsyncClient, url: str) -> int:
    answer = await client.head(url)
    assert answer.status_code == 200
    return int(answer.headers["upload-received"])


async def test_chunks_over_mqtt_make_the_object_where_there_is_no_http(
    hub: Hub, connect_device: DeviceFactory
) -> None:
    camera = await connect_device(hub, "cam", site="berlin")
    await listen_media(camera)
    data = picture(200, 150)
    announced = ref(data)
    await announce(camera, 1, announced)
    half = len(data) // 2
    step = await ask(camera, Upload(sha256=announced.sha256, offset=0, data=data[:half]))
    assert step.received == half
    assert not step.done
    skipped = await ask(
        camera, Upload(sha256=announced.sha256, offset=half + 1, data=data[half + 1 :])
    )
    assert skipped.error == "bad_offset"
    assert skipped.received == half
    last = await ask(camera, Upload(sha256=announced.sha256, offset=half, data=data[half:]))
    assert last.done
    [arrived] = await _media_of_events(hub, camera.device_id, ["berlin"])
    assert arrived["state"] == "complete"
    async with api_client(hub, "viewer", sites=["berlin"]) as berlin:
        assert (await berlin.get(arrived["url"])).content == data


async def test_retention_removes_old_media_rows_and_their_files(
    make_hub: HubFactory, connect_device: DeviceFactory, media_store: dict[str, Any]
) -> None:
    async with make_hub(**media_store) as hub:
        camera = await connect_device(hub, "cam", site="berlin")
        await listen_media(camera)
        data = picture(64, 48)
        announced = ref(data)
        await announce(camera, 1, announced)
        assert (await ask(camera, Upload(sha256=announced.sha256, offset=0, data=data))).done
        files = hub.media.files
        assert await asyncio.to_thread(files.has, announced.sha256)
        [arrived] = await _media_of_events(hub, camera.device_id, ["berlin"])
        async with api_client(hub, "viewer", sites=["berlin"]) as berlin:
            got = await berlin.get(arrived["url"])
            assert (got.content, got.headers["content-length"]) == (data, str(len(data)))
            [arrived] = await eventually(
                lambda: _with_thumbnail(hub, camera.device_id), "a thumbnail"
            )
            thumbnail = await berlin.get(arrived["thumbnail"])
            assert Image.open(io.BytesIO(thumbnail.content)).size == (64, 48)

        await hub.media.sweep(now=now_ms() + 89 * 86_400_000)  # images are kept 90 days
        assert await asyncio.to_thread(files.has, announced.sha256)
        await hub.media.sweep(now=now_ms() + 91 * 86_400_000)
        assert not await asyncio.to_thread(files.has, announced.sha256)
        assert not await asyncio.to_thread(files.has_thumbnail, announced.sha256)
        assert await asyncio.to_thread(files.store.names) == []
        assert await _media_of_events(hub, camera.device_id, ["berlin"]) == []
        assert files.used == 0


async def test_the_quota_and_size_limit_say_so_before_anything_is_sent(
    make_hub: HubFactory, connect_device: DeviceFactory, media_store: dict[str, Any]
) -> None:
    data = picture(320, 240)
    async with make_hub(
        media_quota_bytes=len(data) - 1, media_max_bytes=len(data) + 1, **media_store
    ) as hub:
        camera = await connect_device(hub, "cam", site="berlin")
        await listen_media(camera)
        announced = ref(data)
        big = ref(data + b"\0" * 2, name="big.jpg")
        await announce(camera, 1, announced, big)
        full = await url_for(camera, announced.sha256)
        assert full.error == "quota"
        assert full.retry
        assert "full" in full.detail
        too_large = await url_for(camera, big.sha256)
        assert too_large.error == "too_large"
        assert not too_large.retry
        unknown = await url_for(camera, hashlib.sha256(b"never announced").hexdigest())
        assert unknown.error == "unknown_object"
        assert hub.media.uploads.refusals == {"quota": 1, "too_large": 1, "unknown_object": 1}
        assert [a.req for a in answers(camera)] == ["r1", "r1", "r1"]
        assert partials(hub) == []
        async with api_client(hub, "admin") as admin:
            metrics = (await admin.get("/metrics")).text
        assert 'fieldhub_media_refusals_total{code="quota"} 1.0' in metrics


@pytest.mark.parametrize("name", ["../../etc/passwd", "/abs.jpg", ".hidden", "a\\b.jpg"])
async def test_a_name_with_path_tricks_refuses_the_event(
    hub: Hub, connect_device: DeviceFactory, name: str
) -> None:
    camera = await connect_device(hub, "cam")
    data = picture(16, 16)
    entry = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "type": "image/jpeg"}
    event = {
        "seq": 1,
        "ts": now_ms(),
        "type": "stranger.detected",
        "media": [{**entry, "name": name}],
    }
    camera.publish_raw(Channel.EVENT, json.dumps(event).encode())
    await camera.wait_rejects(1)
    assert "$.media[0].name" in camera.rejects[0].error
    assert hub.stats.rejected["invalid_payload"] == 1


async def test_backup_and_restore_carry_the_media_files(
    make_hub: HubFactory, connect_device: DeviceFactory, tmp_path: Path
) -> None:
    data = picture(96, 72)
    announced = ref(data)
    archive = tmp_path / "backup.zip"
    async with make_hub(data=tmp_path / "first") as hub:
        camera = await connect_device(hub, "cam", site="berlin")
        await listen_media(camera)
        await announce(camera, 1, announced)
        assert (await ask(camera, Upload(sha256=announced.sha256, offset=0, data=data))).done
        await eventually(lambda: _with_thumbnail(hub, camera.device_id), "a thumbnail")
        await backup(hub.engine, archive, backup_folders(hub.settings))
    second = tmp_path / "second"
    engine = create_engine(sqlite_url(private_dir(second) / "fieldhub.db"))
    try:
        await restore(engine, archive, backup_folders(HubSettings(data=second)))
    finally:
        await engine.dispose()
    async with make_hub(data=second) as restored:
        [arrived] = await _media_of_events(restored, camera.device_id, ["berlin"])
        async with api_client(restored, "viewer", sites=["berlin"]) as berlin:
            assert (await berlin.get(arrived["url"])).content == data
            assert (await berlin.get(arrived["thumbnail"])).status_code == 200

    with zipfile.ZipFile(archive, "a") as tampered:  # a member that would leave its folder
        tampered.writestr("media/objects/../../escape", b"x")
    engine = create_engine(sqlite_url(private_dir(tmp_path / "third") / "fieldhub.db"))
    try:
        with pytest.raises(BackupError, match="not a safe file name"):
            await restore(engine, archive, backup_folders(HubSettings(data=tmp_path / "third")))
    finally:
        await engine.dispose()
    assert not (tmp_path / "escape").exists()


@pytest.mark.s3
async def test_a_backup_with_an_s3_store_names_the_bucket_and_the_restored_hub_reads_it(
    make_hub: HubFactory,
    connect_device: DeviceFactory,
    tmp_path: Path,
    s3_server: SeaweedS3,
    uid: str,
) -> None:
    store = s3_server.settings(f"t{uid}")
    data = picture(96, 72)
    announced = ref(data)
    archive = tmp_path / "backup.zip"
    async with make_hub(data=tmp_path / "first", **store) as hub:
        camera = await connect_device(hub, "cam", site="berlin")
        await listen_media(camera)
        await announce(camera, 1, announced)
        assert (await ask(camera, Upload(sha256=announced.sha256, offset=0, data=data))).done
        await eventually(lambda: _with_thumbnail(hub, camera.device_id), "a thumbnail")
        await backup(
            hub.engine, archive, backup_folders(hub.settings), backup_elsewhere(hub.settings)
        )
    with zipfile.ZipFile(archive) as written:
        assert not [name for name in written.namelist() if name.startswith("media/")]
        manifest = json.loads(written.read("manifest.json"))
    assert manifest["elsewhere"] == {
        "media/objects": f"s3://fieldhub-media/t{uid}/ at {s3_server.url}",
    }
    assert s3_server.secret_key not in json.dumps(manifest)

    second = tmp_path / "second"
    engine = create_engine(sqlite_url(private_dir(second) / "fieldhub.db"))
    try:
        await restore(engine, archive, backup_folders(HubSettings(data=second, **store)))
    finally:
        await engine.dispose()
    async with make_hub(data=second, **store) as restored:
        [arrived] = await _media_of_events(restored, camera.device_id, ["berlin"])
        async with api_client(restored, "viewer", sites=["berlin"]) as berlin:
            assert (await berlin.get(arrived["url"])).content == data
            assert (await berlin.get(arrived["thumbnail"])).status_code == 200


@pytest.mark.mosquitto
async def test_a_device_registered_before_media_gets_the_channels_at_hub_start(
    mosquitto: Mosquitto, make_hub: HubFactory, connect_device: DeviceFactory, tmp_path: Path
) -> None:
    async with make_hub(broker="mosquitto", data=tmp_path / "hub") as hub:
        camera = await connect_device(hub, "cam")
    role = device_role(camera.device_id)
    before_media = [  # the role as a hub without the media channels made it
        acl
        for acl in device_role_acls(camera.device_id)
        if not acl["topic"].endswith(("/upload", "/media"))
    ]
    admin = MqttIdentity(mosquitto.admin_username, mosquitto.admin_password, "")
    async with DynSec(mosquitto.host, mosquitto.port, admin) as dynsec:
        await dynsec.run([{"command": "modifyRole", "rolename": role, "acls": before_media}])
    assert await camera.subscribe(topic_for(camera.device_id, Channel.MEDIA)) == 128

    async with make_hub(broker="mosquitto", data=tmp_path / "hub"):
        assert await camera.subscribe(topic_for(camera.device_id, Channel.MEDIA)) == 1
