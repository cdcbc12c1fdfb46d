"""A gateway and its children in the dashboard, in a real browser (Debian's Chromium through
Playwright) against the real hub of ``test_dashboard.py`` and a real gateway uplink (its LAN
side a stand-in): the gateway's page lists its children with their link state, a child's page
names its gateway, and when the gateway stops the children turn unreachable without a reload.
"""

from __future__ import annotations

import pytest
from playwright.async_api import expect

from fieldhub.gateway.ports import ControllerInfo
from tests.gateway_support import StandInLan, gateway_on, register_gateway
from tests.test_dashboard import (  # noqa: F401 (fixtures, found by their names)
    Dashboard,
    _no_page_problems,
    dash,
)

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]


async def test_the_gateway_page_lists_children_and_a_child_names_its_gateway(
    dash: Dashboard,  # noqa: F811
) -> None:
    hub, uid = dash.hub, dash.uid
    gw, kept, lost = f"gw-{uid}", f"ctrl1-{uid}", f"ctrl2-{uid}"
    credentials = await register_gateway(hub, gw, site="berlin")
    for child in (kept, lost):
        await hub.devices.create_child(child, gw)  # in the gateway's site
    viewer = await dash.user("viewer", sites=["berlin"])
    async with (
        gateway_on(hub, gw, credentials, dash.folder / "gw", StandInLan()) as uplink,
        dash.page() as page,
    ):
        for child in (kept, lost):
            await uplink.controller_online(ControllerInfo(child, "10.0.0.7:7070"))
        await uplink.controller_offline(lost, "no heartbeat for 15 s")
        await dash.log_in(page, viewer, f"/devices/{gw}")

        rows = page.locator("#child-rows tr")
        await expect(rows).to_have_count(2)
        kept_row, lost_row = rows.filter(has_text=kept), rows.filter(has_text=lost)
        await expect(kept_row.locator(".presence")).to_have_attribute("data-presence", "online")
        await expect(kept_row).to_contain_text(f"linked to gateway {gw}")
        await expect(lost_row.locator(".presence")).to_have_attribute("data-presence", "offline")
        await expect(lost_row).to_contain_text("link lost: no heartbeat for 15 s")
        await dash.shot(page, "gateway-children")

        await kept_row.get_by_role("link", name=kept).click()
        await expect(page).to_have_url(f"{dash.url}/devices/{kept}")
        parent = page.locator("#meta a.parent")
        await expect(parent).to_have_text(f"via {gw}")
        await expect(page.locator("#children-section")).to_be_hidden()
        await parent.click()
        await expect(page).to_have_url(f"{dash.url}/devices/{gw}")
        await expect(rows).to_have_count(2)
    # The gateway stopped (page closed with it): open it again and watch it live this time.
    async with (
        gateway_on(hub, gw, credentials, dash.folder / "gw", StandInLan()) as uplink,
        dash.page() as page,
    ):
        await uplink.controller_online(ControllerInfo(kept, "10.0.0.7:7070"))
        await dash.log_in(page, viewer, f"/devices/{gw}")
        kept_badge = page.locator("#child-rows tr").filter(has_text=kept).locator(".presence")
        await expect(kept_badge).to_have_attribute("data-presence", "online")
        await uplink.close()
        await expect(kept_badge).to_have_attribute("data-presence", "unreachable")
        await expect(page.locator("#child-rows tr").filter(has_text=kept)).to_contain_text(
            f"via {gw}: gateway offline"
        )
