"""The device registry: create, read, update, delete devices and their labels."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from fieldhub.clock import now_ms
from fieldhub.hub.errors import Conflict, HubError, NotFound
from fieldhub.hub.store.database import write_transaction
from fieldhub.hub.store.schema import (
    commands,
    device_credentials,
    devices,
    events,
    media,
    received,
    rollup_late,
    rollups,
    rollups_day,
    rollups_hour,
    samples,
    series,
)


class RegistryError(HubError):
    """Root of registry errors."""


class DeviceExists(RegistryError, Conflict):
    """A device with this id is already registered."""


class DeviceNotFound(RegistryError, NotFound):
    """No device with this id is registered."""


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """A registered device as stored, presence and ingest bookkeeping included."""

    id: str
    name: str
    labels: dict[str, str]
    attributes: dict[str, Any]
    created_at: int
    updated_at: int
    acked_seq: int
    last_seen: int | None
    presence: str
    presence_since: int | None
    presence_reason: str
    connected: bool | None
    reported: dict[str, Any] = field(default_factory=dict)
    reported_ts: int | None = None
    # The twin (see hub/devices/twin.py): version 0 means nothing desired yet.
    desired: dict[str, Any] = field(default_factory=dict)
    desired_version: int = 0
    desired_at: int | None = None
    desired_by: str = ""
    # The gateway this device speaks through; None for a device with its own connection.
    parent_id: str | None = None

    @classmethod
    def from_row(cls, row: Row[Any]) -> DeviceRecord:
        """Build a record from a ``devices`` row."""
        return cls(
            id=row.id,
            name=row.name,
            labels=dict(row.labels or {}),
            attributes=dict(row.attributes or {}),
            created_at=row.created_at,
            updated_at=row.updated_at,
            acked_seq=row.acked_seq,
            last_seen=row.last_seen,
            presence=row.presence,
            presence_since=row.presence_since,
            presence_reason=row.presence_reason,
            connected=row.connected,
            reported=dict(row.reported or {}),
            reported_ts=row.reported_ts,
            desired=dict(row.desired or {}),
            desired_version=row.desired_version,
            desired_at=row.desired_at,
            desired_by=row.desired_by,
            parent_id=row.parent_id,
        )


class DeviceRegistry:
    """Registered devices in the store."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def create(
        self,
        device_id: str,
        *,
        name: str = "",
        labels: dict[str, str] | None = None,
        attributes: dict[str, Any] | None = None,
        parent_id: str | None = None,
    ) -> DeviceRecord:
        """Register a device (the id must already be valid, see ``check_device_id``);
        ``parent_id`` is its gateway, checked by the caller (``DeviceLifecycle.create_child``).

        Raises:
            DeviceExists: the id is taken.
        """
        now = now_ms()
        values = {
            "id": device_id,
            "name": name,
            "labels": labels or {},
            "attributes": attributes or {},
            "created_at": now,
            "updated_at": now,
            "acked_seq": 0,
            "presence": "unknown",
            "presence_reason": "",
            "reported": {},
            "parent_id": parent_id,
        }
        try:
            async with write_transaction(self._engine) as conn:
                await conn.execute(insert(devices).values(**values))
        except IntegrityError:
            raise DeviceExists(f"device {device_id!r} is already registered") from None
        return await self.get(device_id)

    async def get(self, device_id: str) -> DeviceRecord:
        """The device with ``device_id``.

        Raises:
            DeviceNotFound: no such device.
        """
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(devices).where(devices.c.id == device_id))).first()
        if row is None:
            raise DeviceNotFound(f"device {device_id!r} is not registered")
        return DeviceRecord.from_row(row)

    async def fingerprint(self) -> tuple[int, int]:
        """How many devices there are, and the newest one's creation: changes when any process
        registers or deletes a device (one aggregate, cheap enough every second)."""
        query = select(func.count(), func.coalesce(func.max(devices.c.created_at), 0))
        async with self._engine.connect() as conn:
            count, newest = (await conn.execute(query)).one()
        return int(count), int(newest)

    async def ids(self) -> set[str]:
        """Every registered device's id (no rows fetched)."""
        async with self._engine.connect() as conn:
            return set((await conn.execute(select(devices.c.id))).scalars())

    async def children(self, parent_id: str | None = None) -> list[DeviceRecord]:
        """Devices behind gateway ``parent_id`` (behind any gateway without), ordered by id."""
        query = select(devices).where(devices.c.parent_id.is_not(None)).order_by(devices.c.id)
        if parent_id is not None:
            query = query.where(devices.c.parent_id == parent_id)
        async with self._engine.connect() as conn:
            return [DeviceRecord.from_row(r) for r in await conn.execute(query)]

    async def list(self) -> list[DeviceRecord]:
        """All devices, ordered by id (filtered and paged: ``store/fleet.py``)."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(select(devices).order_by(devices.c.id))
            return [DeviceRecord.from_row(r) for r in rows]

    async def update(
        self,
        device_id: str,
        *,
        name: str | None = None,
        labels: dict[str, str] | None = None,
        attributes: dict[str, Any] | None = None,
    ) -> DeviceRecord:
        """Change what an operator may change; ``None`` leaves a field as it is.

        Raises:
            DeviceNotFound: no such device.
        """
        values: dict[str, Any] = {"updated_at": now_ms()}
        if name is not None:
            values["name"] = name
        if labels is not None:
            values["labels"] = labels
        if attributes is not None:
            values["attributes"] = attributes
        async with write_transaction(self._engine) as conn:
            result = await conn.execute(
                update(devices).where(devices.c.id == device_id).values(**values)
            )
        if result.rowcount == 0:
            raise DeviceNotFound(f"device {device_id!r} is not registered")
        return await self.get(device_id)

    async def delete(self, device_id: str) -> None:
        """Remove a device with its history, events, media rows and credentials (the broker is
        told by the hub, see ``DeviceLifecycle.delete``; the media files go with the next
        retention sweep).

        Raises:
            DeviceNotFound: no such device.
        """
        async with write_transaction(self._engine) as conn:
            result = await conn.execute(delete(devices).where(devices.c.id == device_id))
            if result.rowcount == 0:
                raise DeviceNotFound(f"device {device_id!r} is not registered")
            series_ids = select(series.c.id).where(series.c.device_id == device_id)
            await conn.execute(delete(samples).where(samples.c.series_id.in_(series_ids)))
            for tier in (rollups, rollups_hour, rollups_day, rollup_late):
                await conn.execute(delete(tier).where(tier.c.series_id.in_(series_ids)))
            await conn.execute(delete(series).where(series.c.device_id == device_id))
            await conn.execute(delete(events).where(events.c.device_id == device_id))
            await conn.execute(delete(received).where(received.c.device_id == device_id))
            await conn.execute(delete(media).where(media.c.device_id == device_id))
            await conn.execute(delete(commands).where(commands.c.device_id == device_id))
            await conn.execute(
                delete(device_credentials).where(device_credentials.c.device_id == device_id)
            )
