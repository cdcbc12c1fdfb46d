"""Notification channels in the database: write jobs and reads."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from fieldhub.hub.notify.outbox import bury_channel, channel_record
from fieldhub.hub.notify.records import ChannelNameTaken, ChannelNotFound, ChannelRecord
from fieldhub.hub.notify.subscription_store import forget_channel
from fieldhub.hub.store.schema import notification_channels as channels

__all__ = ["create", "get", "list_channels", "remove", "update_channel"]


def _by_id(conn: Connection, channel_id: int) -> ChannelRecord:
    row = conn.execute(select(channels).where(channels.c.id == channel_id)).mappings().first()
    if row is None:
        raise ChannelNotFound(f"no notification channel {channel_id}")
    return channel_record(row)


def _name_free(conn: Connection, name: str, but: int | None = None) -> None:
    query = select(channels.c.id).where(channels.c.name == name)
    if but is not None:
        query = query.where(channels.c.id != but)
    if conn.execute(query).first() is not None:
        raise ChannelNameTaken(f"a notification channel is already named {name!r}")


def create(conn: Connection, values: dict[str, Any]) -> ChannelRecord:
    """Store a new channel (``values``: every column but ``id``), checked; a write job.

    Raises:
        ChannelNameTaken: the name is in use.
    """
    _name_free(conn, values["name"])
    try:
        new_id = conn.execute(insert(channels).values(**values)).inserted_primary_key
    except IntegrityError:  # a racing create with the same name
        raise ChannelNameTaken(
            f"a notification channel is already named {values['name']!r}"
        ) from None
    if new_id is None:
        raise RuntimeError("the database returned no id for the new channel")
    return _by_id(conn, int(new_id[0]))


def update_channel(conn: Connection, channel_id: int, values: dict[str, Any]) -> ChannelRecord:
    """Change the given columns of a channel; a write job.

    Raises:
        ChannelNotFound, ChannelNameTaken.
    """
    _by_id(conn, channel_id)
    if "name" in values:
        _name_free(conn, values["name"], but=channel_id)
    if values:
        conn.execute(update(channels).where(channels.c.id == channel_id).values(**values))
    return _by_id(conn, channel_id)


def remove(conn: Connection, channel_id: int, *, now: int) -> int:
    """Delete a channel with its subscriptions; its pending notifications become dead (how
    many). A write job.

    Raises:
        ChannelNotFound.
    """
    _by_id(conn, channel_id)
    conn.execute(delete(channels).where(channels.c.id == channel_id))
    forget_channel(conn, channel_id)
    return bury_channel(conn, channel_id, now=now)


def fetch(conn: Connection, channel_id: int) -> ChannelRecord:
    """One channel, in a write job (to check it exists before enqueueing)."""
    return _by_id(conn, channel_id)


async def get(engine: AsyncEngine, channel_id: int) -> ChannelRecord:
    """One channel.

    Raises:
        ChannelNotFound.
    """
    async with engine.connect() as conn:
        return await conn.run_sync(_by_id, channel_id)


async def list_channels(engine: AsyncEngine) -> list[ChannelRecord]:
    """Every channel, by name."""
    async with engine.connect() as conn:
        rows = (await conn.execute(select(channels).order_by(channels.c.name))).mappings().all()
    return [channel_record(row) for row in rows]
