"""The alarm rules page in a real browser (the fixtures of ``test_dashboard.py``): an
operator writes a threshold rule in the form, previews it against the cabinet's stored supply
readings, saves it and sees it raise an alarm; the hub's 422 shows at the field it names; a
viewer reads the rules and gets no form."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from playwright.async_api import Locator, Page, expect

from fieldhub.hub.alarms import AlarmFilter
from tests.test_dashboard import (  # noqa: F401 (fixtures, found by their names)
    Cabinet,
    Dashboard,
    _no_page_problems,
    cabinet,
    dash,
)
from tests.test_dashboard_alarms import HIGH_V, NORMAL_V, _alarm_row, _supply_near
from tests.waiting import eventually

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

RULE_ID = "supply-over-5"
RULE_NAME = "Supply <b>over 5</b>"  # shown as the text it is, never as markup


@pytest_asyncio.fixture(loop_scope="module")
async def stored_supply(dash: Dashboard, cabinet: Cabinet) -> AsyncIterator[str]:  # noqa: F811
    """The cabinet's normal supply stored (the history a preview reads); at the end the rule
    the test made is gone and the supply normal again."""
    await eventually(lambda: _supply_near(cabinet, NORMAL_V), "the supply stored")
    yield cabinet.device_id
    if RULE_ID in {s.rule.id for s in await dash.hub.alarms.rules()}:
        await dash.hub.alarms.delete_rule(RULE_ID, actor="test")
    cabinet.set_supply(NORMAL_V)
    await eventually(lambda: _supply_near(cabinet, NORMAL_V), "the supply normal again")


def _field(page: Page, name: str) -> Locator:
    """A field of the rule form, by its name (the body path a 422's loc names)."""
    return page.locator(f'#rule-form [name="{name}"]')


async def _fill_threshold(page: Page, device_id: str, raise_at: str, clear_at: str) -> None:
    await _field(page, "id").fill(RULE_ID)
    await _field(page, "name").fill(RULE_NAME)
    await _field(page, "severity").select_option("major")
    await _field(page, "condition.kind").select_option("threshold")
    await _field(page, "condition.key").fill("supply")
    await _field(page, "condition.direction").select_option("above")
    await _field(page, "condition.raise").fill(raise_at)
    await _field(page, "condition.clear").fill(clear_at)
    await _field(page, "target.kind").select_option("devices")
    await _field(page, "target.devices").fill(device_id)


async def test_an_operator_previews_a_rule_saves_it_and_it_raises_an_alarm(
    dash: Dashboard,  # noqa: F811
    cabinet: Cabinet,  # noqa: F811
    stored_supply: str,
) -> None:
    operator = await dash.user("operator", ["berlin"])
    async with dash.page() as page:
        await dash.log_in(page, operator, "/alarm-rules")
        await _fill_threshold(page, stored_supply, "5", "4.5")
        await page.get_by_role("button", name="Preview").click()
        found = page.locator("#preview-result tr.preview-alarm")
        await expect(found).to_have_count(1)  # the stored 5.1 V would have raised one
        await expect(found).to_contain_text("5.1")
        named = found.locator('td[data-label="Device"]')
        await expect(named).to_have_text("ATM <b>Hauptbahnhof</b>")  # by /api/fleet/names
        await expect(found.locator("td").nth(2)).to_have_text("open")
        assert RULE_ID not in {s.rule.id for s in await dash.hub.alarms.rules()}  # not saved
        await dash.shot(page, "alarm-rule-preview")

        await page.get_by_role("button", name="Save rule").click()
        await expect(page.locator("#form-status")).to_have_text(f"Rule {RULE_ID} saved.")
        row = page.locator(f'#rule-rows tr[data-rule="{RULE_ID}"]')
        await expect(row.locator("td.name")).to_contain_text(RULE_NAME)  # text, not markup
        await expect(row.locator("td.condition")).to_have_text("supply above 5 (clear 4.5)")

        cabinet.set_supply(HIGH_V)  # a new reading: the saved rule raises on it
        await eventually(
            lambda: dash.hub.alarms.find(AlarmFilter(rule=RULE_ID)), "the rule's alarm"
        )
        await page.goto("/alarms")
        await expect(_alarm_row(page, RULE_NAME)).to_be_visible()


async def test_a_422_shows_next_to_the_field_it_names(
    dash: Dashboard,  # noqa: F811
    stored_supply: str,
) -> None:
    operator = await dash.user("operator", ["berlin"])
    async with dash.page() as page:
        await dash.log_in(page, operator, "/alarm-rules")
        await _fill_threshold(page, stored_supply, "5", "6")  # clear on the wrong side
        await page.get_by_role("button", name="Save rule").click()
        clear = page.locator("#rule-form label").filter(has_text="Clear at")
        await expect(clear.locator(".field-error")).to_contain_text("must be below raise")
        await expect(_field(page, "condition.clear")).to_have_attribute("aria-invalid", "true")
    assert RULE_ID not in {s.rule.id for s in await dash.hub.alarms.rules()}


async def test_a_viewer_reads_the_rules_without_a_form(
    dash: Dashboard,  # noqa: F811
    cabinet: Cabinet,  # noqa: F811
) -> None:
    rule = {
        "id": "door-watch",
        "name": "Door <i>watch</i>",
        "target": {"devices": [cabinet.device_id]},
        "condition": {"kind": "event", "match": "door.*"},
    }
    await dash.hub.alarms.put_rule(rule, actor="test", create=True)
    viewer = await dash.user("viewer", ["berlin"])
    try:
        async with dash.page() as page:
            await dash.log_in(page, viewer, "/alarm-rules")
            row = page.locator('#rule-rows tr[data-rule="door-watch"]')
            await expect(row.locator("td.name")).to_contain_text("Door <i>watch</i>")
            await expect(row.locator("td.condition")).to_have_text("event door.*")
            await expect(page.locator("#read-only")).to_be_visible()
            await expect(page.locator("#editor")).to_be_hidden()
            await expect(row.get_by_role("button")).to_have_count(0)
    finally:
        await dash.hub.alarms.delete_rule("door-watch", actor="test")
