"""Retention in the dashboard, in a real browser (Chromium through Playwright): an admin reads
and sets the policy on the Manage page, a bad value is shown at its field and nothing is
stored; an operator has no such section (the fixtures of ``test_dashboard.py``)."""

from __future__ import annotations

import pytest
from playwright.async_api import expect

from fieldhub.hub.retention import RawOverride
from tests.test_dashboard import (  # noqa: F401 (fixtures, found by their names)
    Dashboard,
    _no_page_problems,
    dash,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]


async def test_an_admin_sets_retention_and_a_bad_value_is_shown_at_its_field(
    dash: Dashboard,  # noqa: F811
) -> None:
    admin = await dash.user("admin")
    async with dash.page() as page:
        await dash.log_in(page, admin, then="/manage")
        form = page.locator("#retention-form")
        await expect(form.get_by_label("Raw samples, days")).to_have_value("30")
        await expect(page.locator("#retention-budget")).to_contain_text("budget")

        await expect(form.get_by_label("Day rollups, days")).to_have_value("3650")
        await form.get_by_label("Raw samples, days").fill("7")
        await form.get_by_label("Hour rollups, days").fill("400")
        await form.get_by_label("Cleared alarms, days").fill("90")
        await form.get_by_label("Events by type").fill("door.open=30")
        await form.get_by_label("Raw samples by key").fill("vibration.* 3\ntemp site=berlin 365")
        await form.get_by_role("button", name="Save retention").click()
        await expect(page.locator("#retention-status")).to_have_text("Retention saved.")
        policy = dash.hub.retention.record.policy
        assert policy.raw_days == 7
        assert (policy.hour_days, policy.alarms_days) == (400, 90)
        assert policy.event_types == {"door.open": 30}
        assert policy.overrides == [
            RawOverride(key="vibration.*", days=3),
            RawOverride(key="temp", labels={"site": "berlin"}, days=365),
        ]

        await form.get_by_label("Raw samples by key").fill("a/b 3")
        await form.get_by_role("button", name="Save retention").click()
        await expect(form.locator(".field-error")).to_contain_text("pattern")
        assert dash.hub.retention.record.policy.overrides == policy.overrides  # nothing stored

        await form.get_by_label("Raw samples by key").fill("vibration.* 3")
        await form.get_by_label("Day rollups, days").fill("300")  # less than the hour tier
        await form.get_by_role("button", name="Save retention").click()
        await expect(form.locator(".field-error")).to_contain_text("at least hour_days")
        assert dash.hub.retention.record.policy.day_days == 3650

        await page.reload()
        await expect(form.get_by_label("Raw samples by key")).to_have_value(
            "vibration.* 3\ntemp site=berlin 365"
        )

    operator = await dash.user("operator", ["berlin"])
    async with dash.page() as page:
        await dash.log_in(page, operator, then="/manage")
        await expect(page.locator("#tokens")).to_be_visible()
        await expect(page.locator("#retention")).to_be_hidden()
