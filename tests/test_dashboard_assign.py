"""Assigning an alarm and commenting on it from its details on the alarms page, in a real
browser (the fixtures of ``test_dashboard.py``): both show in the alarm's history."""

from __future__ import annotations

import pytest
from playwright.async_api import expect

from tests.test_alarms_api import door_alarm
from tests.test_dashboard import (  # noqa: F401 (fixtures, found by their names)
    Dashboard,
    _no_page_problems,
    dash,
)

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]


async def test_an_alarm_is_assigned_and_commented_from_its_details(
    dash: Dashboard,  # noqa: F811
) -> None:
    device_id, alarm_id = await door_alarm(dash.hub, "berlin")
    colleague = await dash.user("viewer", ["berlin"])
    stranger = await dash.user("operator", ["paris"])
    operator = await dash.user("operator", ["berlin"])
    async with dash.page() as page:
        await dash.log_in(page, operator, f"/alarms?device={device_id}")
        row = page.locator(f'#alarm-rows tr.alarm[data-alarm="{alarm_id}"]')
        await row.get_by_role("button", name="Details").click()
        detail = page.locator("tr.alarm-detail")
        choices = detail.get_by_label("Assign to")
        await expect(choices.locator(f'option[value="{colleague}"]')).to_have_count(1)
        await expect(choices.locator(f'option[value="{stranger}"]')).to_have_count(0)
        await choices.select_option(colleague)
        await detail.get_by_role("button", name="Assign").click()
        history = detail.locator(".alarm-history")
        await expect(history.locator('li[data-kind="assigned"]')).to_contain_text(f"to {colleague}")
        await expect(detail.locator("dl.facts")).to_contain_text(f"Assigned to{colleague}")

        await detail.get_by_label("Comment").fill("called <i>the</i> bank")
        await detail.get_by_role("button", name="Add comment").click()
        said = history.locator('li[data-kind="commented"]')
        await expect(said).to_contain_text("called <i>the</i> bank")  # text, not markup
        await expect(said).to_contain_text(f"user:{operator}")
        await dash.shot(page, "alarm-assigned")
    alarm = await dash.hub.alarms.alarm(alarm_id)
    assert alarm.assignee == colleague


async def test_assigned_to_me_shows_only_my_alarms_and_follows_new_assignments(
    dash: Dashboard,  # noqa: F811
) -> None:
    operator = await dash.user("operator", ["lyon"])
    _, mine = await door_alarm(dash.hub, "lyon")
    _, theirs = await door_alarm(dash.hub, "lyon")
    _, later = await door_alarm(dash.hub, "lyon")
    await dash.hub.alarms.assign(mine, assignee=operator, actor="user:root")
    rows = "#alarm-rows tr.alarm"
    async with dash.page() as page:
        await dash.log_in(page, operator, "/alarms")
        await expect(page.locator(f'{rows}[data-alarm="{theirs}"]')).to_have_count(1)
        await page.get_by_label("Assigned to me").check()
        await expect(page.locator(f'{rows}[data-alarm="{theirs}"]')).to_have_count(0)
        await expect(page.locator(rows)).to_have_count(1)
        await expect(page.locator(f'{rows}[data-alarm="{mine}"]')).to_have_count(1)
        assert "mine=1" in page.url  # a bookmark opens the same view

        await dash.hub.alarms.assign(later, assignee=operator, actor="user:root")  # live
        await expect(page.locator(f'{rows}[data-alarm="{later}"]')).to_have_count(1)
        await dash.shot(page, "alarms-assigned-to-me")

        await page.reload()
        await expect(page.get_by_label("Assigned to me")).to_be_checked()
        await expect(page.locator(rows)).to_have_count(2)
