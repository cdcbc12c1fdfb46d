"""Hardening of the hub (issue 19): what an attacker could do from outside, tried for real.

- The login page sends a user only to a path of the hub, however the ``next`` address is
  spelled (tabs, newlines and backslashes that browsers quietly drop or turn into slashes).
- Every answer, API docs and errors included, carries the security headers; the docs pages
  keep working under their own policy, and say where the spec is when they are offline.
- The login throttle counts by the connection's address; X-Forwarded-For counts only from a
  configured proxy (the real ``fieldhub hub`` process, over real HTTP).
- What the hub and an agent write (database, its WAL, backups, outbox, broker state) is
  private to their user, even under the usual umask.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import Browser, Route, async_playwright, expect

from fieldhub.agent.config import AgentConfig, DeviceSection, HubSection, WebSection
from fieldhub.agent.service import Agent
from fieldhub.agent.units import Drivers, SocketConfig, mock_pin_factory
from fieldhub.agent.units.simulate import SwitchPin
from fieldhub.hub.api.apidocs import DOCS_POLICY, REDOC, SWAGGER_UI
from fieldhub.hub.api.app import create_app
from fieldhub.hub.api.headers import CONTENT_SECURITY_POLICY
from fieldhub.hub.api.web import WEB_ROOT
from fieldhub.hub.app import Hub
from fieldhub.hub.auth import Role
from fieldhub.hub.config import HubSettings
from fieldhub.hub.store.backup import backup
from fieldhub.private_files import private_dir, private_file, write_private
from tests.conftest import HubFactory
from tests.hub_client import HubClient, served
from tests.support.servers import free_port
from tests.test_cli import running
from tests.test_dashboard import CHROMIUM_ARGS, _chromium
from tests.waiting import eventually

PASSWORD = "correct horse battery"
EVIL = "evil.example"


# -- the login page's redirect ----------------------------------------------------------------
@dataclass
class Site:
    """A hub served over HTTP and a browser to visit it with."""

    hub: Hub
    url: str
    browser: Browser


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def site(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Site]:
    folder = tmp_path_factory.mktemp("hardening")
    settings = HubSettings(
        data=folder / "hub",
        instance=f"harden{secrets.token_hex(3)}",
        mqtt="127.0.0.1:0",
        http="127.0.0.1:0",
    )
    async with AsyncExitStack() as stack:
        hub = await stack.enter_async_context(Hub(settings))
        url = await stack.enter_async_context(served(hub))
        playwright = await stack.enter_async_context(async_playwright())
        browser = await playwright.chromium.launch(executable_path=_chromium(), args=CHROMIUM_ARGS)
        stack.push_async_callback(browser.close)
        yield Site(hub, url, browser)


REDIRECTS: list[Any] = [
    # (the ``next`` parameter as decoded, where the browser must be sent: None = refused)
    pytest.param("/devices/x?state=offline#top", "/devices/x?state=offline#top", id="own-path"),
    pytest.param("/\t/evil.example/", None, id="tab"),
    pytest.param("/\r/evil.example/", None, id="cr"),
    pytest.param("/\n/evil.example/", None, id="lf"),
    pytest.param("\\\\evil.example/", None, id="backslashes"),
    pytest.param("//evil.example/", None, id="slashes"),
    pytest.param("/\\evil.example/", None, id="slash-backslash"),
    pytest.param("https://evil.example/", None, id="https-url"),
    pytest.param("https:evil.example", None, id="https-scheme-relative"),
    pytest.param("javascript:alert(1)", None, id="javascript"),
    pytest.param(" //evil.example/", None, id="leading-space"),
    pytest.param("/\x7f/evil.example/", None, id="del"),
    # Encoded slashes stay encoded: a path of the hub, not another host.
    pytest.param("/%2F%2Fevil.example/", "/%2F%2Fevil.example/", id="encoded-slashes"),
    pytest.param("%2F%2Fevil.example", None, id="encoded-relative"),
]


@pytest.mark.browser
@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(("target", "allowed"), REDIRECTS)
async def test_the_login_redirect_check_keeps_only_paths_of_the_hub(
    site: Site, target: str, allowed: str | None
) -> None:
    context = await site.browser.new_context(base_url=site.url)
    try:
        page = await context.new_page()
        await page.goto("/static/img/icon.svg")  # any page of the hub: its origin
        checked = await page.evaluate(
            "async (t) => (await import('/static/js/redirect.js')).sameOriginPath(t)", target
        )
    finally:
        await context.close()
    assert checked == allowed


@pytest.mark.browser
@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("control", ["%09", "%0D", "%0A", "%5C"])
async def test_a_crafted_login_link_lands_on_the_hub_not_elsewhere(site: Site, control: str):
    name = f"operator-{secrets.token_hex(3)}"
    await site.hub.auth.accounts.create_user(
        name, role=Role.OPERATOR, sites=["a"], password=PASSWORD, actor="test"
    )
    attack = f"/login?next=%2F{control}%2F{EVIL}%2F"
    context = await site.browser.new_context(base_url=site.url)
    visited: list[str] = []

    async def other_site(route: Route) -> None:  # had the browser gone there, it would show
        visited.append(route.request.url)
        await route.fulfill(status=200, content_type="text/html", body="<p>evil</p>")

    await context.route(lambda url: urlsplit(url).hostname == EVIL, other_site)
    try:
        page = await context.new_page()
        await page.goto(attack)  # not logged in: the form, then where next= says
        await page.get_by_label("Name").fill(name)
        await page.get_by_label("Password").fill(PASSWORD)
        await page.get_by_role("button", name="Log in").click()
        await expect(page).to_have_url(site.url + "/")
        await page.goto(attack)  # logged in: sent on at once
        await expect(page).to_have_url(site.url + "/")
        await expect(page.locator("#device-rows")).to_be_attached()
    finally:
        await context.close()
    assert visited == []


# -- security headers on every answer ---------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        pytest.param("GET", "/docs", None, 200, id="docs"),
        pytest.param("GET", "/redoc", None, 200, id="redoc"),
        pytest.param("GET", "/openapi.json", None, 200, id="openapi"),
        pytest.param("GET", "/api/health", None, 200, id="json"),
        pytest.param("GET", "/api/no-such-thing", None, 404, id="not-found"),
        pytest.param("POST", "/api/auth/login", {"name": 1}, 422, id="invalid"),
        pytest.param("POST", "/api/auth/login", {"name": "x" * 2_000_000}, 413, id="too-large"),
        pytest.param("GET", "/api/devices", None, 401, id="unauthorized"),
        pytest.param("GET", "/login", None, 200, id="page"),
        pytest.param("GET", "/static/js/api.js", None, 200, id="asset"),
    ],
)
async def test_every_answer_carries_the_security_headers(
    hub: Hub, method: str, path: str, body: Any, status: int
) -> None:
    async with HubClient(hub, role=None) as anonymous:
        answer = await anonymous.request(method, path, json=body)
    assert answer.status_code == status
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["referrer-policy"] == "same-origin"
    expected = DOCS_POLICY if path in ("/docs", "/redoc") else CONTENT_SECURITY_POLICY
    assert answer.headers["content-security-policy"] == expected
    assert "frame-ancestors 'none'" in expected
    assert "'unsafe-inline'" not in _directive(expected, "script-src")


async def test_an_unexpected_error_answers_500_with_the_security_headers(hub: Hub) -> None:
    app = create_app(hub)

    async def broken() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/api/broken", broken)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:
        answer = await client.get("/api/broken")
    assert answer.status_code == 500
    assert "a bug" not in answer.text
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY


def _directive(csp: str, name: str) -> str:
    return next(part for part in csp.split("; ") if part.startswith(name + " "))


def test_the_docs_pages_load_only_the_hubs_own_unchanged_viewer() -> None:
    assert _directive(DOCS_POLICY, "script-src") == "script-src 'self'"
    for asset in (*SWAGGER_UI, REDOC):
        assert asset.url.startswith("/static/vendor/")
        # The vendored file is the npm package's, byte for byte: its digest is the one pinned.
        file = WEB_ROOT / asset.url.removeprefix("/static/")
        digest = base64.b64encode(hashlib.sha384(file.read_bytes()).digest()).decode()
        assert asset.integrity == f"sha384-{digest}"


@pytest.mark.browser
@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(
    ("path", "viewer", "shown"),
    [("/docs", "swagger-ui", ".swagger-ui .info .title"), ("/redoc", "redoc", "h1")],
)
async def test_the_docs_pages_work_offline_without_breaking_their_policy(
    site: Site, path: str, viewer: str, shown: str
) -> None:
    """A browser that reaches the hub and nothing else (an offline site): the viewer runs and
    shows the API, it asked no other host for anything, and nothing broke the page's policy."""
    context = await site.browser.new_context(base_url=site.url)
    problems: list[str] = []
    elsewhere: list[str] = []
    hub_host = urlsplit(site.url).netloc

    async def offline(route: Route) -> None:
        elsewhere.append(route.request.url)
        await route.abort("internetdisconnected")

    await context.route(lambda url: urlsplit(url).netloc != hub_host, offline)
    try:
        page = await context.new_page()
        page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
        page.on(
            "console",
            lambda msg: (
                problems.append(msg.text) if "Content Security Policy" in msg.text else None
            ),
        )
        await page.goto(path)
        assert await page.locator("body").get_attribute("data-viewer") == viewer
        await expect(page.locator(shown).first).to_contain_text("fieldhub", timeout=30_000)
        await expect(page.locator("#api-docs")).to_contain_text("/api/devices")
    finally:
        await context.close()
    assert elsewhere == []
    # ReDoc's "API docs by Redocly" logo lives on another host: the policy blocks it, and that
    # is the policy at work, not a broken page (no request leaves, see `elsewhere`).
    assert [p for p in problems if "cdn.redoc.ly/redoc/logo-mini.svg" not in p] == []


# -- forwarded headers only from trusted proxies ----------------------------------------------
def _failed_logins_until_throttled(
    url: str, *, source: str, forwarded_for: Callable[[int], str], tries: int = 30
) -> int | None:
    """Failed logins (a new unknown name each) from ``source``, sending ``X-Forwarded-For:
    forwarded_for(i)``, until one is refused with 429; how many it took (None: never)."""
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(base_url=url, transport=transport, timeout=30) as client:
        for attempt in range(1, tries + 1):
            answer = client.post(
                "api/auth/login",
                json={"name": f"nobody-{secrets.token_hex(4)}", "password": "wrong password"},
                headers={"X-Forwarded-For": forwarded_for(attempt)},
            )
            if answer.status_code == 429:
                return attempt
            assert answer.status_code == 401, answer.text
    return None


@pytest.mark.slow  # ~45 failed logins, each a full password hash (~0.15-0.6 s)
def test_the_login_throttle_believes_forwarded_for_only_from_trusted_proxies(tmp_path: Path):
    """A local program (127.0.0.1, not a proxy) that sends a new X-Forwarded-For with each
    guess is still counted by its own address; the configured proxy (127.0.0.2) is not counted
    itself: the clients it forwards for are, each on its own."""
    hub_args = ("hub", "--data", str(tmp_path), "--http", f"127.0.0.1:{free_port()}")
    with running(*hub_args, "--mqtt", "127.0.0.1:0", "--trusted-proxies", "127.0.0.2") as (
        url,
        _,
    ):
        spoofed = _failed_logins_until_throttled(
            url, source="127.0.0.1", forwarded_for=lambda i: f"198.51.100.{i}"
        )
        assert spoofed is not None, "a new X-Forwarded-For each time escaped the throttle"
        via_proxy = _failed_logins_until_throttled(
            url, source="127.0.0.2", forwarded_for=lambda _: "203.0.113.7"
        )
        assert via_proxy == spoofed  # the forwarded client is throttled like a direct one
        other_client = _failed_logins_until_throttled(
            url, source="127.0.0.2", forwarded_for=lambda _: "203.0.113.8", tries=1
        )
        assert other_client is None  # the proxy itself is not locked out


def test_trusted_proxies_are_addresses_or_networks_and_none_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("FIELDHUB_TRUSTED_PROXIES", raising=False)
    assert HubSettings().trusted_proxies == ()
    monkeypatch.setenv("FIELDHUB_TRUSTED_PROXIES", "127.0.0.1, 10.0.0.0/8,::1")
    assert HubSettings().trusted_proxies == ("127.0.0.1", "10.0.0.0/8", "::1")
    for wrong in ("*", "proxy.example", "10.0.0.0/33"):
        with pytest.raises(ValueError, match="trusted proxy"):
            HubSettings(trusted_proxies=wrong)


# -- data files are private -------------------------------------------------------------------
def _shared(*roots: Path) -> list[str]:
    """Every file and folder under ``roots`` (and the roots) that its group or others may use."""
    found = []
    for root in roots:
        for path in [root, *root.rglob("*")]:
            mode = path.lstat().st_mode & 0o777
            if mode & 0o077:
                found.append(f"{path.relative_to(root.parent)} {oct(mode)}")
    return found


@pytest.fixture
def usual_umask() -> Iterator[None]:
    """The umask most machines have (022: new files 0644): the code under test must not count
    on the one ``fieldhub`` sets for itself."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.usefixtures("usual_umask")
async def test_the_hub_and_an_agent_keep_their_files_to_themselves(
    make_hub: HubFactory, tmp_path: Path
) -> None:
    data, agent_data, backups = tmp_path / "hub", tmp_path / "agent", tmp_path / "backups"
    backups.mkdir()
    async with make_hub(data=data) as hub:
        device_id = f"cabinet-{secrets.token_hex(3)}"
        issued = (await hub.devices.create(device_id, labels={"site": "a"})).credentials
        config = AgentConfig(
            device=DeviceSection(id=device_id),
            hub=HubSection(broker=hub.broker_url, username=issued.username),
            data_folder=str(agent_data),
            units=[SocketConfig(name="socket", pin=22, initial="on", min_off_s=0)],
            web=WebSection(enabled=False),
        )
        pins = mock_pin_factory(SwitchPin)
        async with Agent(config, issued.secret, drivers=Drivers(pin_factory=pins)):
            await eventually(lambda: _reported(hub, device_id), "the agent's first report")
            written = await backup(hub.engine, backups / "hub.zip")
            running = _shared(data, agent_data)
            names = {p.name for p in [*data.iterdir(), *agent_data.iterdir()]}
    assert {"fieldhub.db", "fieldhub.db-wal", "fieldhub.db-shm", "outbox.db"} <= names
    assert running == []
    assert _shared(data, agent_data) == []  # and what was written at the stop
    assert written.path.stat().st_mode & 0o077 == 0


async def _reported(hub: Hub, device_id: str) -> bool:
    record = await hub.registry.get(device_id)
    return record.acked_seq > 0


@pytest.mark.usefixtures("usual_umask")
def test_files_and_folders_left_open_by_an_older_version_are_closed(tmp_path: Path) -> None:
    folder, database = tmp_path / "data", tmp_path / "data" / "fieldhub.db"
    folder.mkdir(mode=0o755)
    database.write_bytes(b"")  # 0644, as an older fieldhub left it
    private_file(private_dir(folder) / "fieldhub.db")
    assert folder.stat().st_mode & 0o777 == 0o700
    assert database.stat().st_mode & 0o777 == 0o600
    write_private(folder / "state.json", b"{}")
    assert (folder / "state.json").stat().st_mode & 0o777 == 0o600
    assert (folder / "state.json").read_bytes() == b"{}"
