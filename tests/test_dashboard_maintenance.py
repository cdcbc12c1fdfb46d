"""Maintenance windows in the dashboard, in a real browser (Chromium through Playwright): a
banner on the fleet, device and alarms pages while a window covering what the user sees is
open, and an alarm raised inside it marked ``maintenance`` (the fixtures of
``test_dashboard.py`` and ``test_dashboard_alarms.py``)."""

from __future__ import annotations

import pytest
from playwright.async_api import expect

from fieldhub.clock import now_ms
from fieldhub.hub.alarms import AlarmFilter
from tests.test_dashboard import (  # noqa: F401 (fixtures, found by their names)
    Cabinet,
    Dashboard,
    _no_page_problems,
    cabinet,
    dash,
)
from tests.test_dashboard_alarms import (  # noqa: F401 (fixtures, found by their names)
    HIGH_V,
    _alarm_row,
    rule,
)

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]


async def test_a_banner_shows_an_open_window_and_alarms_in_it_are_marked(
    dash: Dashboard,  # noqa: F811
    cabinet: Cabinet,  # noqa: F811
    rule: str,  # noqa: F811
) -> None:
    now = now_ms()
    hour = {"kind": "once", "start": now - 1000, "end": now + 3_600_000}
    berlin = await dash.hub.maintenance.put(
        {"name": "Berlin <b>swap</b>", "scope": {"sites": ["berlin"]}, "schedule": hour},
        actor="test",
    )
    paris = await dash.hub.maintenance.put(
        {"name": "Paris works", "scope": {"sites": ["paris"]}, "schedule": hour}, actor="test"
    )
    operator = await dash.user("operator", ["berlin"])
    try:
        async with dash.page() as page:
            await dash.log_in(page, operator)
            banner = page.locator("#maintenance")
            await expect(banner).to_be_visible()
            await expect(banner).to_contain_text("Berlin <b>swap</b> until")  # text, not markup
            await expect(banner).not_to_contain_text("Paris")  # not the user's site

            await page.goto(f"/devices/{cabinet.device_id}")
            await expect(banner).to_contain_text("Berlin <b>swap</b>")

            await page.goto("/alarms")
            await expect(banner).to_be_visible()
            cabinet.set_supply(HIGH_V)
            row = _alarm_row(page)
            await expect(row.locator("td.state")).to_contain_text("active")
            await expect(row.locator("td.state .chip.maintenance")).to_have_text("maintenance")
            await dash.shot(page, "maintenance")
            [alarm] = await dash.hub.alarms.find(AlarmFilter(rule=rule, states=["active"]))
            assert alarm.in_maintenance

            # Shelved, then taken back before its time, from the page.
            await row.get_by_role("button", name="Details").click()
            detail = page.locator("tr.alarm-detail")
            await detail.get_by_role("button", name="Shelve", exact=True).click()
            await expect(row.locator("td.state .shelved")).to_be_visible()
            await detail.get_by_role("button", name="Unshelve", exact=True).click()
            await expect(row.locator("td.state .shelved")).to_have_count(0)
            await expect(detail.locator(".alarm-history")).to_contain_text("unshelved")

            await dash.hub.maintenance.delete(berlin.id, actor="test")
            await page.reload()
            await expect(page.locator("#alarm-rows tr.alarm").first).to_be_visible()
            await expect(banner).to_be_hidden()
    finally:
        await dash.hub.maintenance.delete(paris.id, actor="test")
        if berlin.id in [w.id for w in await dash.hub.maintenance.windows()]:
            await dash.hub.maintenance.delete(berlin.id, actor="test")
