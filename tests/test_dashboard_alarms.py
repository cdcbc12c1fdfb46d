"""Alarms in the dashboard, in a real browser (Debian's Chromium through Playwright) against a
real hub and a real agent on gpiozero mock pins (the fixtures of ``test_dashboard.py``).

A rule watches the cabinet's supply voltage; the test puts a higher voltage on the mock ADC,
the agent publishes it, the hub commits it and its engine raises the alarm: what the tests
assert is what a person then sees on the alarms page, in the navigation, on the fleet
overview and on the device page, without reloading any of them.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from playwright.async_api import Locator, Page, expect

from fieldhub.hub.alarms import AlarmFilter
from tests.test_dashboard import (  # noqa: F401 (fixtures, found by their names)
    DOOR_PIN,
    Cabinet,
    Dashboard,
    _no_page_problems,
    _row,
    cabinet,
    dash,
)
from tests.waiting import eventually

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

RULE_ID = "supply-high"
RULE_NAME = "Supply <b>too high</b>"  # shown as the text it is, never as markup
HIGH_V, NORMAL_V = 6.5, 5.1


def _rule(clearable: bool, device_id: str) -> dict[str, object]:
    return {
        "id": RULE_ID,
        "name": RULE_NAME,
        "severity": "major",
        "target": {"devices": [device_id]},
        "condition": {
            "kind": "threshold",
            "key": "supply",
            "direction": "above",
            "raise": 6.0,
            "clear": 5.5,
        },
        "clearable_by_user": clearable,
    }


def _alarm_row(page: Page, name: str = RULE_NAME) -> Locator:
    return page.locator("#alarm-rows tr.alarm").filter(has_text=name)


@pytest_asyncio.fixture(loop_scope="module")
async def rule(dash: Dashboard, cabinet: Cabinet) -> AsyncIterator[str]:  # noqa: F811
    """A rule on the cabinet's supply, users allowed to clear its alarms (for now); at the
    end the supply is normal again and the rule gone (its alarms cleared)."""
    await dash.hub.alarms.put_rule(_rule(True, cabinet.device_id), actor="test", create=True)
    yield RULE_ID
    cabinet.set_supply(NORMAL_V)
    # Stored before the next test puts the supply high again: otherwise the agent may sample
    # high, then high again (its normal moment fell between two samples), send nothing new,
    # and the next test's rule never sees a crossing.
    await eventually(lambda: _supply_near(cabinet, NORMAL_V), "the supply normal again")
    await dash.hub.alarms.delete_rule(RULE_ID, actor="test")


async def _supply_near(cabinet: Cabinet, volts: float) -> bool:  # noqa: F811
    latest = {v.key: v.value for v in await cabinet.hub.queries.latest(cabinet.device_id)}
    value = latest.get("supply")
    return isinstance(value, int | float) and abs(value - volts) < 0.05


@pytest_asyncio.fixture(loop_scope="module")
async def door_rule(dash: Dashboard, cabinet: Cabinet) -> AsyncIterator[str]:  # noqa: F811
    """An event rule users may clear: the cabinet's door opened. At the end the door is
    closed and the rule gone."""
    rule = {
        "id": "door",
        "name": "Door opened",
        "severity": "minor",
        "target": {"devices": [cabinet.device_id]},
        "condition": {"kind": "event", "match": "door.*"},
    }
    await dash.hub.alarms.put_rule(rule, actor="test", create=True)
    yield "Door opened"
    cabinet.pins.pin(DOOR_PIN).drive_low()
    await dash.hub.alarms.delete_rule("door", actor="test")


async def _act(page: Page, row: Locator, action: str, comment: str) -> Locator:
    """Open an alarm's details, write a comment and press ``action``: its details."""
    await row.get_by_role("button", name="Details").click()
    detail = page.locator("tr.alarm-detail")
    await expect(detail.locator(".alarm-history")).to_contain_text("raised")
    await detail.get_by_label("Comment").fill(comment)
    await detail.get_by_role("button", name=action).click()
    return detail


async def test_an_alarm_appears_live_is_acknowledged_and_shows_everywhere(
    dash: Dashboard,  # noqa: F811
    cabinet: Cabinet,  # noqa: F811
    rule: str,
    door_rule: str,
) -> None:
    operator = await dash.user("operator", ["berlin"])
    async with dash.page() as page:
        await dash.log_in(page, operator, "/alarms")
        await expect(page.locator("#live-state")).to_have_text("live")
        await expect(page.locator("#no-alarms")).to_be_visible()
        badge = page.locator("#alarm-count")
        await expect(badge).to_be_hidden()

        cabinet.set_supply(HIGH_V)  # the agent publishes it, the hub's rule raises an alarm

        row = _alarm_row(page)
        await expect(row).to_have_count(1)  # live: the page was not reloaded
        await expect(row.locator("td.severity")).to_have_text("major")
        await expect(row.locator("td.device a")).to_have_text("ATM <b>Hauptbahnhof</b>")
        await expect(row.locator("td.state")).to_have_text("active")
        await expect(row.locator("td.when")).to_have_text(re.compile(r"just now|s ago"))
        await expect(badge).to_have_text("1")
        await expect(badge).to_have_class(re.compile(r"\bloud\b"))  # major: highlighted

        # Acknowledge from the page, with a comment: the state and the history say so.
        detail = await _act(page, row, "Acknowledge", "on my way <script>")
        await expect(row.locator("td.state")).to_have_text("acknowledged")
        acked = detail.locator(".alarm-history li").filter(has_text="acknowledged")
        await expect(acked).to_contain_text("on my way <script>")
        await expect(acked).to_contain_text(operator)
        await expect(detail.get_by_role("button", name="Acknowledge")).to_have_count(0)
        await expect(badge).to_have_text("1")  # acknowledged is still open

        # A second alarm, from an event: the door opens. Newest first, among the open ones.
        cabinet.open_door()
        door = _alarm_row(page, door_rule)
        await expect(door.locator("td.severity")).to_have_text("minor")
        await expect(door.locator("td.message")).to_have_text("Door 'door' opened")
        await expect(page.locator("#alarm-rows tr.alarm").first).to_contain_text(door_rule)
        await expect(badge).to_have_text("2")
        await dash.shot(page, "alarms")

        # A bookmark of the acknowledged ones lists it; of the active major ones, nothing.
        await page.goto("/alarms?state=acknowledged")
        await expect(page.get_by_label("State")).to_have_value("acknowledged")
        await expect(page.locator("#alarm-rows tr.alarm")).to_have_count(1)
        await expect(_alarm_row(page)).to_have_count(1)
        await page.goto("/alarms?state=active&severity=major")
        await expect(page.locator("#no-alarms")).to_be_visible()
        await expect(page.get_by_role("checkbox", name="major")).to_be_checked()


async def test_the_fleet_and_the_device_page_show_a_devices_alarms(
    dash: Dashboard,  # noqa: F811
    cabinet: Cabinet,  # noqa: F811
    rule: str,
    door_rule: str,
) -> None:
    operator = await dash.user("operator", ["berlin"])
    cabinet.set_supply(HIGH_V)
    cabinet.open_door()
    await eventually(lambda: _open_alarms(dash, 2), "the supply and door alarms raised")
    async with dash.page() as page:
        await dash.log_in(page, operator)
        count = _row(page, cabinet.device_id).locator("td.alarm-count")
        await expect(count).to_have_text("2 major")  # how many, and the highest severity
        await count.get_by_role("link").click()
        await expect(page).to_have_url(re.compile(r"/alarms\?device="))
        await expect(page.locator("#alarm-rows tr.alarm")).to_have_count(2)

        await page.goto(f"/devices/{cabinet.device_id}")
        await expect(page.locator("#live-state")).to_have_text("live")
        supply = _alarm_row(page)
        await expect(supply.locator("td.state")).to_have_text("active")
        await _act(page, supply, "Acknowledge", "seen")
        await expect(supply.locator("td.state")).to_have_text("acknowledged")
        await supply.get_by_role("button", name="Close").click()

        # The door alarm's rule lets users clear it: from the device page, with a comment.
        door = _alarm_row(page, door_rule)
        detail = await _act(page, door, "Clear", "closed it")
        await expect(door.locator("td.state")).to_have_text("cleared")  # shown while open
        cleared = detail.locator(".alarm-history li").filter(has_text="cleared")
        await expect(cleared).to_contain_text("closed it")
        await expect(page.locator("#alarm-count")).to_have_text("1")

        # The supply is back: the acknowledged alarm clears and leaves the page, live.
        cabinet.set_supply(NORMAL_V)
        await expect(supply).to_have_count(0)
        await expect(page.locator("#alarm-count")).to_be_hidden()


async def test_clearing_an_alarm_its_rule_keeps_shows_the_hubs_reason(
    dash: Dashboard,  # noqa: F811
    cabinet: Cabinet,  # noqa: F811
    rule: str,
) -> None:
    operator = await dash.user("operator", ["berlin"])
    async with dash.page() as page:
        await dash.log_in(page, operator, f"/devices/{cabinet.device_id}")
        await expect(page.locator("#live-state")).to_have_text("live")
        cabinet.set_supply(HIGH_V)
        row = _alarm_row(page)
        await expect(row.locator("td.state")).to_have_text("active")
        await row.get_by_role("button", name="Details").click()
        detail = page.locator("tr.alarm-detail")
        clear = detail.get_by_role("button", name="Clear")
        await expect(clear).to_be_visible()  # the rule allowed it when the page loaded

        # Meanwhile an admin changes the rule: its alarms clear by the condition only.
        await dash.hub.alarms.put_rule(
            _rule(False, cabinet.device_id), actor="test", rule_id=RULE_ID, create=False
        )
        await clear.click()
        message = detail.locator(".msg")
        await expect(message).to_contain_text("clearable_by_user is false")
        await expect(message).to_contain_text("(403)")
        await expect(row.locator("td.state")).to_have_text("active")
        [alarm] = await dash.hub.alarms.find(AlarmFilter(rule=RULE_ID, states=["active"]))
        assert alarm.cleared_at is None

        # Read again, the page knows the rule and offers no Clear button.
        await page.reload()
        await _alarm_row(page).get_by_role("button", name="Details").click()
        await expect(page.locator("tr.alarm-detail .alarm-history")).to_contain_text("raised")
        await expect(
            page.locator("tr.alarm-detail").get_by_role("button", name="Clear")
        ).to_have_count(0)


async def test_the_alarms_page_fits_a_phone(
    dash: Dashboard,  # noqa: F811
    cabinet: Cabinet,  # noqa: F811
    rule: str,
) -> None:
    technician = await dash.user("operator", ["berlin"])
    cabinet.set_supply(HIGH_V)
    await eventually(lambda: _open_alarms(dash, 1), "the supply alarm raised")
    async with dash.page(width=390, height=844) as page:
        await dash.log_in(page, technician, "/alarms")
        row = _alarm_row(page)
        await expect(row).to_be_visible()
        await row.get_by_role("button", name="Details").click()
        await expect(page.locator("tr.alarm-detail .alarm-history")).to_contain_text("raised")
        for link in ("Fleet", "Events", "Manage"):
            await expect(page.get_by_role("link", name=link, exact=True)).to_be_visible()
        await expect(page.get_by_role("link", name=re.compile(r"^Alarms"))).to_be_visible()
        overflow = await page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"the alarms page is {overflow} px wider than the phone"
        await dash.shot(page, "alarms-phone")

        # Shelved for the hour the form proposes: marked, and no longer counted.
        await page.locator("tr.alarm-detail").get_by_role("button", name="Shelve").click()
        await expect(row.locator("td.state .shelved")).to_be_visible()
        await expect(page.locator("tr.alarm-detail .alarm-history")).to_contain_text("shelved")
        await expect(page.locator("#alarm-count")).to_be_hidden()


async def _open_alarms(dash: Dashboard, at_least: int) -> bool:  # noqa: F811
    """Whether the hub has raised at least that many open alarms."""
    found = await dash.hub.alarms.find(AlarmFilter(states=["active", "acknowledged"]))
    return len(found) >= at_least


async def test_viewers_see_their_sites_alarms_without_actions(
    dash: Dashboard,  # noqa: F811
    cabinet: Cabinet,  # noqa: F811
    rule: str,
) -> None:
    cabinet.set_supply(HIGH_V)
    await eventually(lambda: _open_alarms(dash, 1), "the supply alarm raised")
    berlin = await dash.user("viewer", ["berlin"])
    madrid = await dash.user("viewer", ["madrid"])
    async with dash.page() as page:
        await dash.log_in(page, berlin, "/alarms")
        row = _alarm_row(page)
        await row.get_by_role("button", name="Details").click()
        await expect(page.locator("tr.alarm-detail .alarm-history")).to_contain_text("raised")
        await expect(page.locator("tr.alarm-detail button")).to_have_count(0)  # a viewer
        await expect(page.locator("#alarm-count")).to_have_text("1")
    async with dash.page() as page:
        await dash.log_in(page, madrid, "/alarms")
        await expect(page.locator("#no-alarms")).to_be_visible()
        await expect(page.locator("#alarm-count")).to_be_hidden()


async def test_a_latched_alarm_is_marked_and_its_acknowledgement_ends_it(
    dash: Dashboard,  # noqa: F811
    cabinet: Cabinet,  # noqa: F811
    rule: str,
) -> None:
    operator = await dash.user("operator", ["berlin"])
    async with dash.page() as page:
        await dash.log_in(page, operator, "/alarms")
        await expect(page.locator("#live-state")).to_have_text("live")
        cabinet.set_supply(HIGH_V)
        row = _alarm_row(page)
        await expect(row.locator("td.state")).to_have_text("active")
        cabinet.set_supply(NORMAL_V)  # the condition is gone, nobody has seen the alarm yet
        await eventually(lambda: _latched(dash), "the alarm latched")
        # The hub tells no live change for a latch (only raised, acknowledged, cleared,
        # shelved): the page shows it when it reads the alarm again.
        await page.reload()
        await expect(row.locator("td.state .latched")).to_be_visible()
        await expect(page.locator("#alarm-count")).to_have_text("1")
        detail = await _act(page, row, "Acknowledge", "")
        await expect(row.locator("td.state")).to_have_text("cleared")  # details still open
        await expect(detail.locator(".alarm-history li").last).to_contain_text("cleared")
        await expect(page.locator("#alarm-count")).to_be_hidden()
        await row.get_by_role("button", name="Close").click()
        await page.reload()
        await expect(page.locator("#no-alarms")).to_be_visible()


async def _latched(dash: Dashboard) -> bool:  # noqa: F811
    """Whether the supply alarm is active with its condition gone."""
    found = await dash.hub.alarms.find(AlarmFilter(rule=RULE_ID, states=["active"]))
    return bool(found) and not found[0].condition_active
