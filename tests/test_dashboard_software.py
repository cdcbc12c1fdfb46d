"""What devices run, in the dashboard (issue 16, inventory), in a real browser (Debian's
Chromium through Playwright) against the real hub of ``test_dashboard.py`` and devices that
speak the bundle contract over MQTT: a device's page shows its agent version and bundles; the
fleet page lists the devices running a bundle below a version, and a device updated by a
rollout leaves that list without a reload; a version that is not one is refused, by name."""

from __future__ import annotations

import asyncio

import pytest
from playwright.async_api import Locator, Page, expect

from fieldhub.bundles import SigningKey, make_bundle
from fieldhub.hub.app import Hub
from fieldhub.hub.rollouts.plan import Plan
from fieldhub.hub.store.rollouts import BundleRecord
from tests.conftest import api_client
from tests.support.bundle_devices import api_download, start_fleet
from tests.test_dashboard import (  # noqa: F401 (fixtures, found by their names)
    Dashboard,
    _no_page_problems,
    cabinet,
    dash,
)
from tests.test_rollouts import ready
from tests.waiting import eventually

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]


async def _roll_out(hub: Hub, bundle: BundleRecord, device_id: str) -> None:
    """Send ``bundle`` to one device and wait until it runs it."""
    run = await hub.rollouts.create(
        bundle, Plan(target={"devices": [device_id]}), [(device_id, {})], actor="test", source=""
    )

    async def done() -> bool:
        return (await hub.rollouts.get(run.record.id)).record.status == "completed"

    await eventually(done, f"the rollout to {device_id}", 60)


def _rows(page: Page) -> Locator:
    return page.locator("#device-rows tr")


@pytest.mark.slow  # two rollouts and three pages in Chromium: ~9 s on a loaded machine
async def test_the_device_page_shows_what_runs_and_the_fleet_filters_by_bundle_version(
    dash: Dashboard,  # noqa: F811
) -> None:
    hub = dash.hub
    key = SigningKey.generate()
    await hub.bundles.add_key(key.public.to_text(), f"sw-{dash.uid}", actor="test", source="")
    data = make_bundle({"say.py": b"print('hello')\n"}, key, name="hello", version="1.0.0")
    bundle, _new = await hub.bundles.upload(data, actor="test", source="")
    names = [f"sw{n}-{dash.uid}" for n in range(3)]
    async with api_client(hub, None) as anonymous:
        devices = await start_fleet(hub, names, download=api_download(anonymous), site="lisbon")
        try:
            await ready(hub, devices)
            await _roll_out(hub, bundle, names[0])
            viewer = await dash.user("viewer", ["lisbon"])
            async with dash.page() as page:
                await dash.log_in(page, viewer, f"/devices/{names[0]}")
                software = page.locator("#software")
                await expect(software.locator("[data-agent] .v")).to_have_text("1.0.0")
                await expect(software.locator("[data-bundle=hello] .v")).to_have_text("1.0.0")
                await page.goto(f"/devices/{names[1]}")
                await expect(page.locator("#software")).to_contain_text("no bundles")

                await page.goto("/?site=lisbon")
                await expect(_rows(page)).to_have_count(3)
                await page.get_by_label("Software").select_option("hello")
                await expect(_rows(page)).to_have_count(1)  # runs it: names[0]
                await page.get_by_label("below").fill("1.0.0")
                rows = _rows(page)
                await expect(rows).to_have_count(2)  # below 1.0.0, or not at all
                await expect(rows.nth(0)).to_have_attribute("data-device", names[1])
                await expect(rows.nth(1)).to_have_attribute("data-device", names[2])
                await dash.shot(page, "fleet-software-filter")

                await _roll_out(hub, bundle, names[1])
                await expect(rows).to_have_count(1)  # updated: out of the list, no reload
                await expect(rows.nth(0)).to_have_attribute("data-device", names[2])
                assert "bundle=hello" in page.url
                assert "below=1.0.0" in page.url

                await page.get_by_label("below").fill("1.x")
                status = page.locator("#status")
                await expect(status).to_contain_text("below")
        finally:
            await asyncio.gather(*(device.close() for device in devices))
