"""The "My notifications" page in a real browser (the fixtures of ``test_dashboard.py``): a
user subscribes to a channel with quiet hours in a time zone of their choice, the hub's 422
shows at its field, and the API then holds the subscription as the form said."""

from __future__ import annotations

import pytest
from playwright.async_api import Locator, Page, expect

from tests.test_dashboard import (  # noqa: F401 (fixtures, found by their names)
    Dashboard,
    _no_page_problems,
    dash,
)

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]


def _field(page: Page, name: str) -> Locator:
    """A field of the subscription form, by its name (the body path a 422's loc names)."""
    return page.locator(f'#subscription-form [name="{name}"]')


async def test_a_user_subscribes_with_quiet_hours_and_the_api_holds_it(
    dash: Dashboard,  # noqa: F811
) -> None:
    channel = await dash.hub.notifications.create_channel(
        "Night <b>desk</b>", "webhook", {"url": "http://127.0.0.1:9/hook"}, actor="test"
    )
    viewer = await dash.user("viewer", ["berlin"])
    async with dash.page() as page:
        await dash.log_in(page, viewer, "/notifications")
        await expect(page.locator("#no-subscriptions")).to_be_visible()
        await _field(page, "channel_id").select_option(str(channel.id))
        await expect(_field(page, "channel_id")).to_contain_text("Night <b>desk</b>")
        await expect(_field(page, "to")).to_be_hidden()  # a webhook: no addresses
        await page.locator('#sites-field input[value="berlin"]').check()
        await _field(page, "min_severity").select_option("major")
        await page.locator('input[name="changes"][value="assigned"]').check()
        await _field(page, "quiet").check()
        await _field(page, "quiet_hours.timezone").select_option("Europe/Berlin")
        await _field(page, "quiet_hours.from").fill("21:30")
        await _field(page, "quiet_hours.to").fill("06:15")
        await page.locator('input[name="quiet_hours.days"][value="sun"]').uncheck()
        await _field(page, "max_per_hour").fill("0")
        await page.get_by_role("button", name="Save subscription").click()
        limit = page.locator('#subscription-form label:has([name="max_per_hour"]) .field-error')
        await expect(limit).to_contain_text("greater than or equal to 1")

        await _field(page, "max_per_hour").fill("12")
        await page.get_by_role("button", name="Save subscription").click()
        await expect(page.locator("#form-status")).to_contain_text("saved")
        row = page.locator("#subscription-rows tr.subscription")
        await expect(row.locator("td.quiet")).to_contain_text("21:30 to 06:15 Europe/Berlin")
        await expect(row.locator("td.owner")).to_have_text("yours")
        await dash.shot(page, "notifications")
        answer = await page.request.get("/api/notification-subscriptions")
        assert answer.ok
        [held] = await answer.json()
    assert (held["channel_id"], held["sites"], held["min_severity"]) == (
        channel.id,
        ["berlin"],
        "major",
    )
    assert sorted(held["changes"]) == ["assigned", "cleared", "raised"]
    assert held["max_per_hour"] == 12
    assert held["quiet_hours"] == {
        "timezone": "Europe/Berlin",
        "from": "21:30",
        "to": "06:15",
        "days": ["mon", "tue", "wed", "thu", "fri", "sat"],
        "pass_severities": ["critical"],
    }
