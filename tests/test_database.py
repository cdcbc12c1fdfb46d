"""Transactions that write: a read-then-write transaction never fails because another writer
committed in between (SQLite's stale-snapshot "database is locked"), on both databases."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from fieldhub.hub.store.audit import AuditLog
from fieldhub.hub.store.credentials import CredentialStore
from fieldhub.hub.store.database import migrate, write_transaction
from fieldhub.hub.store.devices import DeviceRegistry
from fieldhub.hub.store.schema import audit_log


async def test_a_writer_that_reads_first_holds_off_other_writers_until_it_commits(
    empty_engine: AsyncEngine,
) -> None:
    await migrate(empty_engine)
    audit = AuditLog(empty_engine)
    async with write_transaction(empty_engine) as conn:
        before = (await conn.execute(select(func.count()).select_from(audit_log))).scalar_one()
        other = asyncio.create_task(audit.record("user:bob", "login", "bob", "ok", "", {}))
        await asyncio.sleep(0.3)
        # On SQLite the other writer waits for this transaction; on PostgreSQL it has
        # committed, and this one writes regardless. Either way, this write succeeds.
        await conn.execute(
            audit_log.insert().values(
                ts=1,
                actor="user:alice",
                action="login",
                target="alice",
                outcome="ok",
                source="",
                detail={},
            )
        )
    await other
    async with empty_engine.connect() as conn:
        after = (await conn.execute(select(func.count()).select_from(audit_log))).scalar_one()
    assert after == before + 2


async def test_revoking_credentials_while_other_writers_commit_never_fails(
    empty_engine: AsyncEngine,
) -> None:
    await migrate(empty_engine)
    registry, credentials = DeviceRegistry(empty_engine), CredentialStore(empty_engine)
    audit = AuditLog(empty_engine)
    ids = [f"atm-{n}" for n in range(20)]
    for device_id in ids:
        await registry.create(device_id)
        await credentials.issue(device_id)

    async def keep_writing() -> None:
        while True:
            await audit.record("hub", "noise", "x", "ok", "", {})

    writers = [asyncio.create_task(keep_writing()) for _ in range(3)]
    try:
        revoked = await asyncio.gather(*(credentials.revoke(device_id) for device_id in ids))
    finally:
        for task in writers:
            task.cancel()
        await asyncio.gather(*writers, return_exceptions=True)
    assert all(len(usernames) == 1 for usernames in revoked)
    assert await credentials.keys() == []
