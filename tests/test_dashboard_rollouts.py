"""Rollouts in the dashboard, in a real browser (Debian's Chromium through Playwright) against
the real hub of ``test_dashboard.py`` and devices that speak the bundle contract over MQTT:
an operator watches a rollout's canary confirm, approves the next wave with the page's button,
and sees the rollout complete, without reloading."""

from __future__ import annotations

import asyncio

import pytest
from playwright.async_api import expect

from fieldhub.bundles import SigningKey, make_bundle
from fieldhub.hub.rollouts.plan import Plan
from tests.conftest import api_client
from tests.support.bundle_devices import api_download, start_fleet
from tests.test_dashboard import (  # noqa: F401 (fixtures, found by their names)
    Dashboard,
    _no_page_problems,
    cabinet,
    dash,
)
from tests.test_rollouts import ready

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]


async def test_a_rollout_shows_its_progress_live_and_is_approved_from_the_page(
    dash: Dashboard,  # noqa: F811
) -> None:
    hub = dash.hub
    key = SigningKey.generate()
    await hub.bundles.add_key(key.public.to_text(), f"ui-{dash.uid}", actor="test", source="")
    data = make_bundle({"a.py": b"x = 1\n"}, key, name="ui-actions", version="3.0.0")
    bundle, _new = await hub.bundles.upload(data, actor="test", source="")
    names = [f"ui{n}-{dash.uid}" for n in range(2)]
    async with api_client(hub, None) as anonymous:
        devices = await start_fleet(hub, names, download=api_download(anonymous), site="berlin")
        try:
            await ready(hub, devices)
            operator = await dash.user("operator", ["berlin"])
            run = await hub.rollouts.create(
                bundle,
                Plan(target={"devices": names}, canary=1, approval=True),
                [(name, {}) for name in names],
                actor="test",
                source="",
            )
            async with dash.page() as page:
                await dash.log_in(page, operator, f"/rollouts?id={run.record.id}")
                await expect(page.locator("#rollout-status")).to_have_text("waiting")
                await expect(page.locator("#rollout-counts")).to_have_text("1 confirmed, 1 pending")
                canary = page.locator("#device-rows tr").filter(has_text=names[0])
                await expect(canary.locator("td").nth(2)).to_have_text("confirmed")

                await page.get_by_role("button", name="approve").click()
                await expect(page.locator("#rollout-status")).to_have_text("completed")
                await expect(page.locator("#rollout-counts")).to_have_text("2 confirmed")
                await expect(page.get_by_role("button", name="approve")).to_have_count(0)
                await dash.shot(page, "rollout-completed")

                await page.goto("/rollouts")  # the list, from the navigation's page
                row = page.locator("#rollout-rows tr").filter(has_text=run.record.id)
                await expect(row).to_contain_text("ui-actions 3.0.0")
                await expect(row).to_contain_text("completed")
            assert all(device.bundles == {"ui-actions": "3.0.0"} for device in devices)
        finally:
            await asyncio.gather(*(device.close() for device in devices))
