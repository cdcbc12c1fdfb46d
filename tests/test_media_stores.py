"""The media stores, each against its real backend: the data folder and an S3-compatible
server (SeaweedFS). What the media code relies on: a put checks the hash before anything is
visible, reads stream, the byte count survives a restart, and an S3 store that refuses the
hub's credentials stops the hub with an error that does not carry the secret."""

from __future__ import annotations

import hashlib
import logging
import secrets
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from fieldhub.hub.app import Hub
from fieldhub.hub.config import HubSettings
from fieldhub.hub.media.stores import FolderStore, HashMismatch, ObjectStore, thumbnail_key
from fieldhub.protocol import Upload
from tests.conftest import DeviceFactory, HubFactory, api_client
from tests.media_support import announce, ask, listen_media, picture, ref, url_for
from tests.support.s3_server import SeaweedS3
from tests.waiting import eventually


def _open(settings: dict[str, Any], tmp_path: Path) -> ObjectStore:
    """A store as the hub opens it from ``settings`` (none: the data folder)."""
    if not settings:
        return FolderStore(tmp_path / "objects")
    from fieldhub.hub.media.s3 import s3_store

    return s3_store(HubSettings(data=tmp_path, **settings))


def _file(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / f"upload-{secrets.token_hex(4)}"
    path.write_bytes(data)
    return path


def test_a_put_is_checked_stored_streamed_counted_and_deleted(
    media_store: dict[str, Any], tmp_path: Path
) -> None:
    store = _open(media_store, tmp_path)
    data = secrets.token_bytes(3 << 20)  # over one read piece: the stream comes in parts
    sha256 = hashlib.sha256(data).hexdigest()
    source = _file(tmp_path, data)

    assert store.put(sha256, source, sha256=sha256) == len(data)
    assert not source.exists()  # the store took it over
    assert store.size(sha256) == len(data)
    pieces = list(store.chunks(sha256))
    assert len(pieces) > 1
    assert b"".join(pieces) == data
    assert store.put(thumbnail_key(sha256), _file(tmp_path, b"thumb"), sha256=None) == 5
    assert sorted(store.names()) == sorted([sha256, thumbnail_key(sha256)])
    assert store.total_bytes() == len(data) + 5
    assert _open(media_store, tmp_path).total_bytes() == len(data) + 5  # counted at start

    store.delete(sha256)
    store.delete(sha256)  # twice: nothing to do
    assert store.size(sha256) is None
    assert store.total_bytes() == 5
    with pytest.raises(FileNotFoundError):
        b"".join(store.chunks(sha256))


def test_a_put_whose_content_does_not_hash_to_its_name_stores_nothing(
    media_store: dict[str, Any], tmp_path: Path
) -> None:
    store = _open(media_store, tmp_path)
    claimed = hashlib.sha256(b"the promised bytes").hexdigest()
    source = _file(tmp_path, b"other bytes")
    with pytest.raises(HashMismatch, match=claimed):
        store.put(claimed, source, sha256=claimed)
    assert not source.exists()
    assert store.size(claimed) is None
    assert store.names() == []
    assert store.total_bytes() == 0


@pytest.mark.s3
async def test_a_hub_whose_s3_credentials_are_refused_does_not_start_and_keeps_the_secret(
    make_hub: HubFactory, s3_server: SeaweedS3, caplog: pytest.LogCaptureFixture, uid: str
) -> None:
    wrong = "wrong-" + secrets.token_hex(12)
    settings = {**s3_server.settings(f"t{uid}"), "media_s3_secret_key": wrong}
    caplog.set_level(logging.DEBUG)
    with pytest.raises(OSError, match="S3 store: cannot reach bucket") as refused:
        async with make_hub(**settings):
            pass
    assert wrong not in str(refused.value)
    assert wrong not in caplog.text
    assert wrong not in repr(HubSettings(**settings))


@pytest.mark.s3
@pytest.mark.slow
@pytest.mark.timeout(240)  # two cold starts of a SeaweedFS (~6 s each idle, far more under load)
async def test_an_s3_store_that_goes_away_answers_unavailable_and_503_then_serves_again(
    make_hub: HubFactory, connect_device: DeviceFactory, tmp_path: Path
) -> None:
    data = picture(64, 48)
    announced, later = ref(data), ref(picture(32, 24), name="later.jpg")
    with SeaweedS3(tmp_path / "s3") as server:  # its own server: this test stops it
        async with make_hub(**server.settings("outage")) as hub:
            camera = await connect_device(hub, "cam", site="berlin")
            await listen_media(camera)
            await announce(camera, 1, announced, later)
            assert (await ask(camera, Upload(sha256=announced.sha256, offset=0, data=data))).done
            arrived = await eventually(
                lambda: _complete(hub, camera.device_id, announced.sha256), "the first picture"
            )
            async with api_client(hub, "viewer", sites=["berlin"]) as berlin:
                server.stop()
                down = await berlin.get(arrived["url"])
                assert down.status_code == 503
                assert "media store" in down.json()["detail"]
                refused = await url_for(camera, later.sha256)
                assert (refused.error, refused.retry) == ("unavailable", True)

                server.start()
                assert (await berlin.get(arrived["url"])).content == data


async def _complete(hub: Hub, device_id: str, sha256: str) -> dict[str, Any] | None:
    """The media ``sha256`` of the device's events once it is complete."""
    async with api_client(hub, "viewer", sites=["berlin"]) as client:
        page = (await client.get("/api/events", params={"device": device_id})).json()
    media = [m for event in page["events"] for m in event["media"] if m["sha256"] == sha256]
    return media[0] if media and media[0]["state"] == "complete" else None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("media_s3_url", "ftp://store.example"),
        ("media_s3_url", "https://key:secret@store.example"),  # credentials have their fields
        ("media_s3_url", "https://store.example/bucket"),  # the bucket has its field
        ("media_s3_bucket", "Media_Bucket"),
        ("media_s3_prefix", "../media/"),
        ("media_s3_prefix", "media"),  # a folder ends in '/'
    ],
)
def test_a_wrong_s3_setting_is_refused_by_name(field: str, value: str, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=field):
        HubSettings(data=tmp_path, **{field: value})
