"""Device pickers among 10,000 devices, in a real browser (Debian's Chromium through
Playwright) against the real hub of ``test_dashboard.py``: a user finds a device by typing
part of its name and filters the alarms by it, while the page fetches a few kilobytes, never
the fleet; a site user is offered only their sites' devices; the notifications page lists the
fleet's sites from its counts.

The devices are written straight into the store (``tests/support/fleet_rows.py``), as the
fleet page's test does.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from urllib.parse import parse_qs, urlsplit

import pytest
import pytest_asyncio
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Page, Request, expect

from tests.support.fleet_rows import FleetRows, open_alarm, register_fleet
from tests.test_dashboard import (  # noqa: F401 (fixtures, found by their names)
    Dashboard,
    _no_page_problems,
    dash,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]
DEVICES = 10_000
RULE_ID = "picker-hot"
FLEET_BYTES = 1_000_000
"""The whole fleet's device list is megabytes; a page that fetched it would pass this."""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fleet(dash: Dashboard) -> AsyncIterator[FleetRows]:  # noqa: F811
    """10,000 devices next to the module's cabinet and locker; two of them alarmed."""
    rows = await register_fleet(dash.hub.engine, DEVICES, prefix=f"fleet-{dash.uid}")
    alarmed = [rows.ids[4242], rows.ids[4243]]
    rule = {
        "id": RULE_ID,
        "name": "Too hot",
        "severity": "major",
        "target": {"devices": alarmed},
        "condition": {
            "kind": "threshold",
            "key": "temp",
            "direction": "above",
            "raise": 60,
            "clear": 50,
        },
    }
    await dash.hub.alarms.put_rule(rule, actor="test", create=True)
    for device_id in alarmed:
        await open_alarm(dash.hub.engine, device_id, RULE_ID, "major")
    yield rows


class Traffic:
    """The API requests a page made, and the bytes of their answers."""

    def __init__(self) -> None:
        self.requests: list[Request] = []

    def of(self, path: str) -> list[dict[str, list[str]]]:
        """The query of every request to ``path``."""
        found = [urlsplit(r.url) for r in self.requests]
        return [parse_qs(url.query) for url in found if url.path == path]

    async def bytes(self) -> int:
        """The bytes of the answers' bodies (a search the picker abandoned has none)."""
        total = 0
        for request in self.requests:
            try:
                answer = await request.response()
                total += len(await answer.body()) if answer is not None else 0
            except PlaywrightError:
                continue
        return total


@contextmanager
def traffic(page: Page) -> Iterator[Traffic]:
    seen = Traffic()

    def note(request: Request) -> None:
        if urlsplit(request.url).path.startswith("/api/"):
            seen.requests.append(request)

    page.on("request", note)
    try:
        yield seen
    finally:
        page.remove_listener("request", note)


async def test_a_user_finds_a_device_by_name_among_ten_thousand_and_filters_alarms(
    dash: Dashboard,  # noqa: F811
    fleet: FleetRows,
) -> None:
    wanted = fleet.ids[4242]
    admin = await dash.user("admin")
    async with dash.page() as page:
        await dash.log_in(page, admin, "/alarms")
        with traffic(page) as seen:
            await page.reload()
            rows = page.locator("#alarm-rows tr.alarm")
            await expect(rows).to_have_count(2)
            named_rows = await rows.locator("td.device a").all_text_contents()
            assert sorted(named_rows) == ["Cabinet 4242", "Cabinet 4243"]  # names, not ids

            picker = page.get_by_role("combobox", name="Device")
            await picker.press_sequentially("binet 4242", delay=30)  # part of the name
            option = page.get_by_role("listbox").get_by_role("option")
            await expect(option).to_have_count(1)
            await expect(option).to_have_text(f"Cabinet 4242 {wanted}")
            await expect(page.get_by_role("status").filter(has_text="match")).to_have_text(
                "1 device matches"
            )
            await expect(picker).to_have_attribute("aria-expanded", "true")
            await picker.press("ArrowDown")
            await expect(option).to_have_attribute("aria-selected", "true")
            await dash.shot(page, "alarms-device-picker")
            await picker.press("Enter")

            await expect(picker).to_have_value(wanted)
            await expect(picker).to_have_attribute("aria-expanded", "false")
            await expect(page).to_have_url(re.compile(rf"\?device={re.escape(wanted)}$"))
            await expect(rows).to_have_count(1)
            await expect(rows.locator("td.device a")).to_have_text("Cabinet 4242")

            searches = seen.of("/api/devices")
            assert searches, "the picker searched through the API"
            assert all(q["limit"] == ["20"] and q["q"] for q in searches), searches
            [named] = seen.of("/api/fleet/names")  # the two alarmed devices, asked for once
            assert sorted(named["device"]) == sorted([wanted, fleet.ids[4243]])
            fetched = await seen.bytes()
        fleet_list = await page.request.get("/api/devices", params={"limit": DEVICES})
        everyone = len(await fleet_list.body())  # what each page view used to fetch
        assert fetched < FLEET_BYTES / 10 < everyone / 10, (fetched, everyone)
        print(
            f"\nalarms page, a reload and a search among {DEVICES} devices: {fetched} bytes "
            f"(the device list it used to load: {everyone} bytes)"
        )

        # The view in the address: a bookmark shows the same device's alarms.
        await page.goto(f"/alarms?device={wanted}")
        await expect(page.get_by_role("combobox", name="Device")).to_have_value(wanted)
        await expect(page.locator("#alarm-rows tr.alarm")).to_have_count(1)


async def test_a_site_user_is_offered_only_their_sites_devices(
    dash: Dashboard,  # noqa: F811
    fleet: FleetRows,
) -> None:
    typed = "Cabinet 424"  # Cabinet 424 and 4240 to 4249 match, three of them in paris
    paris = [
        i for i in [424, *range(4240, 4250)] if fleet.site_of(i) == "paris"
    ]  # fmt: skip
    viewer = await dash.user("viewer", ["paris"])
    async with dash.page() as page:
        await dash.log_in(page, viewer, "/events")
        picker = page.get_by_role("combobox", name="Device")
        await picker.fill(typed)
        options = page.get_by_role("listbox").get_by_role("option")
        await expect(options).to_have_text([f"Cabinet {i} {fleet.ids[i]}" for i in paris])
        await expect(page.get_by_role("status").filter(has_text="match")).to_have_text(
            f"{len(paris)} devices match"
        )
        await options.filter(has_text=f"Cabinet {paris[0]} ").click()
        await expect(picker).to_have_value(fleet.ids[paris[0]])

        # Several devices: the picker completes the last of the list.
        await picker.press_sequentially(f", Cabinet {paris[-1]}", delay=30)
        await expect(options).to_have_count(1)
        await picker.press("ArrowDown")
        await picker.press("Enter")
        both = [fleet.ids[paris[0]], fleet.ids[paris[-1]]]
        await expect(picker).to_have_value(", ".join(both))
        await page.get_by_role("button", name="Show").click()
        await expect(page).to_have_url(re.compile("device=" + "&device=".join(both)))

        await picker.fill("")
        await picker.fill(fleet.ids[4242])  # madrid's: not offered
        await expect(page.get_by_role("status").filter(has_text="match")).to_have_text(
            "0 devices match"
        )
        await expect(options).to_have_count(0)


async def test_a_rules_device_targets_are_picked_by_name(
    dash: Dashboard,  # noqa: F811
    fleet: FleetRows,
) -> None:
    operator = await dash.user("operator", ["oslo"])
    oslo = [i for i in (7, 11) if fleet.site_of(i) == "oslo"]  # Cabinet 7 and 11: oslo's
    assert len(oslo) == 2
    async with dash.page() as page:
        await dash.log_in(page, operator, "/alarm-rules")
        await page.locator('#rule-form [name="target.kind"]').select_option("devices")
        picker = page.get_by_role("combobox", name="Device ids")
        for n, i in enumerate(oslo):
            await picker.press_sequentially(f"{', ' if n else ''}Cabinet {i}", delay=30)
            option = page.get_by_role("listbox").get_by_role("option")
            await expect(option.first).to_have_text(f"Cabinet {i} {fleet.ids[i]}")
            await option.first.click()
        await expect(picker).to_have_value(", ".join(fleet.ids[i] for i in oslo))


async def test_the_notifications_page_lists_the_fleets_sites_from_its_counts(
    dash: Dashboard,  # noqa: F811
    fleet: FleetRows,
) -> None:
    admin = await dash.user("admin")
    async with dash.page() as page:
        await dash.log_in(page, admin, "/notifications")
        with traffic(page) as seen:
            await page.reload()
            sites = page.locator("#sites-field input")
            await expect(sites).to_have_count(len(fleet.sites))
            values = [await box.get_attribute("value") for box in await sites.all()]
            assert values == sorted(fleet.sites)
            assert not seen.of("/api/devices")
            assert await seen.bytes() < FLEET_BYTES / 10
