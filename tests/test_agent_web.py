"""The technician page, over real HTTP: a technician logs in with the local password, sees
the units and recent events, and presses action buttons; other sites cannot press them."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import httpx
import pytest

from fieldhub.agent.actions import ActionInfo, ActionOutcome, ActionRegistry
from fieldhub.agent.eventlog import LoggedEvent, RecentEvents
from fieldhub.agent.units.base import ActionSpec
from fieldhub.agent.web import (
    TechnicianPage,
    UnitView,
    WeakPassword,
    hash_password,
    parse_listen,
)
from tests.waiting import HTTP_TIMEOUT_S

PASSWORD = "correct horse battery"
HASH = hash_password(PASSWORD)


class FakeAgent:
    """An agent with a door, a socket and a recent event or two (an ``AgentView``)."""

    device_id = "atm-0042"

    def __init__(self) -> None:
        self.cycles: list[float] = []
        self.led: list[bool] = []
        self.registry = ActionRegistry()
        self.registry.add_builtin(
            ActionSpec(
                name="socket.cycle",
                handler=self.cycle,
                args={"off_s": float},
                description="Power-cycle the socket",
            )
        )
        self.registry.add_builtin(
            ActionSpec(name="led.set", handler=self.set_led, args={"on": bool})
        )
        self.events = RecentEvents()
        self.events.record("door.opened", "warning", "service door opened", ts=1763719260000)
        self.events.record("temperature.high", "critical", "<script>alert(1)</script>")

    async def cycle(self, off_s: float) -> dict[str, float]:
        self.cycles.append(off_s)
        return {"off_s": off_s}

    async def set_led(self, on: bool) -> None:
        self.led.append(on)

    def units(self) -> Sequence[UnitView]:
        return [
            UnitView("door", "door", {"open": True, "open_since": "14:01:00"}),
            UnitView("socket", "socket", {"on": False, "cycles": 3}),
        ]

    def uplink_stats(self) -> Mapping[str, object]:
        return {"connected": True, "outbox_queued": 17}

    def recent_events(self, limit: int) -> Sequence[LoggedEvent]:
        return self.events.newest(limit)

    def actions(self) -> Sequence[ActionInfo]:
        return self.registry.describe()

    async def run_action(self, name: str, args: Mapping[str, Any]) -> ActionOutcome:
        return await self.registry.run(self.registry.bind(name, args), origin="local")


@pytest.fixture
def agent() -> FakeAgent:
    return FakeAgent()


@pytest.fixture
async def client(agent: FakeAgent) -> AsyncIterator[httpx.AsyncClient]:
    async with TechnicianPage(agent, HASH, host="127.0.0.1", port=0) as page:
        base = f"http://127.0.0.1:{page.port}"
        async with httpx.AsyncClient(
            base_url=base, headers={"Origin": base}, timeout=HTTP_TIMEOUT_S
        ) as http:
            yield http


async def login(client: httpx.AsyncClient) -> tuple[dict[str, str], str]:
    """Log in; the session cookie to send, and the page's CSRF token."""
    answer = await client.post("/login", data={"password": PASSWORD})
    assert answer.status_code == 303
    cookie = {"Cookie": f"fh_agent_session={answer.cookies['fh_agent_session']}"}
    client.cookies.clear()  # sent by hand, so each test says which session it uses
    page = await client.get("/", headers=cookie)
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found is not None
    return cookie, found[1]


async def test_the_page_needs_a_login(client: httpx.AsyncClient, agent: FakeAgent) -> None:
    answer = await client.get("/")
    assert (answer.status_code, answer.headers["location"]) == (303, "/login")
    form = await client.get("/login")
    assert form.status_code == 200
    assert 'type="password"' in form.text
    pressed = await client.post("/action", data={"action": "socket.cycle", "arg.off_s": "1"})
    assert pressed.status_code == 403
    assert agent.cycles == []


async def test_a_wrong_password_is_refused(client: httpx.AsyncClient) -> None:
    answer = await client.post("/login", data={"password": "wrong horse battery"})
    assert answer.status_code == 401
    assert "Wrong password." in answer.text
    assert "set-cookie" not in answer.headers
    assert (await client.get("/")).status_code == 303


async def test_repeated_wrong_passwords_lock_the_address_out(client: httpx.AsyncClient) -> None:
    """Five free failures, then a lock-out: even the right password is refused unchecked."""
    for _ in range(5):
        assert (await client.post("/login", data={"password": "guess guess"})).status_code == 401
    sixth = await client.post("/login", data={"password": "guess guess"})
    assert sixth.status_code == 401  # the sixth failure is checked, then locks for 1 s
    locked = await client.post("/login", data={"password": PASSWORD})
    assert locked.status_code == 429
    assert "Too many failed attempts" in locked.text
    assert "set-cookie" not in locked.headers


async def test_the_session_cookie_is_guarded(client: httpx.AsyncClient) -> None:
    answer = await client.post("/login", data={"password": PASSWORD})
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert answer.headers["location"] == "/"


async def test_the_page_shows_units_uplink_and_events(client: httpx.AsyncClient) -> None:
    cookie, _csrf = await login(client)
    page = await client.get("/", headers=cookie)
    assert page.status_code == 200
    html = page.text
    assert '<meta name="viewport"' in html
    for text in ("atm-0042", "door", "open_since", "14:01:00", "socket", "cycles"):
        assert text in html
    assert "outbox_queued</th><td>17" in html
    assert "door.opened" in html
    assert "service door opened" in html
    assert "<script>" not in html  # an event message is text, never markup
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert html.index("temperature.high") < html.index("door.opened")  # newest first
    assert "socket.cycle" in html
    assert "Power-cycle the socket" in html
    assert "script-src" not in page.headers["content-security-policy"]
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    style = await client.get("/style.css")
    assert style.headers["content-type"] == "text/css"


async def test_an_action_button_runs_the_action(
    client: httpx.AsyncClient, agent: FakeAgent
) -> None:
    cookie, csrf = await login(client)
    form = {"csrf": csrf, "action": "socket.cycle", "arg.off_s": "2.5"}
    pressed = await client.post("/action", data=form, headers=cookie)
    assert (pressed.status_code, pressed.headers["location"]) == (303, "/#actions")
    assert agent.cycles == [2.5]
    page = await client.get("/", headers=cookie)
    assert "socket.cycle: done → {&quot;off_s&quot;:2.5}" in page.text
    # An unticked checkbox is False (browsers leave it out), a ticked one True.
    await client.post("/action", data={"csrf": csrf, "action": "led.set"}, headers=cookie)
    form = {"csrf": csrf, "action": "led.set", "arg.on": "on"}
    await client.post("/action", data=form, headers=cookie)
    assert agent.led == [False, True]


async def test_bad_form_values_are_reported_and_nothing_runs(
    client: httpx.AsyncClient, agent: FakeAgent
) -> None:
    cookie, csrf = await login(client)
    form = {"csrf": csrf, "action": "socket.cycle", "arg.off_s": "soon"}
    await client.post("/action", data=form, headers=cookie)
    page = await client.get("/", headers=cookie)
    assert "socket.cycle: argument &#x27;off_s&#x27; must be float, not &#x27;soon&#x27;" in (
        page.text
    )
    await client.post("/action", data={"csrf": csrf, "action": "shell.run"}, headers=cookie)
    page = await client.get("/", headers=cookie)
    assert "unknown action &#x27;shell.run&#x27;" in page.text
    assert agent.cycles == []


@pytest.mark.parametrize(
    ("headers", "with_token"),
    [
        ({"Origin": "http://evil.example"}, True),  # another site, with a stolen token even
        ({"Origin": "null"}, True),  # a sandboxed frame or a file
        ({}, True),  # neither Origin nor Referer: cannot tell, so no
        (None, False),  # same origin, but the form lacks the session's token
    ],
)
async def test_cross_site_and_tokenless_posts_are_refused(
    client: httpx.AsyncClient,
    agent: FakeAgent,
    headers: dict[str, str] | None,
    with_token: bool,
) -> None:
    cookie, csrf = await login(client)
    form = {"action": "socket.cycle", "arg.off_s": "1", "csrf": csrf if with_token else "x"}
    request = client.build_request("POST", "/action", data=form, headers=cookie)
    if headers is not None:
        del request.headers["origin"]
        request.headers.update(headers)
    answer = await client.send(request)
    assert answer.status_code == 403
    assert agent.cycles == []


async def test_a_same_origin_referer_will_do_without_origin(
    client: httpx.AsyncClient, agent: FakeAgent
) -> None:
    cookie, csrf = await login(client)
    form = {"action": "socket.cycle", "arg.off_s": "1", "csrf": csrf}
    request = client.build_request("POST", "/action", data=form, headers=cookie)
    request.headers["referer"] = request.headers.pop("origin") + "/"
    assert (await client.send(request)).status_code == 303
    assert agent.cycles == [1.0]


async def test_logout_ends_the_session(client: httpx.AsyncClient) -> None:
    cookie, csrf = await login(client)
    assert (await client.post("/logout", data={"csrf": csrf}, headers=cookie)).status_code == 303
    assert (await client.get("/", headers=cookie)).status_code == 303


async def test_repeated_failures_lock_the_client_out(client: httpx.AsyncClient) -> None:
    for _ in range(6):
        answer = await client.post("/login", data={"password": "not the password"})
        assert answer.status_code == 401
    answer = await client.post("/login", data={"password": PASSWORD})
    assert answer.status_code == 429
    assert "Too many failed attempts" in answer.text


async def test_oversized_and_unknown_requests(client: httpx.AsyncClient) -> None:
    answer = await client.post("/login", content=b"password=" + b"x" * 20_000)
    assert answer.status_code == 413
    assert (await client.get("/etc/passwd")).status_code == 404
    assert (await client.delete("/")).status_code == 405


def test_listen_addresses() -> None:
    assert parse_listen("0.0.0.0:8081") == ("0.0.0.0", 8081)
    assert parse_listen("[::]:8081") == ("::", 8081)
    assert parse_listen(":8081") == ("0.0.0.0", 8081)
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_listen("8081")


def test_weak_passwords_are_not_hashed() -> None:
    with pytest.raises(WeakPassword, match="at least 10"):
        hash_password("short")
    with pytest.raises(WeakPassword, match="repeated"):
        hash_password("a" * 12)


def test_a_heavy_or_foreign_hash_is_refused(agent: FakeAgent) -> None:
    from argon2 import PasswordHasher

    heavy = PasswordHasher(memory_cost=128 * 1024, time_cost=1, parallelism=1).hash("x" * 10)
    with pytest.raises(ValueError, match="128 MiB"):
        TechnicianPage(agent, heavy)
    with pytest.raises(ValueError, match="not an argon2 hash"):
        TechnicianPage(agent, "$2b$12$abcdefghijklmnopqrstuv")
