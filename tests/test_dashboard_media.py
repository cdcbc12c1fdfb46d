"""Media in the dashboard, in a real browser (Chromium through Playwright) against a real hub
over HTTP and a device on real MQTT: an event's picture shows as "coming" until the device
uploads it, then as a thumbnail, live, on the device page and in the event log; a click opens
the full picture."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest
import pytest_asyncio
from playwright.async_api import async_playwright, expect

from fieldhub.hub.app import Hub
from fieldhub.hub.config import HubSettings
from fieldhub.protocol import Upload
from tests.device_client import TestDevice
from tests.hub_client import served
from tests.media_support import announce, ask, listen_media, picture, ref
from tests.test_dashboard import CHROMIUM_ARGS, Dashboard, _chromium
from tests.waiting import eventually

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def dash(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Dashboard]:
    """A hub (embedded broker, SQLite) over HTTP and Chromium; no agent is needed."""
    folder = tmp_path_factory.mktemp("dashboard-media")
    settings = HubSettings(
        data=folder / "hub", instance="dashmedia", mqtt="127.0.0.1:0", http="127.0.0.1:0"
    )
    async with AsyncExitStack() as stack:
        hub = await stack.enter_async_context(Hub(settings))
        url = await stack.enter_async_context(served(hub))
        playwright = await stack.enter_async_context(async_playwright())
        browser = await playwright.chromium.launch(executable_path=_chromium(), args=CHROMIUM_ARGS)
        stack.push_async_callback(browser.close)
        yield Dashboard(hub, url, browser, folder, "media")


async def _camera(hub: Hub, name: str) -> TestDevice:
    issued = (await hub.devices.create(name, labels={"site": "berlin"})).credentials
    device = await TestDevice.connect(
        hub.broker_url, name, username=issued.username, password=issued.secret
    )
    await listen_media(device)
    return device


async def test_a_picture_shows_coming_then_as_a_thumbnail_that_opens_the_full_one(
    dash: Dashboard,
) -> None:
    camera = await _camera(dash.hub, "door-cam")
    data = picture(800, 600)
    announced = ref(data, name="stranger.jpg")
    operator = await dash.user("operator", ["berlin"])
    try:
        async with dash.page() as page:
            frames: list[str] = []  # what the hub sends the page on /api/live
            page.on("websocket", lambda ws: ws.on("framereceived", lambda f: frames.append(str(f))))
            await dash.log_in(page, operator, f"/devices/{camera.device_id}")
            await eventually(
                lambda: any('"subscribed"' in f for f in frames), "the page's live subscription"
            )

            await announce(camera, 1, announced)
            row = page.locator("#event-rows tr.event").filter(has_text="stranger.detected")
            await expect(row.locator(".media.pending")).to_have_text("picture coming…")

            assert (await ask(camera, Upload(sha256=announced.sha256, offset=0, data=data))).done
            thumbnail = row.locator(".media.complete img")  # live: the page was not reloaded
            await expect(thumbnail).to_be_visible()
            await expect(row.locator(".media.pending")).to_have_count(0)

            # Visible is not loaded: the browser may still be fetching the thumbnail's bytes.
            async def loaded_width() -> int:
                return int(await thumbnail.evaluate("img => img.complete && img.naturalWidth"))

            assert await eventually(loaded_width, "the thumbnail loaded") == 320
            await dash.shot(page, "device-media")

            async with page.context.expect_page() as opened:
                await thumbnail.click()
            full = await opened.value
            await full.wait_for_load_state()
            assert re.search(r"/api/media/\d+$", full.url)
            assert await full.locator("img").evaluate("img => img.naturalWidth") == 800

            await page.goto("/events")
            logged = page.locator("#event-rows tr.event").filter(has_text=camera.device_id)
            await expect(logged.locator(".media.complete img")).to_be_visible()
            await dash.shot(page, "event-log-media")
        assert not dash.problems, dash.problems
    finally:
        camera.close()
