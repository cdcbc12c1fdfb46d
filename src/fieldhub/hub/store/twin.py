"""Desired state in the store: read, change by compare-and-set, list what to publish.

A change names the version its author last read. It is applied in one transaction by a
conditional ``UPDATE … WHERE desired_version = :read``: of two changes made from the same
version, only the first to commit matches, the other finds no row and is refused, so neither
silently overwrites what the other wanted (optimistic concurrency, as ETags do for HTTP).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from fieldhub.clock import now_ms
from fieldhub.hub.errors import Conflict, Invalid
from fieldhub.hub.store.database import write_transaction
from fieldhub.hub.store.devices import DeviceNotFound, DeviceRecord
from fieldhub.hub.store.schema import devices

__all__ = ["DesiredState", "DesiredStateError", "TwinStore", "VersionConflict"]


class DesiredStateError(Invalid):
    """A desired change that cannot be accepted; the message names the key and the rule."""


class VersionConflict(Conflict):
    """The desired state changed since the caller read it; nothing was changed.

    Attributes:
        current: the version now stored, which the caller should read again.
    """

    def __init__(self, device_id: str, expected: int, current: int) -> None:
        super().__init__(
            f"device {device_id!r}: the desired state is at version {current}, not {expected} "
            f"(someone changed it since you read it); read it again and retry with version "
            f"{current}"
        )
        self.current = current


@dataclass(frozen=True, slots=True)
class DesiredState:
    """What the hub publishes to a device: the desired state and its version."""

    device_id: str
    version: int
    state: dict[str, Any]


class TwinStore:
    """The ``desired*`` columns of ``devices``."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def change(
        self,
        device_id: str,
        *,
        version: int,
        changes: Mapping[str, Any],
        actor: str,
        max_keys: int,
    ) -> DeviceRecord:
        """Merge ``changes`` into the desired state (None removes a key) and bump its version,
        if it is still at ``version``.

        Returns the device as stored after the change.

        Raises:
            DeviceNotFound: no such device.
            VersionConflict: the stored version is not ``version``; nothing changed.
            DesiredStateError: the merged state would hold more than ``max_keys`` keys.
        """
        async with write_transaction(self._engine) as conn:
            current = await self._desired(conn, device_id)
            if current.version != version:
                raise VersionConflict(device_id, version, current.version)
            desired = dict(current.state)
            for key, value in changes.items():
                if value is None:
                    desired.pop(key, None)
                else:
                    desired[key] = value
            if len(desired) > max_keys:
                raise DesiredStateError(
                    f"the desired state would hold {len(desired)} keys, at most {max_keys}: "
                    "remove some (set them to null)"
                )
            result = await conn.execute(
                update(devices)
                .where(devices.c.id == device_id, devices.c.desired_version == version)
                .values(
                    desired=desired,
                    desired_version=version + 1,
                    desired_at=now_ms(),
                    desired_by=actor[:128],
                )
            )
            if result.rowcount != 1:  # another change committed since we read (PostgreSQL)
                raise VersionConflict(
                    device_id, version, (await self._desired(conn, device_id)).version
                )
            row = (await conn.execute(select(devices).where(devices.c.id == device_id))).one()
        return DeviceRecord.from_row(row)

    async def published(self) -> list[DesiredState]:
        """The desired state of every device that has one (version above 0), by device id."""
        query = (
            select(devices.c.id, devices.c.desired_version, devices.c.desired)
            .where(devices.c.desired_version > 0)
            .order_by(devices.c.id)
        )
        async with self._engine.connect() as conn:
            rows = await conn.execute(query)
            return [DesiredState(r.id, r.desired_version, dict(r.desired or {})) for r in rows]

    @staticmethod
    async def _desired(conn: AsyncConnection, device_id: str) -> DesiredState:
        row = (
            await conn.execute(
                select(devices.c.desired_version, devices.c.desired).where(
                    devices.c.id == device_id
                )
            )
        ).first()
        if row is None:
            raise DeviceNotFound(f"device {device_id!r} is not registered")
        return DesiredState(device_id, row.desired_version, dict(row.desired or {}))
