"""Subscriptions in the database: write jobs and reads."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from fieldhub.hub.auth import Principal
from fieldhub.hub.notify.subscriptions import (
    QuietHours,
    Subscription,
    SubscriptionNotFound,
    SubscriptionSpec,
    owner_principal,
)
from fieldhub.hub.store.schema import notification_channels as channels
from fieldhub.hub.store.schema import notification_gathered as gathered
from fieldhub.hub.store.schema import notification_groups as groups
from fieldhub.hub.store.schema import notification_subscriptions as subscriptions
from fieldhub.hub.store.schema import users

__all__ = [
    "columns",
    "create",
    "forget_channel",
    "get",
    "list_subscriptions",
    "owner",
    "remove",
    "replace",
    "routable",
    "routes",
]


def columns(spec: SubscriptionSpec) -> dict[str, Any]:
    """The columns a spec sets."""
    return {
        "channel_id": spec.channel_id,
        "recipients": list(spec.recipients),
        "sites": list(spec.sites),
        "min_severity": spec.min_severity,
        "rules": list(spec.rules),
        "changes": list(spec.changes),
        "quiet_hours": None if spec.quiet_hours is None else spec.quiet_hours.as_json(),
        "group_interval_s": spec.group_interval_s,
        "max_per_hour": spec.max_per_hour,
        "enabled": spec.enabled,
    }


def _record(row: Mapping[Any, Any]) -> Subscription:
    quiet = row["quiet_hours"]
    return Subscription(
        id=row["id"],
        owner_id=row["owner_id"],
        channel_id=row["channel_id"],
        recipients=tuple(row["recipients"]),
        sites=tuple(row["sites"]),
        min_severity=row["min_severity"],
        rules=tuple(row["rules"]),
        changes=tuple(row["changes"]),
        quiet_hours=None if quiet is None else QuietHours.from_json(quiet),
        group_interval_s=row["group_interval_s"],
        max_per_hour=row["max_per_hour"],
        enabled=row["enabled"],
        created_at=row["created_at"],
        created_by=row["created_by"],
    )


def _by_id(conn: Connection, subscription_id: int) -> Subscription:
    query = select(subscriptions).where(subscriptions.c.id == subscription_id)
    row = conn.execute(query).mappings().first()
    if row is None:
        raise SubscriptionNotFound(f"no notification subscription {subscription_id}")
    return _record(row)


def create(conn: Connection, values: dict[str, Any]) -> Subscription:
    """Store a new subscription (``values``: every column but ``id``); a write job."""
    new_id = conn.execute(insert(subscriptions).values(**values)).inserted_primary_key
    if new_id is None:
        raise RuntimeError("the database returned no id for the new subscription")
    return _by_id(conn, int(new_id[0]))


def replace(conn: Connection, subscription_id: int, values: dict[str, Any]) -> Subscription:
    """Change the given columns; a write job. Gathered changes stay: their digest follows
    the new settings.

    Raises:
        SubscriptionNotFound.
    """
    _by_id(conn, subscription_id)
    conn.execute(
        update(subscriptions).where(subscriptions.c.id == subscription_id).values(**values)
    )
    return _by_id(conn, subscription_id)


def remove(conn: Connection, subscription_id: int) -> None:
    """Delete a subscription with its open groups and what they gathered; a write job.

    Raises:
        SubscriptionNotFound.
    """
    _by_id(conn, subscription_id)
    _forget(conn, [subscription_id])


def forget_channel(conn: Connection, channel_id: int) -> None:
    """Delete the subscriptions of a deleted channel (they could never send again)."""
    query = select(subscriptions.c.id).where(subscriptions.c.channel_id == channel_id)
    _forget(conn, [row.id for row in conn.execute(query)])


def _forget(conn: Connection, ids: list[int]) -> None:
    if not ids:
        return
    conn.execute(delete(gathered).where(gathered.c.subscription_id.in_(ids)))
    conn.execute(delete(groups).where(groups.c.subscription_id.in_(ids)))
    conn.execute(delete(subscriptions).where(subscriptions.c.id.in_(ids)))


def routable(
    conn: Connection, ids: list[int] | None = None
) -> list[tuple[Subscription, Principal]]:
    """Enabled subscriptions of enabled channels (``ids``: only those) with their owner's eyes;
    those of a disabled or deleted owner are left out: they hear nothing."""
    return routes(conn, ids)[0]


def routes(
    conn: Connection, ids: list[int] | None = None
) -> tuple[list[tuple[Subscription, Principal]], list[Subscription]]:
    """:func:`routable`, and apart the subscriptions it leaves out for their owner (disabled
    or deleted): routing counts the changes only those wanted (``disabled_user``)."""
    query = (
        select(subscriptions, users.c.role, users.c.sites.label("owner_sites"), users.c.disabled)
        .select_from(
            subscriptions.join(channels, channels.c.id == subscriptions.c.channel_id).outerjoin(
                users, users.c.id == subscriptions.c.owner_id
            )
        )
        .where(subscriptions.c.enabled.is_(True), channels.c.enabled.is_(True))
        .order_by(subscriptions.c.id)
    )
    if ids is not None:
        query = query.where(subscriptions.c.id.in_(ids))
    found, silenced = [], []
    for row in conn.execute(query).mappings():
        owner = owner_principal(row["owner_id"], row["role"], row["owner_sites"], row["disabled"])
        if owner is not None:
            found.append((_record(row), owner))
        else:
            silenced.append(_record(row))
    return found, silenced


# -- reads ------------------------------------------------------------------------------------
async def list_subscriptions(engine: AsyncEngine, *, owner_id: int | None) -> list[Subscription]:
    """By id; ``owner_id`` None: everyone's."""
    query = select(subscriptions).order_by(subscriptions.c.id)
    if owner_id is not None:
        query = query.where(subscriptions.c.owner_id == owner_id)
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).mappings().all()
    return [_record(row) for row in rows]


async def get(engine: AsyncEngine, subscription_id: int) -> Subscription:
    """One subscription.

    Raises:
        SubscriptionNotFound.
    """
    async with engine.connect() as conn:
        return await conn.run_sync(lambda sync: _by_id(sync, subscription_id))


async def owner(engine: AsyncEngine, owner_id: int | None) -> Principal | None:
    """The eyes of a would-be owner (None: no such user, or disabled)."""
    if owner_id is None:
        return owner_principal(None, None, None, None)
    query = select(users.c.role, users.c.sites, users.c.disabled).where(users.c.id == owner_id)
    async with engine.connect() as conn:
        row = (await conn.execute(query)).first()
    if row is None:
        return None
    return owner_principal(owner_id, row.role, row.sites, row.disabled)
