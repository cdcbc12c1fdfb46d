"""The retention wing's front: the policy (read, set, audited) and the task that applies it.

Every :data:`SWEEP_S` the task reads the disk budget (trimming the oldest raw samples first on
SQLite when it is past 80 %), folds the complete hours and days into the rollup tiers
(``roller.py``), then trims what the policy no longer keeps. The policy lives in
the database (one row; none: the defaults), so a restart keeps what an admin set.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from fieldhub.clock import now_ms
from fieldhub.hub.devices.directory import DeviceDirectory
from fieldhub.hub.retention.guard import BudgetReading, DiskGuard
from fieldhub.hub.retention.policy import DAY_MS, RetentionPolicy
from fieldhub.hub.retention.roller import Roller
from fieldhub.hub.retention.trimmer import Trimmer
from fieldhub.hub.store.audit import AuditLog
from fieldhub.hub.store.retention import RetentionRows
from fieldhub.hub.store.rollup_tiers import RollupTiers
from fieldhub.hub.store.writes import Writes
from fieldhub.logthrottle import LogThrottle, held_back

log = logging.getLogger(__name__)

SWEEP_S: Final = 60.0


@dataclass(frozen=True, slots=True)
class PolicyRecord:
    """The policy in force, and who set it when (``updated_at`` 0: the defaults)."""

    policy: RetentionPolicy
    updated_at: int
    updated_by: str


class RetentionService:
    """Retention of one hub (see the module's text).

    Args:
        rows: the store's side.
        tiers: the rollup tiers the roller folds.
        audit: where policy changes are recorded.
        directory: the devices' labels (overrides match on them).
        data: the data folder, whose filesystem the budget guard reads.
        sqlite: whether the guard may trim raw samples past the policy (SQLite only: a
            PostgreSQL server has its own operators and disks).
    """

    def __init__(
        self,
        rows: RetentionRows,
        tiers: RollupTiers,
        audit: AuditLog,
        directory: DeviceDirectory,
        data: Path,
        *,
        sqlite: bool,
    ) -> None:
        self._rows = rows
        self._audit = audit
        self._record = PolicyRecord(RetentionPolicy(), 0, "")
        self.trimmer = Trimmer(rows, lambda d: entry.labels if (entry := directory.get(d)) else {})
        self.guard = DiskGuard(rows, self.trimmer, data, sqlite=sqlite)
        self.roller = Roller(tiers)
        self.sweeps = 0
        self._throttle = LogThrottle()

    async def load(self) -> None:
        """Read the stored policy and the budget (at start: health and the dashboard show it
        from the first request on)."""
        row = await self._rows.policy()
        if row is not None:
            self._record = PolicyRecord(
                RetentionPolicy.model_validate(row.policy), row.updated_at, row.updated_by
            )
        await self.guard.read(self._record.policy)

    @property
    def record(self) -> PolicyRecord:
        """The policy in force."""
        return self._record

    @property
    def budget(self) -> BudgetReading | None:
        """The disk budget as last read (None before the first sweep)."""
        return self.guard.last

    async def set(self, policy: RetentionPolicy, *, actor: str, source: str) -> PolicyRecord:
        """Store ``policy``; it applies from the next sweep on."""
        at = now_ms()
        await self._rows.set_policy(policy.model_dump(mode="json"), at=at, by=actor)
        self._record = PolicyRecord(policy, at, actor)
        await self._audit.record(
            actor, "retention.set", source=source, detail=policy.model_dump(mode="json")
        )
        return self._record

    async def run(self) -> None:
        """Sweep every :data:`SWEEP_S` until cancelled, the first a period after the start
        (a hub restarted or restored at once does not trim what it was just given back);
        failures are logged and tried again."""
        while True:
            await asyncio.sleep(SWEEP_S)
            try:
                await self.sweep()
            except (SQLAlchemyError, OSError) as exc:
                held = self._throttle.due("retention")
                if held is not None:
                    log.warning("retention sweep failed: %s%s", exc, held_back(held))

    async def sweep(self, now: int | None = None) -> BudgetReading:
        """The budget guard, the rollup tiers, then the policy; the budget as it is
        afterwards."""
        now = now_ms() if now is None else now
        policy = self._record.policy
        await self.guard.enforce(policy, now)
        covered = await self.roller.roll(now, now - policy.minute_days * DAY_MS)
        await self.trimmer.sweep(policy, now, covered)
        self.sweeps += 1
        return await self.guard.read(policy)


def retention_service(
    engine: AsyncEngine, writes: Writes, audit: AuditLog, directory: DeviceDirectory, data: Path
) -> RetentionService:
    """The retention of a hub on ``engine``, writing through ``writes``; the guard reads the
    filesystem of ``data`` and trims past the policy only on SQLite."""
    rows = RetentionRows(engine, writes)
    tiers = RollupTiers(engine, writes)
    sqlite = engine.dialect.name == "sqlite"
    return RetentionService(rows, tiers, audit, directory, data, sqlite=sqlite)
