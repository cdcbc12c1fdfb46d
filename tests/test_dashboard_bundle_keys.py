"""Bundle signing keys on the manage page, in a real browser (the fixtures of
``test_dashboard.py``): an admin registers a public key with an expiry in their local time,
the hub's 422s show at the fields they name, and the list and the API then hold the expiry
the form said; an operator is not shown the section."""

from __future__ import annotations

import pytest
from playwright.async_api import Locator, Page, expect

from fieldhub.bundles import SigningKey
from tests.test_dashboard import (  # noqa: F401 (fixtures, found by their names)
    Dashboard,
    _no_page_problems,
    dash,
)

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]
EXPIRES = "2027-06-30T12:00"  # as a datetime-local field holds it: the browser's local time


def _error_at(page: Page, name: str) -> Locator:
    """The message a 422 left next to the key form's field ``name``."""
    return page.locator(f'#bundle-key-form label:has([name="{name}"]) .field-error')


async def test_an_admin_registers_a_key_with_an_expiry(dash: Dashboard) -> None:  # noqa: F811
    public = SigningKey.generate().public
    admin = await dash.user("admin")
    async with dash.page() as page:
        await dash.log_in(page, admin, "/manage")
        section = page.locator("#bundle-keys")
        await expect(section.get_by_role("heading")).to_have_text("Bundle signing keys")
        await expect(section.locator("#no-bundle-keys")).to_be_visible()
        form = section.locator("#bundle-key-form")
        await form.get_by_label("Name").fill("release <b>2027</b>")
        await form.get_by_label("Public key").fill("not a key")
        await form.get_by_role("button", name="Register key").click()
        await expect(_error_at(page, "public_key")).to_contain_text("base64 of 32 bytes")

        await form.get_by_label("Public key").fill(public.to_text())
        await form.get_by_label("Expires").fill("1969-06-01T12:00")  # before epoch ms 0
        await form.get_by_role("button", name="Register key").click()
        await expect(_error_at(page, "expires_at")).to_contain_text("greater than or equal to 0")
        await expect(_error_at(page, "public_key")).to_have_count(0)

        await form.get_by_label("Expires").fill(EXPIRES)
        await form.get_by_role("button", name="Register key").click()
        await expect(page.locator("#bundle-keys-status")).to_have_text(
            f"Key {public.key_id} registered."
        )
        row = section.locator(f'#bundle-key-rows tr[data-key="{public.key_id}"]')
        await expect(row.locator("td").first).to_have_text("release <b>2027</b>")  # as text
        await expect(row.locator("td.expiry")).to_have_text("until 2027-06-30 12:00:00")
        await expect(_error_at(page, "expires_at")).to_have_count(0)
        await dash.shot(page, "manage-bundle-keys")
        expected_ms = await page.evaluate(f"new Date('{EXPIRES}').getTime()")
    [held] = [k for k in await dash.hub.bundles.keys() if k.key_id == public.key_id]
    assert held.expires_at == expected_ms


async def test_an_operator_is_not_shown_the_keys(dash: Dashboard) -> None:  # noqa: F811
    operator = await dash.user("operator", ["berlin"])
    async with dash.page() as page:
        await dash.log_in(page, operator, "/manage")
        await expect(page.get_by_role("heading", name="My API tokens")).to_be_visible()
        await expect(page.locator("#bundle-keys")).to_be_hidden()
