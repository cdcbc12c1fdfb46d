"""Account work without a running hub: the ``fieldhub user`` commands and the demo's admin.

They open the hub's database directly (migrated first, so a fresh data folder works), which is
safe while a hub runs on it: users, sessions and tokens are read per request, and a running
hub's setup token stops working once a user exists.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fieldhub.hub.auth.passwords import generate
from fieldhub.hub.auth.rules import Role
from fieldhub.hub.auth.service import Auth
from fieldhub.hub.store.database import create_engine, migrate

DEMO_ADMIN = "admin"


@asynccontextmanager
async def open_auth(db_url: str) -> AsyncIterator[Auth]:
    """Access control on the database at ``db_url``, closed on exit."""
    engine = create_engine(db_url)
    try:
        await migrate(engine)
        yield Auth(engine)
    finally:
        await engine.dispose()


async def demo_admin(auth: Auth) -> str | None:
    """With no user yet, make the demo's admin with a generated password and return it (to be
    shown once); None when users exist (the password was shown at the first start)."""
    if await auth.users.count() > 0:
        return None
    password = generate()
    await auth.accounts.create_user(
        DEMO_ADMIN, role=Role.ADMIN, sites=[], password=password, actor="demo"
    )
    return password
