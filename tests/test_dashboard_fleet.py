"""The fleet page with 10,000 devices, in a real browser (Debian's Chromium through Playwright)
against the real hub of ``test_dashboard.py``: the right total, pages turned, a filter that
narrows, the view kept in the address, and a site viewer's counts of its site only.

The devices are written straight into the store (``tests/support/fleet_rows.py``); how long the
first rows and a filter take is printed, asserted only by the page's usual patience: speed is
``benchmarks/fleet.py``'s business.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from playwright.async_api import expect

from tests.support.fleet_rows import FleetRows, register_fleet
from tests.test_dashboard import (  # noqa: F401 (fixtures, found by their names)
    Dashboard,
    _no_page_problems,
    dash,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]
DEVICES = 10_000


def shown(first: int, last: int, total: int) -> str:
    """What the pager says: ``1\u2013100 of 10,002`` (an en dash between)."""
    return f"{first}\u2013{last} of {total:,}"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fleet(dash: Dashboard) -> AsyncIterator[FleetRows]:  # noqa: F811
    """10,000 devices next to the module's cabinet and locker."""
    yield await register_fleet(dash.hub.engine, DEVICES, prefix=f"fleet-{dash.uid}")


async def test_ten_thousand_devices_page_filter_and_stay_in_the_address(
    dash: Dashboard,  # noqa: F811
    fleet: FleetRows,
) -> None:
    everyone = DEVICES + 2  # and the module's cabinet and locker
    admin = await dash.user("admin")
    async with dash.page() as page:
        started = time.perf_counter()
        await dash.log_in(page, admin)
        await expect(page.locator("#device-rows tr")).to_have_count(100)
        login_s = time.perf_counter() - started
        started = time.perf_counter()
        await page.reload()  # the page alone, the session kept
        await expect(page.locator("#device-rows tr")).to_have_count(100)
        await expect(page.locator("#device-rows .values").last).to_have_text("no data yet")
        first_rows_s = time.perf_counter() - started
        await expect(page.locator("#summary")).to_contain_text(f"{everyone:,} devices")
        await expect(page.locator("#range")).to_have_text(shown(1, 100, everyone))

        await page.get_by_role("button", name="Next").click()
        await expect(page.locator("#range")).to_have_text(shown(101, 200, everyone))
        await expect(page).to_have_url(re.compile(r"\?page=2$"))
        # by id: the cabinet "atm-…" first, so the second page starts at the 100th of the fleet
        await expect(page.locator("#device-rows tr").first).to_contain_text(fleet.ids[99])

        started = time.perf_counter()
        await page.get_by_label("Search").fill("Cabinet 4242")
        await expect(page.locator("#device-rows tr")).to_have_count(1)
        filter_s = time.perf_counter() - started
        await expect(page.locator("#device-rows tr")).to_contain_text(fleet.ids[4242])

        await page.get_by_label("Search").fill("")
        await page.get_by_label("Site").select_option("oslo")
        await page.get_by_label("State").select_option("stale")
        await page.get_by_label("Sort").select_option("-last_seen")
        stale_oslo = [
            i
            for i in range(DEVICES)
            if fleet.site_of(i) == "oslo" and fleet.presence_of(i) == "stale"
        ]
        await expect(page.locator("#range")).to_have_text(shown(1, 100, len(stale_oslo)))
        await expect(page.locator("#device-rows tr").first).to_contain_text(
            fleet.ids[stale_oslo[0]]  # the newest seen of them
        )
        view = "?site=oslo&state=stale&sort=-last_seen"
        await expect(page).to_have_url(re.compile(re.escape(view) + "$"))

        await page.goto("/" + view + "&page=2")  # the link reproduces the view
        await expect(page.get_by_label("Site")).to_have_value("oslo")
        await expect(page.locator("#range")).to_have_text(shown(101, 200, len(stale_oslo)))
        await expect(page.locator("#device-rows tr").first).to_contain_text(
            fleet.ids[stale_oslo[100]]
        )
        await dash.shot(page, "overview-10000")
    print(
        f"\nfleet page, {everyone} devices: login to first rows {login_s * 1000:.0f} ms, "
        f"a reload to rows with their details {first_rows_s * 1000:.0f} ms, "
        f"a search {filter_s * 1000:.0f} ms"
    )


async def test_a_site_viewer_counts_its_site_only(
    dash: Dashboard,  # noqa: F811
    fleet: FleetRows,
) -> None:
    paris = sum(fleet.site_of(i) == "paris" for i in range(DEVICES))
    viewer = await dash.user("viewer", ["paris"])
    async with dash.page() as page:
        await dash.log_in(page, viewer)
        await expect(page.locator("#summary")).to_contain_text(f"{paris:,} devices")
        await expect(page.locator("#range")).to_have_text(shown(1, 100, paris))
        options = await page.get_by_label("Site").locator("option").all_text_contents()
        assert options == ["all", "paris"]
