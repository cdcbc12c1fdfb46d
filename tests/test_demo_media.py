"""The demo shows the device-server seed's stranger picture (issue 15): a few seconds after
the start someone opens an ATM's door outside its service hours, and the hub's event log gets
a ``stranger.detected`` event whose picture downloads whole.

The demo's own fleet (real agents on simulated hardware) against a hub on the embedded
broker, its REST API over real HTTP (where the agents upload).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from fieldhub.cli.demo_fleet import WITH_CAMERA, demo_devices, run_demo_fleet
from fieldhub.hub.app import Hub
from tests.conftest import HubFactory, api_client
from tests.hub_client import served
from tests.support.proxy import TcpProxy
from tests.waiting import eventually


async def _stranger(hub: Hub, device_id: str) -> dict[str, Any] | None:
    page = await hub.queries.events(device_ids=[device_id], types=["stranger.detected"])
    for event in page.events:
        if event.media and event.media[0]["state"] != "pending":
            return {"event": event, "media": event.media[0]}
    return None


@pytest.mark.slow
async def test_the_demo_pictures_a_stranger_at_an_atm_within_seconds(
    make_hub: HubFactory, tmp_path: Path
) -> None:
    async with TcpProxy("127.0.0.1", 1) as web:
        public = f"http://{web.host}:{web.port}"
        async with make_hub(public_url=public) as hub, served(hub) as url:
            web.retarget("127.0.0.1", int(url.rsplit(":", 1)[1]))
            fleet = asyncio.create_task(run_demo_fleet(hub, 3, tmp_path, door_every_s=1e9))
            try:
                (atm,) = [
                    d.device_id
                    for d in demo_devices(3, tmp_path)
                    if d.labels["group"] in WITH_CAMERA
                ]
                found = await eventually(lambda: _stranger(hub, atm), "a stranger's picture")
            finally:
                fleet.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await fleet
            event, media = found["event"], found["media"]
            assert event.severity == "warning"
            assert event.data["trigger"] == "door.opened"
            async with api_client(hub) as api:
                answer = await api.get(media["url"])
            assert answer.status_code == 200, answer.text
            assert hashlib.sha256(answer.content).hexdigest() == media["sha256"]
            with Image.open(io.BytesIO(answer.content)) as picture:
                assert (picture.format, picture.size) == ("PNG", (320, 240))
