"""HTTP clients of a hub's API for tests, signed in as a user of a given role and sites.

Users and credentials are made through the hub's own stores, the way an admin would make them,
so every test request goes through real authentication and authorization.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Literal

import httpx
import uvicorn

from fieldhub.hub import secrets as tokens
from fieldhub.hub.api import create_app
from fieldhub.hub.api.security import CSRF_HEADER, SESSION_COOKIE
from fieldhub.hub.app import Hub
from fieldhub.hub.auth import Role
from fieldhub.hub.store.users import UserRecord

ALL_SCOPES = ("read", "write", "command", "metrics")


def reason(answer: httpx.Response) -> str:
    """What an error answer says, as a person reads it: the ``detail`` text, or the messages of
    a 422's list of errors joined (the hub's own checks and FastAPI's share that shape)."""
    detail = answer.json()["detail"]
    if isinstance(detail, list):
        return "; ".join(str(error["msg"]) for error in detail)
    return str(detail)


async def add_user(
    hub: Hub,
    role: str = "admin",
    sites: Iterable[str] = (),
    *,
    password: str | None = None,
    name: str | None = None,
) -> UserRecord:
    """A new user with a unique name (no password: it cannot log in, and costs no hashing)."""
    return await hub.auth.accounts.create_user(
        name or f"{role}-{secrets.token_hex(4)}",
        role=Role(role),
        sites=list(sites),
        password=password,
        actor="test",
    )


async def user_token(
    hub: Hub,
    user: UserRecord,
    scopes: Iterable[str] = ALL_SCOPES,
    *,
    expires_at: int | None = None,
    name: str = "test",
) -> tuple[int, str]:
    """A new API token of ``user``: its id and the token."""
    token = tokens.mint(tokens.API_TOKEN_PREFIX)
    record = await hub.auth.users.create_token(
        user.id,
        name=name,
        token_hash=tokens.digest(token),
        scopes=list(scopes),
        expires_at=expires_at,
    )
    return record.id, token


class HubClient(httpx.AsyncClient):
    """An in-process client of ``hub``'s API; entering it signs in as a new user of ``role``
    (admin by default) by API token or by session; ``role=None`` stays anonymous."""

    def __init__(
        self,
        hub: Hub,
        role: str | None = "admin",
        *,
        sites: Iterable[str] = (),
        scopes: Iterable[str] = ALL_SCOPES,
        via: Literal["token", "session"] = "token",
        max_body: int | None = None,
        address: str = "127.0.0.1",
    ) -> None:
        app = create_app(hub) if max_body is None else create_app(hub, max_body=max_body)
        transport = httpx.ASGITransport(app=app, client=(address, 50000))
        super().__init__(transport=transport, base_url="http://hub")
        self.hub = hub
        self.role = role
        self.sites = list(sites)
        self.scopes = list(scopes)
        self.via = via
        self.user: UserRecord | None = None
        self.token_id: int | None = None

    async def sign_in(self) -> None:
        """Make the user and its credentials, and send them with every request."""
        if self.role is None:
            return
        self.user = await add_user(self.hub, self.role, self.sites)
        if self.via == "token":
            self.token_id, token = await user_token(self.hub, self.user, self.scopes)
            self.headers["Authorization"] = f"Bearer {token}"
        else:
            session = await self.hub.auth.authenticator.open_session(self.user)
            self.cookies.set(SESSION_COOKIE, session.token)
            self.headers[CSRF_HEADER] = session.csrf_token

    async def __aenter__(self) -> HubClient:
        await super().__aenter__()
        await self.sign_in()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc: BaseException | None = None,
        tb: TracebackType | None = None,
    ) -> None:
        await super().__aexit__(exc_type, exc, tb)


@asynccontextmanager
async def served(hub: Hub) -> AsyncIterator[str]:
    """The hub's REST API over real HTTP on a free port, as ``fieldhub hub`` serves it."""
    server = uvicorn.Server(
        uvicorn.Config(create_app(hub), host="127.0.0.1", port=0, log_level="warning")
    )
    serving = asyncio.create_task(server.serve(), name="http")
    while not server.started:
        if serving.done():
            await serving
            raise RuntimeError("the hub's HTTP server did not start")
        await asyncio.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await serving
