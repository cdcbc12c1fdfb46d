"""Which hub process drives a rollout: a lease in the database (docs/rollouts.md, Several hubs).

Several hub processes on one database each take up the unfinished rollouts when they start;
without a lease two of them would drive the same rollout (two install commands per device,
each one's verdicts written over the other's). The notification outbox's way: the hub that
creates a rollout, or takes it up, names itself (``leased_by``) until ``lease_until``; it
renews its leases while it runs; a clean stop gives them back, so the same or another hub
takes them up at once; a hub that died keeps them until they run out, then another takes the
rollout up. Each claim is one conditional ``UPDATE``: on PostgreSQL the second of two
concurrent claims re-reads the row the first changed and no longer matches, on SQLite writes
take turns, so two hubs never both hold one rollout.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from sqlalchemy import or_, update
from sqlalchemy.engine import Connection

from fieldhub.hub.store import rollouts as sql
from fieldhub.hub.store.rollouts import UNFINISHED, RolloutDeviceRecord, RolloutRecord
from fieldhub.hub.store.schema import rollouts

__all__ = ["LEASE_MS", "RENEW_MS", "claim", "insert_leased", "release", "renew", "reopen"]

LEASE_MS: Final = 30_000
"""How long a hub that stopped answering keeps its rollouts before another takes them up."""
RENEW_MS: Final = LEASE_MS // 3
"""How often a hub renews its leases and looks for rollouts whose lease ran out."""


def claim(
    conn: Connection,
    *,
    instance: str,
    now: int,
    lease_ms: int,
    ids: Iterable[str] | None = None,
) -> list[str]:
    """Lease to ``instance`` the unfinished rollouts (of ``ids``, or all) that no other hub
    holds, or whose lease ran out; the ids it holds now."""
    table = rollouts.c
    free = or_(table.leased_by.is_(None), table.leased_by == instance, table.lease_until < now)
    query = update(rollouts).where(table.status.in_(UNFINISHED), free)
    if ids is not None:
        query = query.where(table.id.in_(list(ids)))
    leased = query.values(leased_by=instance, lease_until=now + lease_ms).returning(table.id)
    return [row.id for row in conn.execute(leased)]


def renew(
    conn: Connection, *, instance: str, ids: Iterable[str], now: int, lease_ms: int
) -> set[str]:
    """Extend ``instance``'s leases of ``ids``; the ids it still holds (one missing was taken
    over after this hub stalled past its lease: it is another's to drive now)."""
    table = rollouts.c
    query = (
        update(rollouts)
        .where(table.id.in_(list(ids)), table.leased_by == instance)
        .values(lease_until=now + lease_ms)
        .returning(table.id)
    )
    return {row.id for row in conn.execute(query)}


def release(conn: Connection, *, instance: str) -> None:
    """Give back every lease of ``instance`` (it stops: whoever starts next takes them up)."""
    query = (
        update(rollouts)
        .where(rollouts.c.leased_by == instance)
        .values(leased_by=None, lease_until=None)
    )
    conn.execute(query)


def reopen(conn: Connection, *, rollout_id: str, instance: str, until: int) -> None:
    """Lease a completed rollout an operator reopens (``retry``) to the hub that does it: a
    finished rollout's old lease means nothing, whoever held it."""
    query = (
        update(rollouts)
        .where(rollouts.c.id == rollout_id)
        .values(leased_by=instance, lease_until=until)
    )
    conn.execute(query)


def insert_leased(
    conn: Connection,
    *,
    rollout: RolloutRecord,
    devices: list[RolloutDeviceRecord],
    audit: dict[str, Any],
    instance: str,
    lease_ms: int,
) -> None:
    """A new rollout (``store.rollouts.insert_rollout``), leased to the hub that made it in the
    same transaction: no other hub can take it up in between."""
    sql.insert_rollout(conn, rollout, devices, audit)
    conn.execute(
        update(rollouts)
        .where(rollouts.c.id == rollout.id)
        .values(leased_by=instance, lease_until=rollout.created_at + lease_ms)
    )
