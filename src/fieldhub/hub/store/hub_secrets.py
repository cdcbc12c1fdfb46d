"""Secrets the hubs of one cluster share through their database (``hub_secrets``).

Several hubs on several machines share only the broker and the database, so a secret each of
them must hold the same (the key that signs acknowledge, media and bundle links) lives in the
database. It is made once, race-free: every hub offers a value with an insert that does
nothing when a row is there, then reads the row: whichever offer came first is everyone's.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from fieldhub.hub.store.database import write_transaction
from fieldhub.hub.store.schema import hub_secrets

__all__ = ["shared_secret"]


async def shared_secret(engine: AsyncEngine, name: str, offer: str, *, at: int) -> str:
    """The secret ``name`` (text, such as base64): ``offer`` if no hub stored one before,
    else the stored one."""
    insert = pg_insert if engine.dialect.name == "postgresql" else sqlite_insert
    offered = (
        insert(hub_secrets)
        .values(name=name, value=offer, created_at=at)
        .on_conflict_do_nothing(index_elements=["name"])
    )
    async with write_transaction(engine) as conn:
        await conn.execute(offered)
        stored = await conn.execute(select(hub_secrets.c.value).where(hub_secrets.c.name == name))
        return str(stored.scalar_one())
