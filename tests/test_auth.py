"""People and programs signing in: login and sessions, CSRF, throttling, API tokens, the first
admin, bad input, and the audit trail, against a real hub over HTTP semantics (ASGI).

Who may call which route is the access matrix's business (test_access_matrix.py); here each
mechanism is exercised the way a browser, a script or an attacker would.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import statistics
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from fieldhub.clock import now_ms
from fieldhub.hub.api.security import CSRF_COOKIE, CSRF_HEADER, SESSION_COOKIE
from fieldhub.hub.app import Hub
from fieldhub.protocol import Channel, Event
from tests.conftest import DeviceFactory, HubFactory, api_client
from tests.hub_client import add_user, user_token

PASSWORD = "correct horse battery"
NEW_PASSWORD = "staple ostrich lantern"


class FakeClock:
    """A monotonic clock the test moves by hand (for throttle lock times)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _cookies(response: httpx.Response) -> dict[str, str]:
    """Set-Cookie headers by cookie name (the whole header, attributes included)."""
    return {h.split("=", 1)[0]: h for h in response.headers.get_list("set-cookie")}


async def _login(client: httpx.AsyncClient, name: str, password: str = PASSWORD) -> httpx.Response:
    return await client.post("/api/auth/login", json={"name": name, "password": password})


@pytest.fixture
async def anon(hub: Hub) -> AsyncIterator[httpx.AsyncClient]:
    """A client with no credentials (a browser before login)."""
    async with api_client(hub, None) as client:
        yield client


# --- login, session cookie, logout ----------------------------------------------------------


async def test_login_sets_a_strict_httponly_session_cookie(hub: Hub, anon: httpx.AsyncClient):
    user = await add_user(hub, "operator", ["berlin"], password=PASSWORD)

    response = await _login(anon, user.name)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["user"] == {
        "id": user.id,
        "name": user.name,
        "role": "operator",
        "sites": ["berlin"],
        "created_at": user.created_at,
        "disabled": False,
        "has_password": True,
    }
    assert response.headers["cache-control"] == "no-store"
    cookies = _cookies(response)
    session, csrf = cookies[SESSION_COOKIE], cookies[CSRF_COOKIE]
    for header in (session, csrf):
        assert "samesite=strict" in header.lower()
        assert "path=/" in header.lower()
        assert "max-age=43200" in header.lower()  # 12 hours
        assert "secure" not in header.lower()  # plain http here; see the https test
    assert "httponly" in session.lower()
    assert "httponly" not in csrf.lower()  # the page's script reads it to send the header
    assert f"{CSRF_COOKIE}={body['csrf_token']}" in csrf


async def test_cookies_are_secure_over_https(hub: Hub):
    user = await add_user(hub, "viewer", password=PASSWORD)
    async with api_client(hub, None) as client:
        client.base_url = httpx.URL("https://hub")
        response = await _login(client, user.name)
    assert response.status_code == 200
    assert all("; secure" in h.lower() for h in _cookies(response).values())


async def test_session_opens_the_api_until_logout(hub: Hub, anon: httpx.AsyncClient):
    user = await add_user(hub, "viewer", ["berlin"], password=PASSWORD)
    login = await _login(anon, user.name)
    csrf = login.json()["csrf_token"]

    me = await anon.get("/api/auth/me")
    assert me.status_code == 200, me.text
    assert me.json()["user"]["name"] == user.name
    assert me.json()["via"] == "session"
    assert set(me.json()["permissions"]) == {
        "account:read",
        "account:write",
        "subscriptions:read",  # one's own notification subscriptions
        "subscriptions:write",
        "devices:read",
        "events:read",
        "alarms:read",
    }

    logout = await anon.post("/api/auth/logout", headers={CSRF_HEADER: csrf})
    assert logout.status_code == 204
    assert 'fieldhub_session=""' in _cookies(logout)[SESSION_COOKIE]  # told to forget it
    assert SESSION_COOKIE not in anon.cookies

    after = await anon.get("/api/auth/me")
    assert after.status_code == 401
    assert after.headers["www-authenticate"] == "Bearer"


async def test_a_session_cookie_kept_after_logout_is_dead(hub: Hub, anon: httpx.AsyncClient):
    user = await add_user(hub, "viewer", password=PASSWORD)
    login = await _login(anon, user.name)
    stolen = anon.cookies[SESSION_COOKIE]
    await anon.post("/api/auth/logout", headers={CSRF_HEADER: login.json()["csrf_token"]})

    async with api_client(hub, None) as thief:
        thief.cookies.set(SESSION_COOKIE, stolen)
        assert (await thief.get("/api/auth/me")).status_code == 401


async def test_expired_session_is_refused(hub: Hub, anon: httpx.AsyncClient):
    user = await add_user(hub, "viewer", password=PASSWORD)
    hub.auth.authenticator.session_lifetime_ms = 1
    login = await _login(anon, user.name)
    token = _cookies(login)[SESSION_COOKIE].split(";")[0].split("=", 1)[1]
    await asyncio.sleep(0.01)
    anon.cookies.set(SESSION_COOKIE, token)  # a browser would drop it (Max-Age=0); a thief not
    response = await anon.get("/api/auth/me")
    assert response.status_code == 401
    assert "expired" in response.json()["detail"]


async def test_disabling_a_user_ends_its_sessions_and_tokens(hub: Hub, anon: httpx.AsyncClient):
    user = await add_user(hub, "operator", ["berlin"], password=PASSWORD)
    _, token = await user_token(hub, user)
    await _login(anon, user.name)
    async with api_client(hub) as admin:
        disabled = await admin.patch(f"/api/users/{user.id}", json={"disabled": True})
        assert disabled.status_code == 200, disabled.text

    assert (await anon.get("/api/auth/me")).status_code == 401
    by_token = await anon.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert by_token.status_code == 401
    again = await _login(anon, user.name)
    assert again.status_code == 401
    assert again.json() == {"detail": "wrong name or password"}


# --- CSRF --------------------------------------------------------------------------------------


async def test_cookie_writes_need_the_csrf_token(hub: Hub, anon: httpx.AsyncClient, uid: str):
    user = await add_user(hub, "admin", password=PASSWORD)
    csrf = (await _login(anon, user.name)).json()["csrf_token"]

    for headers in ({}, {CSRF_HEADER: "fhc_" + "x" * 43}, {CSRF_HEADER: ""}):
        refused = await anon.post("/api/devices", json={"id": f"csrf-{uid}"}, headers=headers)
        assert refused.status_code == 403, headers
        assert CSRF_HEADER in refused.json()["detail"]
    assert (await anon.get(f"/api/devices/csrf-{uid}")).status_code == 404  # nothing made

    made = await anon.post("/api/devices", json={"id": f"csrf-{uid}"}, headers={CSRF_HEADER: csrf})
    assert made.status_code == 201, made.text
    assert (await anon.get("/api/devices")).status_code == 200  # reads need no CSRF token


async def test_another_sessions_csrf_token_does_not_fit(hub: Hub, anon: httpx.AsyncClient):
    user = await add_user(hub, "admin", password=PASSWORD)
    async with api_client(hub, None) as other:
        foreign_csrf = (await _login(other, user.name)).json()["csrf_token"]
    await _login(anon, user.name)
    refused = await anon.post(
        "/api/tokens", json={"name": "x"}, headers={CSRF_HEADER: foreign_csrf}
    )
    assert refused.status_code == 403


async def test_bearer_token_requests_need_no_csrf_token(api: httpx.AsyncClient, uid: str):
    response = await api.post("/api/devices", json={"id": f"bearer-{uid}"})
    assert response.status_code == 201


# --- brute force ---------------------------------------------------------------------------


async def test_unknown_name_and_wrong_password_look_alike(hub: Hub, anon: httpx.AsyncClient):
    user = await add_user(hub, "viewer", password=PASSWORD)
    await _login(anon, "warm-up", "not the password")  # the first check also makes the dummy

    def timed(name: str) -> Any:
        async def attempt() -> tuple[float, httpx.Response]:
            started = time.perf_counter()
            response = await _login(anon, name, "not the password")
            return time.perf_counter() - started, response

        return attempt

    unknown = [await timed(f"nobody-{n}")() for n in range(3)]
    wrong = [await timed(user.name)() for _ in range(3)]

    for _, response in unknown + wrong:
        assert response.status_code == 401
        assert response.json() == {"detail": "wrong name or password"}
    unknown_s = statistics.median(t for t, _ in unknown)
    wrong_s = statistics.median(t for t, _ in wrong)
    assert 0.5 < unknown_s / wrong_s < 2.0, (unknown_s, wrong_s)  # both pay one argon2 check


async def test_failed_logins_are_throttled_per_name(hub: Hub, anon: httpx.AsyncClient):
    clock = FakeClock()
    hub.auth.throttle.by_name.clock = clock
    user = await add_user(hub, "viewer", password=PASSWORD)

    for _ in range(5):  # free attempts
        assert (await _login(anon, user.name, "guess guess guess")).status_code == 401
    assert (await _login(anon, user.name, "guess guess guess")).status_code == 401  # locks 1 s

    locked = await _login(anon, user.name)  # even the right password waits
    assert locked.status_code == 429
    assert locked.headers["retry-after"] == "1"
    assert "try again in 1 s" in locked.json()["detail"]
    assert SESSION_COOKIE not in _cookies(locked)

    clock.now += 1.01
    assert (await _login(anon, user.name, "guess guess guess")).status_code == 401  # locks 2 s
    clock.now += 1.0
    assert (await _login(anon, user.name)).headers["retry-after"] == "1"
    clock.now += 1.01
    assert (await _login(anon, user.name)).status_code == 200
    assert (await _login(anon, user.name, "guess guess guess")).status_code == 401  # reset


async def test_unknown_names_are_throttled_like_real_ones(hub: Hub, anon: httpx.AsyncClient):
    hub.auth.throttle.by_name.clock = FakeClock()
    statuses = [(await _login(anon, "ghost", "guess guess guess")).status_code for _ in range(7)]
    assert statuses == [401] * 6 + [429]


async def test_failed_logins_are_throttled_per_address(hub: Hub, anon: httpx.AsyncClient):
    hub.auth.throttle.by_address.clock = FakeClock()
    user = await add_user(hub, "viewer", password=PASSWORD)
    for n in range(21):  # a different name each time: only the address adds up
        assert (await _login(anon, f"name-{n}", "guess guess guess")).status_code == 401
    refused = await _login(anon, user.name)
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1

    async with api_client(hub, None, address="192.0.2.7") as elsewhere:  # not affected
        assert (await _login(elsewhere, user.name)).status_code == 200


# --- API tokens ------------------------------------------------------------------------------


async def test_token_is_shown_once_works_and_dies_when_revoked(hub: Hub, anon: httpx.AsyncClient):
    user = await add_user(hub, "operator", ["berlin"], password=PASSWORD)
    csrf = (await _login(anon, user.name)).json()["csrf_token"]
    headers = {CSRF_HEADER: csrf}

    created = await anon.post(
        "/api/tokens",
        json={"name": "dashboard script", "scopes": ["read"], "expires_in_s": 3600},
        headers=headers,
    )
    assert created.status_code == 201, created.text
    assert created.headers["cache-control"] == "no-store"
    token = created.json()["token"]
    assert re.fullmatch(r"fht_[A-Za-z0-9_-]{43}", token)
    assert created.json()["scopes"] == ["read"]
    assert abs(created.json()["expires_at"] - (now_ms() + 3_600_000)) < 10_000

    listed = await anon.get("/api/tokens")
    assert [t["name"] for t in listed.json()] == ["dashboard script"]
    assert token not in listed.text
    assert hashlib.sha256(token.encode()).hexdigest() not in listed.text
    assert "token" not in listed.json()[0]

    bearer = {"Authorization": f"Bearer {token}"}
    async with api_client(hub, None) as script:
        me = await script.get("/api/auth/me", headers=bearer)
        assert me.status_code == 200
        assert me.json()["via"] == "token"
        assert me.json()["scopes"] == ["read"]
        assert (
            await script.post("/api/devices", json={"id": "x"}, headers=bearer)
        ).status_code == 403

        token_id = created.json()["id"]
        revoked = await anon.delete(f"/api/tokens/{token_id}", headers=headers)
        assert revoked.status_code == 204
        refused = await script.get("/api/auth/me", headers=bearer)
        assert refused.status_code == 401
        assert refused.json()["detail"] == "the token was revoked"
    assert (await anon.get("/api/tokens")).json()[0]["revoked_at"] is not None
    assert (await anon.delete(f"/api/tokens/{token_id}", headers=headers)).status_code == 204


async def test_bad_tokens_are_refused(hub: Hub):
    user = await add_user(hub, "admin")
    _, expired = await user_token(hub, user, expires_at=now_ms() - 1)
    _, good = await user_token(hub, user)
    tampered = good[:-1] + ("A" if good[-1] != "A" else "B")
    cases = {
        f"Bearer {expired}": "the token has expired",
        f"Bearer {tampered}": "invalid token",
        "Bearer fht_" + "A" * 43: "invalid token",
        "Bearer " + "A" * 5000: "invalid token",
        "Bearer": "log in",
        f"Basic {good}": "log in",
        good: "log in",
    }
    async with api_client(hub, None) as client:
        for header, message in cases.items():
            response = await client.get("/api/devices", headers={"Authorization": header})
            assert response.status_code == 401, header[:40]
            assert message in response.json()["detail"], header[:40]
        ok = await client.get("/api/devices", headers={"Authorization": f"Bearer {good}"})
        assert ok.status_code == 200


async def test_a_token_is_limited_by_its_scopes_and_its_users_role(hub: Hub, uid: str):
    async with api_client(hub, "admin", scopes=["read"]) as reader:
        assert (await reader.get("/api/users")).status_code == 200
        assert (await reader.post("/api/devices", json={"id": f"a-{uid}"})).status_code == 403
        assert (await reader.get("/metrics")).status_code == 403  # needs the metrics scope
    async with api_client(hub, "viewer", sites=["berlin"], scopes=["read", "write"]) as viewer:
        made = await viewer.post(
            "/api/devices", json={"id": f"v-{uid}", "labels": {"site": "berlin"}}
        )
        assert made.status_code == 403  # write scope, but a viewer's role has no device writes


async def test_a_token_cannot_mint_a_stronger_token(hub: Hub):
    async with api_client(hub, "operator", sites=["berlin"], scopes=["read", "write"]) as op:
        stronger = await op.post("/api/tokens", json={"name": "x", "scopes": ["read", "command"]})
        assert stronger.status_code == 403
        assert "command" in stronger.json()["detail"]
        same = await op.post("/api/tokens", json={"name": "x", "scopes": ["read"]})
        assert same.status_code == 201


async def test_admin_sees_and_revokes_any_users_tokens(hub: Hub, api: httpx.AsyncClient):
    user = await add_user(hub, "viewer", ["berlin"])
    token_id, token = await user_token(hub, user, ["read"])
    listed = await api.get(f"/api/users/{user.id}/tokens")
    assert [t["id"] for t in listed.json()] == [token_id]
    # Under /api/tokens an admin manages only its own: someone else's is not found.
    assert (await api.delete(f"/api/tokens/{token_id}")).status_code == 404
    assert (await api.delete(f"/api/users/{user.id}/tokens/{token_id}")).status_code == 204
    async with api_client(hub, None) as client:
        me = await client.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"})
        assert me.status_code == 401


# --- passwords and users -----------------------------------------------------------------------


async def test_changing_ones_password_ends_the_other_sessions(hub: Hub):
    user = await add_user(hub, "viewer", password=PASSWORD)
    async with api_client(hub, None) as here, api_client(hub, None) as there:
        csrf = (await _login(here, user.name)).json()["csrf_token"]
        await _login(there, user.name)
        wrong = await here.put(
            "/api/auth/password",
            json={"current_password": "not it at all", "new_password": NEW_PASSWORD},
            headers={CSRF_HEADER: csrf},
        )
        assert wrong.status_code == 403
        short = await here.put(
            "/api/auth/password",
            json={"current_password": PASSWORD, "new_password": "short"},
            headers={CSRF_HEADER: csrf},
        )
        assert short.status_code == 422
        assert "at least 10 characters" in short.json()["detail"][0]["msg"]
        changed = await here.put(
            "/api/auth/password",
            json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
            headers={CSRF_HEADER: csrf},
        )
        assert changed.status_code == 204
        assert (await here.get("/api/auth/me")).status_code == 200
        assert (await there.get("/api/auth/me")).status_code == 401
        assert (await _login(there, user.name)).status_code == 401
        assert (await _login(there, user.name, NEW_PASSWORD)).status_code == 200


async def test_admin_manages_users(hub: Hub, api: httpx.AsyncClient):
    created = await api.post(
        "/api/users",
        json={"name": "Carol", "role": "operator", "sites": ["paris", "berlin", "paris"]},
    )
    assert created.status_code == 201, created.text
    carol = created.json()
    assert carol["name"] == "carol"  # names are case-insensitive, stored in lower case
    assert carol["sites"] == ["berlin", "paris"]
    assert carol["has_password"] is False
    assert (
        await api.post("/api/users", json={"name": "CAROL", "role": "viewer"})
    ).status_code == 409
    bad_name = await api.post("/api/users", json={"name": "a/b", "role": "viewer"})
    assert bad_name.status_code == 422
    weak = await api.post("/api/users", json={"name": "dave", "role": "viewer", "password": "x"})
    assert weak.status_code == 422
    assert (await api.get("/api/users/999999")).status_code == 404

    async with api_client(hub, None) as client:
        assert (await _login(client, "carol", PASSWORD)).status_code == 401  # no password yet
        set_pw = await api.put(f"/api/users/{carol['id']}/password", json={"password": PASSWORD})
        assert set_pw.status_code == 204
        assert (await _login(client, "Carol", PASSWORD)).status_code == 200

    changed = await api.patch(f"/api/users/{carol['id']}", json={"role": "viewer", "sites": []})
    assert changed.json()["role"] == "viewer"
    assert changed.json()["sites"] == []
    assert (await api.delete(f"/api/users/{carol['id']}")).status_code == 204
    assert (await api.get(f"/api/users/{carol['id']}")).status_code == 404


async def test_the_last_enabled_admin_stays(hub: Hub):
    first = await add_user(hub, "admin", password=PASSWORD)
    async with api_client(hub, None) as client:
        csrf = (await _login(client, first.name)).json()["csrf_token"]
        headers = {CSRF_HEADER: csrf}
        for change in ({"role": "viewer"}, {"disabled": True}):
            refused = await client.patch(f"/api/users/{first.id}", json=change, headers=headers)
            assert refused.status_code == 409, change
            assert "last enabled admin" in refused.json()["detail"]
        gone = await client.delete(f"/api/users/{first.id}", headers=headers)
        assert gone.status_code == 409
        second = await add_user(hub, "admin")
        assert (await client.delete(f"/api/users/{second.id}", headers=headers)).status_code == 204


# --- the first admin ---------------------------------------------------------------------------


def _setup_token(records: list[logging.LogRecord]) -> str:
    found = [m for r in records for m in re.findall(r"fhsetup_[A-Za-z0-9_-]{43}", r.getMessage())]
    assert len(found) == 1, "the setup token is logged exactly once"
    return found[0]


async def test_setup_token_makes_the_first_admin_once(
    make_hub: HubFactory, caplog: pytest.LogCaptureFixture
):
    with caplog.at_level(logging.INFO):
        async with make_hub() as hub, api_client(hub, None) as client:
            token = _setup_token(caplog.records)
            line = next(r for r in caplog.records if token in r.getMessage())
            assert line.levelno == logging.WARNING
            assert "POST /api/auth/setup" in line.getMessage()
            body = {"token": token, "name": "root", "password": PASSWORD}

            wrong = await client.post("/api/auth/setup", json={**body, "token": "fhsetup_no"})
            assert wrong.status_code == 401
            weak = await client.post("/api/auth/setup", json={**body, "password": "short"})
            assert weak.status_code == 422  # and the token still works:
            made = await client.post("/api/auth/setup", json=body)
            assert made.status_code == 201, made.text
            assert made.json()["role"] == "admin"
            again = await client.post("/api/auth/setup", json={**body, "name": "root2"})
            assert again.status_code == 401
            assert (await _login(client, "root")).status_code == 200


async def test_setup_token_dies_with_the_hub_and_is_not_issued_when_users_exist(
    make_hub: HubFactory, caplog: pytest.LogCaptureFixture, tmp_path: Any
):
    data = tmp_path / "data"
    with caplog.at_level(logging.INFO):
        async with make_hub(data=data):
            old = _setup_token(caplog.records)
        caplog.clear()
        async with make_hub(data=data) as hub, api_client(hub, None) as client:
            new = _setup_token(caplog.records)  # a new one for this run; the old one is dead
            assert new != old
            body = {"token": old, "name": "root", "password": PASSWORD}
            assert (await client.post("/api/auth/setup", json=body)).status_code == 401
            await add_user(hub, "admin")  # e.g. by `fieldhub user add` meanwhile
            body["token"] = new
            assert (await client.post("/api/auth/setup", json=body)).status_code == 401
        caplog.clear()
        async with make_hub(data=data):
            assert not [r for r in caplog.records if "fhsetup_" in r.getMessage()]


# --- no secrets anywhere -------------------------------------------------------------------


async def test_no_secret_reaches_the_log_or_a_response(
    hub: Hub, anon: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG)
    user = await add_user(hub, "admin", password=PASSWORD)
    typed_in_name_field = "my-secret-password-typed-as-name"
    seen: list[str] = []

    seen.append((await _login(anon, typed_in_name_field, "whatever-it-was")).text)
    seen.append((await _login(anon, user.name, "almost the password")).text)
    login = await _login(anon, user.name)
    csrf = login.json()["csrf_token"]
    session = anon.cookies[SESSION_COOKIE]
    headers = {CSRF_HEADER: csrf}
    token = (await anon.post("/api/tokens", json={"name": "t"}, headers=headers)).json()["token"]
    await anon.put(
        "/api/auth/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=headers,
    )
    for path in ("/api/users", "/api/tokens", "/api/audit", "/api/auth/me"):
        seen.append((await anon.get(path)).text)
    seen.append(str((await hub.auth.audit.query(limit=1000)).entries))

    secrets = [
        PASSWORD,
        NEW_PASSWORD,
        "almost the password",
        "whatever-it-was",
        typed_in_name_field,
        session,
        csrf,
        token,
    ]
    secrets += [hashlib.sha256(s.encode()).hexdigest() for s in (session, csrf, token)]
    logged = [r.getMessage() for r in caplog.records if r.name.startswith("fieldhub")]
    assert any("login failed" in line for line in logged)
    for text in logged + seen:
        assert "$argon2" not in text
        for secret in secrets:
            assert secret not in text, f"{secret[:6]}… leaked: {text[:200]}"


# --- bad input -----------------------------------------------------------------------------


async def test_oversized_bodies_are_refused_with_413(hub: Hub, uid: str):
    async with api_client(hub, max_body=10_000) as api:
        big = {"id": f"big-{uid}", "attributes": {"blob": "x" * 20_000}}
        response = await api.post("/api/devices", json=big)
        assert response.status_code == 413
        assert "at most 10000 bytes" in response.json()["detail"]

        async def chunks() -> Any:  # no Content-Length: counted while read
            for _ in range(30):
                yield b" " * 1000

        chunked = await api.post(
            "/api/devices", content=chunks(), headers={"content-type": "application/json"}
        )
        assert chunked.status_code == 413
        assert (await api.get(f"/api/devices/big-{uid}")).status_code == 404
        small = await api.post("/api/devices", json={"id": f"small-{uid}"})
        assert small.status_code == 201


async def test_the_default_limit_is_one_mebibyte(api: httpx.AsyncClient, uid: str):
    body = b'{"id": "x", "name": "' + b"x" * (1024 * 1024) + b'"}'
    response = await api.post(
        "/api/devices", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413


async def test_malformed_json_is_422_with_a_clear_message(api: httpx.AsyncClient, anon: Any):
    response = await api.post(
        "/api/devices", content=b'{"id": "x",', headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["type"] == "json_invalid"
    assert error["msg"].startswith("the body is not valid JSON: ")

    wrong_type = await anon.post("/api/auth/login", json={"name": "x", "password": 1234567890123})
    assert wrong_type.status_code == 422
    assert "1234567890123" not in wrong_type.text  # the input is never echoed
    assert wrong_type.json()["detail"][0]["loc"] == ["body", "password"]


# --- health and metrics --------------------------------------------------------------------


async def test_health_tells_strangers_only_whether_the_hub_is_up(hub: Hub, anon: Any):
    assert (await anon.get("/api/health")).json() == {"status": "ok"}
    async with api_client(hub, "viewer", sites=["berlin"]) as viewer:
        assert (await viewer.get("/api/health")).json() == {"status": "ok"}
    async with api_client(hub, "admin") as admin:
        assert {"version", "broker", "database", "devices"} <= set(
            (await admin.get("/api/health")).json()
        )


async def test_metrics_need_a_token_with_the_metrics_scope(hub: Hub, anon: Any):
    assert (await anon.get("/metrics")).status_code == 401
    async with api_client(hub, "admin", scopes=["metrics"]) as scraper:
        response = await scraper.get("/metrics")
        assert response.status_code == 200
        assert "fieldhub_messages_received_total" in response.text
        assert (await scraper.get("/api/devices")).status_code == 403  # and nothing else
    async with api_client(hub, "operator", sites=["berlin"], scopes=["metrics"]) as operator:
        assert (await operator.get("/metrics")).status_code == 403


# --- sites ---------------------------------------------------------------------------------


async def test_site_users_see_only_their_sites_devices_and_events(
    hub: Hub, api: httpx.AsyncClient, connect_device: DeviceFactory
):
    here = await connect_device(hub, "here", site="berlin")
    there = await connect_device(hub, "there", site="paris")
    await api.post("/api/devices", json={"id": f"{here.device_id}-nosite"})
    for n, device in enumerate((here, there), start=1):
        device.publish(Channel.EVENT, Event(seq=1, ts=now_ms() + n, type="door.opened"))
        await device.wait_acked(1)

    async with api_client(hub, "viewer", sites=["berlin"]) as viewer:
        listed = await viewer.get("/api/devices")
        assert [d["id"] for d in listed.json()] == [here.device_id]
        events = (await viewer.get("/api/events")).json()["events"]
        assert {e["device_id"] for e in events} == {here.device_id}  # door and presence
        asked = await viewer.get("/api/events", params={"device": there.device_id})
        assert asked.json()["events"] == []
        foreign = await viewer.get(f"/api/devices/{there.device_id}")
        missing = await viewer.get("/api/devices/never-was")
        assert foreign.status_code == missing.status_code == 404
        assert foreign.json()["detail"] == f"device {there.device_id!r} is not registered"
    async with api_client(hub, "viewer", sites=[]) as nobody:
        assert (await nobody.get("/api/devices")).json() == []
        assert (await nobody.get("/api/events")).json()["events"] == []
    all_ids = {d["id"] for d in (await api.get("/api/devices")).json()}
    assert {here.device_id, there.device_id, f"{here.device_id}-nosite"} <= all_ids


async def test_operators_keep_devices_within_their_sites(hub: Hub, api: Any, uid: str):
    async with api_client(hub, "operator", sites=["berlin"]) as operator:
        elsewhere = await operator.post(
            "/api/devices", json={"id": f"p-{uid}", "labels": {"site": "paris"}}
        )
        assert elsewhere.status_code == 403
        assert "berlin" in elsewhere.json()["detail"]
        unlabelled = await operator.post("/api/devices", json={"id": f"u-{uid}"})
        assert unlabelled.status_code == 403
        made = await operator.post(
            "/api/devices", json={"id": f"b-{uid}", "labels": {"site": "berlin"}}
        )
        assert made.status_code == 201
        moved = await operator.patch(f"/api/devices/b-{uid}", json={"labels": {"site": "paris"}})
        assert moved.status_code == 403
        renamed = await operator.patch(f"/api/devices/b-{uid}", json={"name": "ATM"})
        assert renamed.status_code == 200
    assert (await api.get(f"/api/devices/b-{uid}")).json()["labels"] == {"site": "berlin"}


# --- audit -----------------------------------------------------------------------------------


async def test_security_actions_are_audited_and_queryable(
    hub: Hub, api: httpx.AsyncClient, anon: httpx.AsyncClient
):
    user = await add_user(hub, "operator", ["berlin"], password=PASSWORD)
    await _login(anon, "nobody-here", "guess guess guess")
    await _login(anon, user.name, "guess guess guess")
    csrf = (await _login(anon, user.name)).json()["csrf_token"]
    headers = {CSRF_HEADER: csrf}
    made = (await anon.post("/api/tokens", json={"name": "cron"}, headers=headers)).json()
    await anon.delete(f"/api/tokens/{made['id']}", headers=headers)
    await anon.post("/api/auth/logout", headers=headers)
    await api.patch(f"/api/users/{user.id}", json={"sites": ["berlin", "paris"]})
    await api.put(f"/api/users/{user.id}/password", json={"password": NEW_PASSWORD})

    page = await api.get("/api/audit", params={"limit": 1000})
    assert page.status_code == 200
    entries = [
        (e["actor"], e["action"], e["target"], e["outcome"])
        for e in reversed(page.json()["entries"])
        if e["target"] in (user.name, "", f"token:{made['id']}")
    ]
    admin = f"user:{api.user.name}/token:{api.token_id}"  # type: ignore[attr-defined]
    assert entries == [
        ("test", "user.created", user.name, "ok"),
        ("anonymous", "login", "", "failed"),
        ("anonymous", "login", user.name, "failed"),
        (f"user:{user.name}", "login", user.name, "ok"),
        (f"user:{user.name}", "token.created", f"token:{made['id']}", "ok"),
        (f"user:{user.name}", "token.revoked", f"token:{made['id']}", "ok"),
        (f"user:{user.name}", "logout", user.name, "ok"),
        (admin, "user.updated", user.name, "ok"),
        (admin, "user.password.set", user.name, "ok"),
    ]
    every = page.json()["entries"]
    assert all(e["source"] == "127.0.0.1" for e in every if e["action"] in ("login", "logout"))
    updated = next(e for e in every if e["action"] == "user.updated")
    assert updated["detail"] == {"sites": {"from": ["berlin"], "to": ["berlin", "paris"]}}

    failed = await api.get("/api/audit", params={"action": "login", "outcome": "failed"})
    assert len(failed.json()["entries"]) == 2
    by_user = await api.get("/api/audit", params={"actor": f"user:{user.name}"})
    assert {e["action"] for e in by_user.json()["entries"]} == {
        "login",
        "token.created",
        "token.revoked",
        "logout",
    }
    family = await api.get("/api/audit", params={"action": "token.*"})
    assert {e["action"] for e in family.json()["entries"]} == {"token.created", "token.revoked"}

    walked: list[int] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        got = (await api.get("/api/audit", params=params)).json()
        walked += [e["id"] for e in got["entries"]]
        cursor = got["next_cursor"]
        if cursor is None:
            break
    assert walked == [e["id"] for e in every]
    assert (await api.get("/api/audit", params={"cursor": "x"})).status_code == 422


async def test_a_token_revoked_elsewhere_stops_within_a_second_and_here_at_once(
    hub: Hub, anon: httpx.AsyncClient
):
    from fieldhub.hub.store.users import TOKEN_CACHE_S, UserStore

    user = await add_user(hub, "operator", ["berlin"])
    headers_of = {}
    for name in ("elsewhere", "here"):
        token_id, token = await user_token(hub, user, name=name)
        headers_of[name] = (token_id, {"Authorization": f"Bearer {token}"})
    for _token_id, headers in headers_of.values():
        assert (await anon.get("/api/auth/me", headers=headers)).status_code == 200

    # Another process (the CLI, a second hub) revokes through its own store: this hub may
    # answer from what it remembers, but not for longer than TOKEN_CACHE_S.
    token_id, headers = headers_of["elsewhere"]
    await UserStore(hub.engine).revoke_token(token_id, user_id=user.id)
    await asyncio.sleep(TOKEN_CACHE_S + 0.1)
    assert (await anon.get("/api/auth/me", headers=headers)).status_code == 401

    # Through this hub: refused with the very next request.
    token_id, headers = headers_of["here"]
    await hub.auth.users.revoke_token(token_id, user_id=user.id)
    assert (await anon.get("/api/auth/me", headers=headers)).status_code == 401


async def test_requests_in_flight_with_one_token_share_one_lookup(
    hub: Hub, anon: httpx.AsyncClient
) -> None:
    from sqlalchemy import event

    user = await add_user(hub, "operator", ["berlin"])
    _token_id, token = await user_token(hub, user, name="busy program")
    headers = {"Authorization": f"Bearer {token}"}
    lookups: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "FROM api_tokens JOIN users" in statement:
            lookups.append(statement)

    event.listen(hub.engine.sync_engine, "before_cursor_execute", count)
    try:
        answers = await asyncio.gather(
            *(anon.get("/api/auth/me", headers=headers) for _ in range(20))
        )
    finally:
        event.remove(hub.engine.sync_engine, "before_cursor_execute", count)
    assert [a.status_code for a in answers] == [200] * 20
    assert len(lookups) == 1
