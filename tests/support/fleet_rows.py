"""A large fleet written straight into the store, for the fleet page's tests and benchmark.

Registering 10,000 devices through the API costs minutes (credentials hashed, the broker told);
what the fleet's pages and counts read is the ``devices`` table, so the rows go in as one
insert. A device here has no credentials: it is listed, counted and shown, never connected.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from fieldhub.clock import now_ms
from fieldhub.hub.store.database import write_transaction
from fieldhub.hub.store.schema import alarms, devices

PRESENCE_CYCLE = ("online", "online", "online", "stale", "offline", "unknown", "online")
"""Device ``i`` is in ``PRESENCE_CYCLE[i % 7]``: 4 in 7 online."""
_CHUNK = 2_000


@dataclass(frozen=True)
class FleetRows:
    """What :func:`register_fleet` wrote, for assertions."""

    ids: list[str]
    sites: tuple[str, ...]
    groups: tuple[str, ...]

    def presence_of(self, index: int) -> str:
        return PRESENCE_CYCLE[index % len(PRESENCE_CYCLE)]

    def site_of(self, index: int) -> str:
        return self.sites[index % len(self.sites)]

    def group_of(self, index: int) -> str:
        return self.groups[index % len(self.groups)]


async def register_fleet(
    engine: AsyncEngine,
    count: int,
    *,
    prefix: str = "dev",
    sites: tuple[str, ...] = ("berlin", "paris", "madrid", "oslo"),
    groups: tuple[str, ...] = ("atm", "locker", "door"),
) -> FleetRows:
    """``count`` devices ``{prefix}-00000`` …, named ``Cabinet 0`` …, spread over ``sites``,
    ``groups`` and the presence states of :data:`PRESENCE_CYCLE`, seen a second apart."""
    now = now_ms()
    fleet = FleetRows([f"{prefix}-{i:05d}" for i in range(count)], sites, groups)
    rows = [
        {
            "id": device_id,
            "name": f"Cabinet {i}",
            "labels": {"site": fleet.site_of(i), "group": fleet.group_of(i)},
            "attributes": {},
            "created_at": now,
            "updated_at": now,
            "acked_seq": 0,
            "last_seen": None if fleet.presence_of(i) == "unknown" else now - i * 1000,
            "presence": fleet.presence_of(i),
            "presence_since": now,
            "presence_reason": "",
            "reported": {},
        }
        for i, device_id in enumerate(fleet.ids)
    ]
    for start in range(0, count, _CHUNK):
        async with write_transaction(engine) as conn:
            await conn.execute(insert(devices), rows[start : start + _CHUNK])
    return fleet


async def open_alarm(engine: AsyncEngine, device_id: str, rule_id: str, severity: str) -> None:
    """An open alarm of ``device_id`` as the alarm engine stores one (its counts' input)."""
    now = now_ms()
    async with write_transaction(engine) as conn:
        await conn.execute(
            insert(alarms).values(
                rule_id=rule_id,
                device_id=device_id,
                severity=severity,
                state="active",
                condition_active=True,
                raised_at=now,
                message="test",
                updated_at=now,
            )
        )
