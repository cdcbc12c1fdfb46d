"""The dashboard in a real browser: Chromium (the Debian package) driven by Playwright against a
real hub over HTTP, with a real agent on gpiozero mock pins.

One hub, one agent and one browser serve the whole module (starting Chromium costs seconds);
each test opens its own browser context, so its cookies are its own. What the tests assert is
what a person sees on the page. Screenshots of the main pages go to a temporary folder always,
and also to ``$FIELDHUB_SCREENSHOTS`` when set (``FIELDHUB_SCREENSHOTS=docs/screenshots``
refreshes the ones in the docs).
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import secrets
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import (
    Browser,
    Dialog,
    Locator,
    Page,
    Route,
    async_playwright,
    expect,
)

from fieldhub.agent.config import AgentConfig, DeviceSection, HubSection, WebSection
from fieldhub.agent.outbox import OutboxReporter
from fieldhub.agent.service import Agent
from fieldhub.agent.units import (
    AdcConfig,
    DoorConfig,
    Drivers,
    SocketConfig,
    VoltageConfig,
    mock_pin_factory,
)
from fieldhub.agent.units.simulate import MockMCP3xxx, SwitchPin
from fieldhub.clock import now_ms
from fieldhub.hub.api.web import CONTENT_SECURITY_POLICY
from fieldhub.hub.app import Hub
from fieldhub.hub.auth import Role
from fieldhub.hub.config import HubSettings
from fieldhub.hub.store.credentials import IssuedCredentials
from tests.hub_client import served
from tests.waiting import eventually

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

CHROMIUM = os.environ.get("FIELDHUB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "correct horse battery"
DOOR_PIN, SOCKET_PIN = 27, 22
ADC_VREF, ADC_SCALE, ADC_BITS = 3.3, 2.0, 10
SAMPLE_S = 0.1  # the agent reads its supply voltage this often
LIVE_S = 1.0  # what "live" promises: on the page within a second of the device publishing
SETTLE_MS = 10_000  # generous bound for things that take the agent or the broker a while
expect.set_options(timeout=SETTLE_MS)


def shown(value: Any) -> str:
    """A number as the pages show it (at most 3 decimals, no trailing zeros: 5.0 is "5")."""
    text = repr(round(float(value), 3))
    return text.removesuffix(".0")


def _chromium() -> str:
    """The browser, or a failure that says how to get it (CI installs it: never skip)."""
    found = shutil.which(CHROMIUM)
    if found is None:
        pytest.fail(
            f"Chromium not found at {CHROMIUM}: install the Debian package `chromium` "
            "(scripts/system-packages does), or point FIELDHUB_CHROMIUM at one",
            pytrace=False,
        )
    return found


class Cabinet:
    """A device of the hub run by a real agent: a door switch, a socket relay and a supply
    voltage measured through an MCP3008, all on gpiozero mock pins the test drives."""

    def __init__(self, hub: Hub, folder: Path, device_id: str, issued: IssuedCredentials):
        self.hub = hub
        self.device_id = device_id
        self.pins: Any = mock_pin_factory(SwitchPin)
        self.adc = MockMCP3xxx(self.pins, bits=ADC_BITS, vref=ADC_VREF)
        self.pins.pin(DOOR_PIN).drive_low()  # closed
        self.set_supply(5.1)
        self.config = AgentConfig(
            device=DeviceSection(id=device_id),
            hub=HubSection(broker=hub.broker_url, username=issued.username),
            data_folder=str(folder / device_id),
            units=[
                DoorConfig(name="door", pin=DOOR_PIN, debounce_s=0.02),
                SocketConfig(name="socket", pin=SOCKET_PIN, initial="on", min_off_s=0),
                VoltageConfig(
                    name="supply",
                    adc=AdcConfig(chip="MCP3008", channel=0, vref=ADC_VREF, scale=ADC_SCALE),
                    under_voltage=False,
                    sample_s=SAMPLE_S,
                    deadband=0.001,
                ),
            ],
            web=WebSection(enabled=False),
        )
        self.secret = issued.secret

    def set_supply(self, volts: float) -> None:
        """Put ``volts`` on the supply (the agent reads it within ``SAMPLE_S``)."""
        self.adc.set_volts(0, volts / ADC_SCALE)

    async def supply_stored(self) -> str:
        """The newest supply reading the hub stored, written as the pages write numbers."""
        latest = {v.key: v.value for v in await self.hub.queries.latest(self.device_id)}
        return shown(latest["supply"]) if "supply" in latest else ""

    def open_door(self) -> None:
        self.pins.pin(DOOR_PIN).drive_high()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Agent]:
        async with Agent(self.config, self.secret, drivers=Drivers(pin_factory=self.pins)) as a:
            yield a

    def kept_readings(self, agent: Agent, minutes: int) -> None:
        """Readings of the last ``minutes``, one a minute, as an agent that was cut off from
        the hub keeps them in its outbox and sends them when it is back: history to chart."""
        assert agent.outbox is not None
        reporter = OutboxReporter(agent.outbox)
        now = now_ms()
        for minute in range(minutes, 0, -1):
            volts = 5.1 + 0.06 * math.sin(minute / 7) + 0.01 * math.sin(minute * 1.7)
            reporter.telemetry({"supply": round(volts, 3)}, now - minute * 60_000)


class Dashboard:
    """The module's hub, served over HTTP, its browser, and what the tests share."""

    def __init__(self, hub: Hub, url: str, browser: Browser, folder: Path, uid: str):
        self.hub = hub
        self.url = url
        self.browser = browser
        self.folder = folder
        self.uid = uid
        self.shots = folder / "screenshots"
        self.shots.mkdir()
        self.problems: list[str] = []  # script errors and CSP violations seen on any page
        self.cabinet: Cabinet | None = None

    async def add_cabinet(self, name: str, site: str = "berlin", label: str = "") -> Cabinet:
        device_id = f"{name}-{self.uid}"
        new = await self.hub.devices.create(
            device_id, name=label, labels={"site": site, "group": "atm"}
        )
        return Cabinet(self.hub, self.folder, device_id, new.credentials)

    async def user(self, role: str, sites: list[str] | None = None) -> str:
        name = f"{role}-{secrets.token_hex(3)}"
        await self.hub.auth.accounts.create_user(
            name, role=Role(role), sites=sites or [], password=PASSWORD, actor="test"
        )
        return name

    @asynccontextmanager
    async def page(self, *, width: int = 1280, height: int = 900) -> AsyncIterator[Page]:
        """A page in a browser context of its own (its own cookies), watched for errors."""
        context = await self.browser.new_context(
            viewport={"width": width, "height": height}, base_url=self.url
        )
        context.set_default_timeout(SETTLE_MS)
        page = await context.new_page()
        page.on("pageerror", lambda error: self.problems.append(f"script error: {error}"))
        page.on("console", lambda msg: self._console(msg.type, msg.text))
        page.on("dialog", self._dialog)
        try:
            yield page
        finally:
            await context.close()

    async def _dialog(self, dialog: Dialog) -> None:
        self.problems.append(f"dialog: {dialog.message}")  # e.g. an alert() smuggled in a name
        await dialog.dismiss()

    def _console(self, kind: str, text: str) -> None:
        if kind == "error" and "Content Security Policy" in text:
            self.problems.append(f"CSP: {text}")

    async def log_in(self, page: Page, name: str, then: str = "/") -> None:
        """Open ``then``, get sent to the login page, log in, and land on ``then``."""
        await page.goto(then)
        await expect(page).to_have_url(re.compile(r"/login\?next="))
        await page.get_by_label("Name").fill(name)
        await page.get_by_label("Password").fill(PASSWORD)
        await page.get_by_role("button", name="Log in").click()
        await expect(page).to_have_url(self.url + then)

    async def shot(self, page: Page, name: str) -> None:
        """Save a screenshot of the whole page (and into $FIELDHUB_SCREENSHOTS when set)."""
        path = self.shots / f"{name}.png"
        await page.screenshot(path=path, full_page=True, animations="disabled")
        target = os.environ.get("FIELDHUB_SCREENSHOTS")
        if target:
            await asyncio.to_thread(_copy_into, path, Path(target))


def _copy_into(file: Path, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(file, folder / file.name)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def dash(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Dashboard]:
    """A hub (embedded broker, SQLite) over HTTP, a running cabinet, and Chromium."""
    chromium = _chromium()
    folder = tmp_path_factory.mktemp("dashboard")
    uid = secrets.token_hex(3)
    options: dict[str, Any] = {"data": folder / "hub", "instance": f"dash{uid}"}
    settings = HubSettings(**options, mqtt="127.0.0.1:0", http="127.0.0.1:0")
    async with AsyncExitStack() as stack:
        hub = await stack.enter_async_context(Hub(settings))
        url = await stack.enter_async_context(served(hub))
        playwright = await stack.enter_async_context(async_playwright())
        # launch() gives the browser a fresh user-data folder of its own, removed at close.
        browser = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        stack.push_async_callback(browser.close)
        dashboard = Dashboard(hub, url, browser, folder, uid)
        cabinet = await dashboard.add_cabinet("atm", label="ATM <b>Hauptbahnhof</b>")
        # One more, never connected, in a site of its own: the overview has more than one kind.
        await hub.devices.create(
            f"locker-{uid}", name="Locker 7", labels={"site": "madrid", "group": "locker"}
        )
        agent = await stack.enter_async_context(cabinet.running())
        cabinet.kept_readings(agent, 50)
        dashboard.cabinet = cabinet
        yield dashboard
    print(f"\ndashboard screenshots: {folder / 'screenshots'}")


@pytest.fixture
def cabinet(dash: Dashboard) -> Cabinet:
    assert dash.cabinet is not None
    return dash.cabinet


@pytest.fixture(autouse=True)
def _no_page_problems(dash: Dashboard) -> Iterator[None]:
    """No script error, CSP violation or dialog on any page of a test."""
    dash.problems.clear()
    yield
    assert not dash.problems, dash.problems


def _row(page: Page, device_id: str) -> Locator:
    """A device's row in the overview."""
    return page.locator("#device-rows tr").filter(has_text=device_id)


def _action(page: Page, action: str) -> Locator:
    """The form of one command button (with its argument inputs) on a device page."""
    return page.locator("form.action").filter(has=page.get_by_role("button", name=action))


async def test_log_in_and_see_a_device_come_online_and_go(dash: Dashboard) -> None:
    door2 = await dash.add_cabinet("door2", label="<img src=x onerror=alert(1)>")
    admin = await dash.user("admin")
    async with dash.page() as page:
        answer = await page.request.get("/")
        assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        await dash.log_in(page, admin)
        row = _row(page, door2.device_id)
        # The name is shown as the text it is; had it become markup, the dialog check fails.
        await expect(row.get_by_role("link")).to_have_text("<img src=x onerror=alert(1)>")
        await expect(row.locator(".presence")).to_have_text("unknown")
        async with door2.running():
            await expect(row.locator(".presence")).to_have_text(re.compile(r"^online · "))
            supply = await eventually(door2.supply_stored, "a supply reading stored")
            await expect(row.locator('.kv[data-key="supply"] .v')).to_have_text(supply)
            await expect(page.locator("#live-state")).to_have_text("live")
        await expect(row.locator(".presence")).to_have_text(re.compile(r"^offline · "))
        await expect(row.locator(".problems")).to_contain_text("offline")
        await expect(page.locator("#summary")).to_contain_text("1 offline")
        await page.get_by_label("State").select_option("offline")
        await expect(page.locator("#device-rows tr")).to_have_count(1)
        await expect(page).to_have_url(re.compile(r"\?state=offline$"))
        await page.get_by_label("State").select_option("")
        await dash.shot(page, "overview")


async def test_logging_in_before_the_page_is_ready_keeps_the_password_out_of_the_address(
    dash: Dashboard,
) -> None:
    admin = await dash.user("admin")
    async with dash.page() as page:

        async def slow(route: Route) -> None:  # a hub slow to say whether one is logged in
            await asyncio.sleep(1)
            await route.continue_()

        await page.route("**/api/auth/me", slow)
        addresses: list[str] = []
        page.on("framenavigated", lambda frame: addresses.append(frame.url))
        await page.goto("/login")
        await page.get_by_label("Name").fill(admin)
        await page.get_by_label("Password").fill(PASSWORD)
        await page.get_by_role("button", name="Log in").click()
        await expect(page).to_have_url(dash.url + "/")
        assert not [a for a in addresses if "password" in a], addresses


async def test_a_telemetry_value_is_on_the_page_within_a_second(
    dash: Dashboard, cabinet: Cabinet
) -> None:
    operator = await dash.user("operator", ["berlin"])
    async with dash.page() as page:
        await dash.log_in(page, operator, f"/devices/{cabinet.device_id}")
        tile = page.locator("#latest .tile").filter(has_text="supply").locator(".v")
        chart = page.locator(".chart").filter(has_text="supply").locator(".chart-value")
        await expect(tile).to_have_text(await cabinet.supply_stored())
        await expect(page.locator("#live-state")).to_have_text("live")
        for volts in (4.2, 5.0):
            before, average = await tile.text_content(), await chart.text_content()
            started = time.monotonic()
            cabinet.set_supply(volts)  # read and published within SAMPLE_S
            await expect(tile).not_to_have_text(before or "", timeout=(SAMPLE_S + LIVE_S) * 1000)
            assert time.monotonic() - started < SAMPLE_S + LIVE_S
            await expect(tile).to_have_text(await cabinet.supply_stored())
            # The chart's newest point, averaged over its 10 s bucket, moved too.
            await expect(chart).not_to_have_text(average or "")
            await expect(chart).to_have_text(re.compile(r"\(10 s avg\)$"))
        # The dip below 4.75 V (the unit's low limit) was a warning event.
        await expect(page.locator("#event-rows")).to_contain_text("voltage.low")


async def test_the_door_opens_and_the_event_appears(dash: Dashboard, cabinet: Cabinet) -> None:
    viewer = await dash.user("viewer", ["berlin"])
    async with dash.page() as page:
        await dash.log_in(page, viewer, f"/devices/{cabinet.device_id}")
        log = await page.context.new_page()
        await log.goto("/events")
        await expect(log.locator("#live-state")).to_have_text("live")
        await expect(page.locator("#live-state")).to_have_text("live")
        await expect(page.locator("#twin")).to_contain_text("closed")

        cabinet.open_door()

        door_event = page.locator("#event-rows tr").filter(has_text="door.opened")
        await expect(door_event).to_contain_text("Door 'door' opened")
        await expect(page.locator("#twin tr").filter(has_text="door")).to_contain_text("open")
        in_log = log.locator("#event-rows tr").filter(has_text="door.opened")
        await expect(in_log).to_contain_text(cabinet.device_id)
        await dash.shot(log, "events")
        # The same event in the log, filtered by type through the API.
        await log.get_by_label("Type").fill("door.*")
        await log.get_by_role("button", name="Show").click()
        await expect(log).to_have_url(re.compile(r"type=door\.\*"))
        await expect(log.locator("#event-rows tr")).to_have_count(1)
        # A viewer sees no command buttons: the role cannot send them.
        await expect(page.locator("#actions")).to_contain_text("may not send commands")


async def test_a_command_button_shows_the_result(dash: Dashboard, cabinet: Cabinet) -> None:
    operator = await dash.user("operator", ["berlin"])
    async with dash.page() as page:
        await dash.log_in(page, operator, f"/devices/{cabinet.device_id}")
        form = _action(page, "socket.set")
        await form.get_by_label("on").set_checked(False)
        await form.get_by_role("button", name="socket.set").click()
        entry = page.locator("#command-log li").filter(has_text="socket.set")
        await expect(entry.locator(".status")).to_have_text("succeeded")
        await expect(entry).to_contain_text('"on":false')
        await expect(page.locator("#twin tr").filter(has_text="socket")).to_contain_text("off")
        assert cabinet.pins.pin(SOCKET_PIN).state == 0  # the relay really switched
        # An action with an argument: its input, typed as the device declared it (float),
        # with the default, range and unit the device gave (the socket's 0 s minimum off
        # time: the shortest cycle, 0.1 s, is the default).
        cycle = _action(page, "socket.cycle")
        hint = "float · default 0.1 s · 0.1\u20133600 s"  # an en dash, as the page writes ranges
        await expect(cycle.locator(".hint")).to_have_text(hint)
        off_s = cycle.get_by_label("off_s")
        await expect(off_s).to_have_attribute("min", "0.1")
        await expect(off_s).to_have_attribute("max", "3600")
        await expect(off_s).to_have_attribute("placeholder", "0.1")
        await off_s.fill("0.2")
        await cycle.get_by_role("button", name="socket.cycle").click()
        cycled = page.locator("#command-log li").filter(has_text="socket.cycle")
        await expect(cycled.locator(".status")).to_have_text("succeeded")
        await page.get_by_role("button", name="24h").click()
        await expect(page.get_by_role("button", name="24h")).to_have_attribute(
            "aria-pressed", "true"
        )
        await page.get_by_role("button", name="1h").click()
        await dash.shot(page, "device")


async def test_a_viewer_of_another_site_does_not_see_the_device(
    dash: Dashboard, cabinet: Cabinet
) -> None:
    viewer = await dash.user("viewer", ["paris"])
    async with dash.page() as page:
        await dash.log_in(page, viewer)
        await expect(page.locator("#summary")).to_contain_text("0 devices")
        await expect(page.locator("#device-rows")).not_to_contain_text(cabinet.device_id)
        await page.goto(f"/devices/{cabinet.device_id}")
        await expect(page.locator("#status")).to_have_text(
            "No such device, or not one of your sites."
        )
        await page.goto("/events")
        await expect(page.locator("#no-events")).to_be_visible()
        await page.goto("/manage")
        await expect(page.get_by_role("heading", name="Users")).to_be_hidden()
        await expect(page.get_by_role("heading", name="Add a device")).to_be_hidden()


async def test_adding_a_device_shows_its_credentials_once(dash: Dashboard) -> None:
    admin = await dash.user("admin")
    device_id = f"new-{dash.uid}"
    async with dash.page() as page:
        await dash.log_in(page, admin, "/manage")
        form = page.locator("#add-device-form")
        await form.get_by_label("Id", exact=True).fill(device_id)
        await form.get_by_label("Name", exact=True).fill("New ATM")
        await form.get_by_label("Site").fill("berlin")
        await form.get_by_role("button", name="Add device").click()
        box = page.locator(".once")
        await expect(box).to_contain_text(f"Credentials of {device_id}")
        await expect(box).to_contain_text("Shown only now")
        username = await box.get_by_label("username").input_value()
        secret = await box.get_by_label("secret").input_value()
        assert await dash.hub.credentials.verify(username, secret, device_id)
        await dash.shot(page, "manage")
        # Adding it again: the hub's refusal, in its own words.
        await form.get_by_label("Id", exact=True).fill(device_id)
        await form.get_by_role("button", name="Add device").click()
        await expect(page.locator("#add-device-status")).to_contain_text("(409)")
        await page.reload()
        await expect(page.get_by_role("heading", name="Add a device")).to_be_visible()
        await expect(page.locator(".once")).to_have_count(0)
        assert secret not in await page.content()
    await dash.hub.devices.delete(device_id)


async def test_an_operator_approves_a_waiting_device_and_makes_a_token(dash: Dashboard) -> None:
    operator = await dash.user("operator", ["berlin"])
    _, claim_token = await dash.hub.provisioning.create_token(
        name="installers",
        labels={"site": "berlin"},
        uses=2,
        expires_at=now_ms() + 600_000,
        created_by="test",
    )
    waiting = f"claimed-{dash.uid}"
    await dash.hub.provisioning.claim(claim_token, waiting, {"model": "<i>Pi 4</i>"})
    async with dash.page() as page:
        await dash.log_in(page, operator, "/manage")
        await expect(page.get_by_role("heading", name="Users")).to_be_hidden()  # admins only
        claim = page.locator("#claim-rows tr").filter(has_text=waiting)
        await expect(claim).to_contain_text('{"model":"<i>Pi 4</i>"}')
        await claim.get_by_role("button", name="Approve").click()
        await expect(page.locator("#claims-status")).to_contain_text(f"{waiting}: approved")
        await expect(claim).to_have_count(0)
        assert (await dash.hub.registry.get(waiting)).labels == {"site": "berlin"}

        tokens = page.locator("#add-token-form")
        await tokens.get_by_label("Name").fill("grafana")
        await tokens.get_by_role("button", name="Make token").click()
        token = await page.locator("#new-token").get_by_label("token").input_value()
        assert token.startswith("fht_")
        row = page.locator("#token-rows tr").filter(has_text="grafana")
        await expect(row).to_contain_text("read")
        answer = await page.request.get(
            "/api/auth/me", headers={"Authorization": f"Bearer {token}"}
        )
        assert answer.ok
    await dash.hub.devices.delete(waiting)


async def test_the_overview_fits_a_phone(dash: Dashboard, cabinet: Cabinet) -> None:
    technician = await dash.user("operator", ["berlin"])
    async with dash.page(width=390, height=844) as page:
        await dash.log_in(page, technician)
        row = _row(page, cabinet.device_id)
        await expect(row.locator(".presence")).to_have_text(re.compile(r"^online · "))
        await expect(row.locator('.kv[data-key="supply"]')).to_be_visible()
        for link in ("Fleet", "Events", "Manage"):
            await expect(page.get_by_role("link", name=link, exact=True)).to_be_visible()
        overflow = await page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"the page is {overflow} px wider than the phone"
        await dash.shot(page, "overview-phone")
        await row.get_by_role("link").click()
        await expect(page.locator("#latest .tile").first).to_be_visible()
        overflow = await page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"the device page is {overflow} px wider than the phone"
        await dash.shot(page, "device-phone")


async def test_a_bookmarked_problems_filter_lists_the_troubled_devices(
    dash: Dashboard, cabinet: Cabinet
) -> None:
    fussy = await dash.add_cabinet("fussy")
    await dash.hub.twin.change(fussy.device_id, version=0, changes={"fan": "on"}, actor="test")

    async def refused() -> Any:
        return (await dash.hub.registry.get(fussy.device_id)).reported.get("desired_errors")

    admin = await dash.user("admin")
    async with fussy.running(), dash.page() as page:
        await eventually(refused, "the device refusing a desired key it has no unit for")
        # Online, and its only trouble is in its twin: the list must know the twins to see it.
        await dash.log_in(page, admin, "/?state=problems")
        await expect(page.get_by_label("State")).to_have_value("problems")
        row = _row(page, fussy.device_id)
        await expect(row.locator(".problems")).to_contain_text("desired state refused: fan")
        await expect(_row(page, cabinet.device_id)).to_have_count(0)  # online, all well
        await page.reload()
        await expect(row.locator(".problems")).to_contain_text("desired state refused: fan")


# Records what the page draws on canvases (uPlot draws axis labels there, not in the DOM):
# each canvas keeps the texts of its latest drawing, their alignment and where each begins.
RECORD_CANVAS_TEXT = """
(() => {
  const proto = CanvasRenderingContext2D.prototype;
  const { clearRect, fillText } = proto;
  proto.clearRect = function (x, y, w, h) {
    const whole = x <= 0 && y <= 0 && w >= this.canvas.width && h >= this.canvas.height;
    if (whole) this.canvas.drawn = [];
    return clearRect.call(this, x, y, w, h);
  };
  proto.fillText = function (text, x, y, ...rest) {
    const width = this.measureText(text).width;
    const shift = { right: width, center: width / 2 }[this.textAlign] ?? 0;
    (this.canvas.drawn ??= []).push({ text: String(text), align: this.textAlign, left: x - shift });
    return fillText.call(this, text, x, y, ...rest);
  };
})();
"""


async def _y_labels(page: Page, key: str) -> list[dict[str, Any]]:
    """The value-axis labels drawn on the chart of ``key`` (right-aligned, left of the plot)."""
    labels: list[dict[str, Any]] = await page.locator(f'.chart[data-key="{key}"] canvas').evaluate(
        "canvas => (canvas.drawn ?? []).filter((t) => t.align === 'right')"
    )
    return labels


async def test_a_chart_of_a_small_range_has_whole_distinct_axis_labels(dash: Dashboard) -> None:
    steady = await dash.add_cabinet("steady")
    viewer = await dash.user("viewer", ["berlin"])
    async with steady.running() as agent, dash.page() as page:
        assert agent.outbox is not None
        reporter, now = OutboxReporter(agent.outbox), now_ms()
        for minute in range(30, 0, -1):  # a temperature that hardly moves: 32.0621 to 32.0629
            reporter.telemetry(
                {"temp": 32.0625 + 0.0004 * math.sin(minute / 3)}, now - minute * 60_000
            )

        async def stored() -> bool:
            return any(v.key == "temp" for v in await dash.hub.queries.latest(steady.device_id))

        await eventually(stored, "the kept temperatures stored")
        await page.add_init_script(RECORD_CANVAS_TEXT)
        await dash.log_in(page, viewer, f"/devices/{steady.device_id}")
        await expect(page.locator('.chart[data-key="temp"] canvas')).to_be_visible()
        labels = await eventually(lambda: _y_labels(page, "temp"), "the value axis drawn")
        texts = [label["text"] for label in labels]
        assert len(texts) >= 2, texts
        assert len(set(texts)) == len(texts), f"labels repeat: {texts}"
        assert all(32.06 < float(text) < 32.07 for text in texts), texts
        clipped = [label["text"] for label in labels if label["left"] < 0]
        assert not clipped, f"labels cut off at the chart's left edge: {clipped}"


async def _x_minutes(page: Page, key: str) -> list[int]:
    """The times under the chart of ``key``, as minutes of the day ("4:35pm" is 995)."""
    texts: list[str] = await page.locator(f'.chart[data-key="{key}"] canvas').evaluate(
        "canvas => (canvas.drawn ?? []).filter((t) => t.align === 'center').map((t) => t.text)"
    )
    minutes = []
    for text in texts:
        if found := re.fullmatch(r"(\d+):(\d\d)(?::\d\d)?(am|pm)", text):
            hour, minute, half = int(found[1]) % 12, int(found[2]), found[3]
            minutes.append((hour + (12 if half == "pm" else 0)) * 60 + minute)
    return minutes


async def _x_span(page: Page, key: str) -> int:
    """How many minutes the time labels of a chart span, first to last (0 before drawing)."""
    minutes = await _x_minutes(page, key)
    return (max(minutes) - min(minutes)) % (24 * 60) if len(minutes) > 1 else 0


async def test_dragging_across_a_chart_zooms_in_until_a_double_click(dash: Dashboard) -> None:
    zoomy = await dash.add_cabinet("zoomy")
    viewer = await dash.user("viewer", ["berlin"])
    async with zoomy.running() as agent, dash.page() as page:
        zoomy.kept_readings(agent, 50)
        assert agent.outbox is not None
        device = OutboxReporter(agent.outbox)
        await eventually(lambda: _readings(dash, zoomy, 50), "the kept readings stored")
        await page.add_init_script(RECORD_CANVAS_TEXT)
        await dash.log_in(page, viewer, f"/devices/{zoomy.device_id}")
        # The hour's chart: 50 minutes of kept readings, labelled every 10 minutes.
        whole = await eventually(lambda: _x_span(page, "supply"), "the time axis drawn")
        assert whole >= 40, whole
        plot = page.locator('.chart[data-key="supply"] .u-over')
        box = await plot.bounding_box()
        assert box is not None
        middle = box["y"] + box["height"] / 2
        await page.mouse.move(box["x"] + box["width"] * 0.4, middle)
        await page.mouse.down()
        await page.mouse.move(box["x"] + box["width"] * 0.6, middle, steps=5)
        await page.mouse.up()
        # A fifth of the hour: twelve minutes, labelled minute by minute.
        zoomed = await eventually(lambda: _zoomed_in(page, whole), "the chart zoomed in")
        assert zoomed <= 15, zoomed
        # A live point: the zoom stays.
        caption = page.locator('.chart[data-key="supply"] .chart-value')
        before = await caption.text_content()
        device.telemetry({"supply": 4.95}, now_ms())
        await expect(caption).not_to_have_text(before or "")
        # (uPlot redraws in a microtask of the update: the labels read next are the new ones)
        assert await _x_span(page, "supply") <= 15, "a live point undid the zoom"
        # A key never seen before: the charts are drawn again, with the zoom.
        device.telemetry({"temp": 21.5}, now_ms())
        await expect(page.locator('.chart[data-key="temp"] canvas')).to_be_visible()
        assert await eventually(lambda: _x_span(page, "supply"), "supply drawn again") <= 15
        await plot.dblclick(position={"x": box["width"] / 2, "y": box["height"] / 2})
        await eventually(lambda: _zoomed_out(page, whole), "the whole hour back")


async def _readings(dash: Dashboard, cabinet: Cabinet, at_least: int) -> bool:
    """Whether the hub holds ``at_least`` supply readings of the cabinet."""
    keys = await dash.hub.queries.keys(cabinet.device_id)
    if "supply" not in keys:
        return False
    series_id, kind = keys["supply"]
    points = await dash.hub.queries.history(
        series_id=series_id, kind=kind, start=0, end=2**53, bucket_ms=None, agg="avg", limit=1000
    )
    return len(points) >= at_least


async def _zoomed_in(page: Page, whole: int) -> int:
    span = await _x_span(page, "supply")
    return span if 0 < span < whole / 2 else 0


async def _zoomed_out(page: Page, whole: int) -> bool:
    return await _x_span(page, "supply") >= whole - 10


async def test_a_device_that_comes_online_says_so_once(dash: Dashboard) -> None:
    fresh = await dash.add_cabinet("fresh")
    viewer = await dash.user("viewer", ["berlin"])

    async def announced() -> bool:  # its status came (the hub stores it with the event)
        return (await dash.hub.registry.get(fresh.device_id)).connected is True

    async with fresh.running(), dash.page() as page:
        await eventually(fresh.supply_stored, "a supply reading stored")
        await eventually(announced, "the agent's online status")
        await dash.log_in(page, viewer, f"/devices/{fresh.device_id}")
        rows = page.locator("#event-rows tr")
        await expect(rows.first).to_be_visible()
        await expect(rows.filter(has_text="presence.online")).to_have_count(1)


async def test_ages_on_a_device_page_move_on_with_the_clock(dash: Dashboard) -> None:
    quiet = await dash.add_cabinet("quiet")
    viewer = await dash.user("viewer", ["berlin"])
    async with quiet.running() as agent, dash.page() as page:
        await eventually(quiet.supply_stored, "a supply reading stored")
        await page.clock.install()  # the page's clock: it runs, and the test moves it on
        await dash.log_in(page, viewer, f"/devices/{quiet.device_id}")
        supply = page.locator('#latest .tile[data-key="supply"]')
        await expect(supply.locator(".when")).to_have_text(re.compile(r"^(just now|\d s ago)$"))
        await page.clock.fast_forward(40_000)
        # Nothing new from the device for 40 s and more: every age on the page says so.
        await expect(supply.locator(".when")).to_have_text(re.compile(r"^[4-9]\d s ago$"))
        await expect(page.locator("#presence .presence")).to_have_text(
            re.compile(r"^online · [4-9]\d s$")
        )
        await expect(page.locator("#last-seen")).to_have_text(
            re.compile(r"^last message [4-9]\d s ago$")
        )
        # A new value: the header's last message is that one, as old as its tile says.
        assert agent.outbox is not None
        OutboxReporter(agent.outbox).telemetry({"supply": 4.9}, now_ms())
        await expect(supply.locator(".v")).to_have_text("4.9")

        async def header_agrees() -> bool:
            tile, header = await page.evaluate(
                """() => [
                  document.querySelector('#latest .tile[data-key="supply"] .when').textContent,
                  document.querySelector("#last-seen").textContent,
                ]"""
            )
            return bool(header == f"last message {tile}")

        await eventually(header_agrees, "the header's last message as old as the newest value")


async def test_the_twin_shows_the_units_not_the_protocols_keys(dash: Dashboard) -> None:
    tidy = await dash.add_cabinet("tidy")
    await dash.hub.twin.change(tidy.device_id, version=0, changes={"socket": "off"}, actor="test")
    viewer = await dash.user("viewer", ["berlin"])
    async with tidy.running(), dash.page() as page:
        await dash.log_in(page, viewer, f"/devices/{tidy.device_id}")
        twin = page.locator("#twin")
        # In sync: the device reported the version it applied, and that is all it is for.
        await expect(twin.locator(".twin-head")).to_contain_text("in sync")
        await expect(twin.locator('tr[data-key="socket"]')).to_contain_text("off")
        keys = await twin.locator("tbody th").all_inner_texts()
        assert "door" in keys
        assert not {"desired_version", "desired_errors", "actions"} & set(keys), keys
