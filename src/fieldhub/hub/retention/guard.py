"""The disk budget guard: how full the database's budget is, and what to do past 80 %.

The budget is the policy's ``budget_mb`` for the database alone, or (``0``) the whole
filesystem of the data folder. Space the database holds but no longer uses (SQLite's free
pages, which new rows take before the file grows) counts as free: deleting rows does not
shrink the file, and the guard would otherwise find the disk full for ever.

Past :data:`~fieldhub.hub.retention.policy.GUARD_THRESHOLD` the hub's health turns
``degraded`` naming the budget (an alarm needs a device: alarms have no hub-level subject),
and on SQLite the oldest raw samples go first, a twentieth of their span (at least an hour)
across all series at a time,
until the budget is back under the threshold; samples of the last :data:`KEEP_MS` are never
trimmed this way (a budget too small for one day of data stays degraded instead of empty).

Only a budget of the database's own is enforced by trimming. With no budget (``0``), a disk
past the threshold degrades health and nothing is removed: what filled it may be anything on
that disk, and emptying the hub's history would not give it back.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from fieldhub.hub.retention.policy import GUARD_THRESHOLD, RetentionPolicy
from fieldhub.hub.retention.trimmer import Trimmer
from fieldhub.hub.store.retention import RetentionRows

KEEP_MS: Final = 86_400_000
_STEP_MS: Final = 3_600_000
_STEPS: Final = 20
"""The oldest twentieth of what may go (at least an hour) per round, then the budget again."""
_MIB: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class BudgetReading:
    """How much of the budget is used."""

    used_bytes: int
    budget_bytes: int
    of: Literal["database", "disk"]  # the policy's budget, or the data folder's filesystem

    @property
    def share(self) -> float:
        """Used / budget (0 when there is no budget to speak of)."""
        return self.used_bytes / self.budget_bytes if self.budget_bytes else 0.0

    def describe(self) -> str:
        """``83 % of the database budget (850 of 1024 MiB)``: why health is degraded."""
        return (
            f"{self.share:.0%} of the {self.of} budget "
            f"({self.used_bytes // _MIB} of {self.budget_bytes // _MIB} MiB)"
        )

    @property
    def over(self) -> bool:
        """At or past the threshold."""
        return self.share >= GUARD_THRESHOLD


class DiskGuard:
    """Reads the budget; trims the oldest raw samples on SQLite (see the module's text)."""

    def __init__(self, rows: RetentionRows, trimmer: Trimmer, data: Path, *, sqlite: bool):
        self._rows = rows
        self._trimmer = trimmer
        self._data = data
        self._sqlite = sqlite
        self.last: BudgetReading | None = None
        self.trims = 0
        """Times the guard trimmed raw samples past the policy."""

    async def read(self, policy: RetentionPolicy) -> BudgetReading:
        """The budget as it is now (also kept as :attr:`last`)."""
        async with self._trimmer.writing:
            space = await self._rows.database_space()
        if policy.budget_mb:
            reading = BudgetReading(space.in_use, policy.budget_mb * _MIB, "database")
        else:
            disk = shutil.disk_usage(self._data)
            reading = BudgetReading(disk.used - space.reusable, disk.total, "disk")
        self.last = reading
        return reading

    async def enforce(self, policy: RetentionPolicy, now: int) -> BudgetReading:
        """Read the budget; past the threshold on SQLite, trim the oldest raw samples until
        it is back under (or only the last :data:`KEEP_MS` are left)."""
        reading = await self.read(policy)
        floor = now - KEEP_MS
        while reading.over and self._sqlite and reading.of == "database":
            async with self._trimmer.writing:
                oldest = await self._rows.oldest_sample()
            if oldest is None or oldest >= floor:
                break
            self.trims += 1
            step = max(_STEP_MS, (floor - oldest) // _STEPS)
            await self._trimmer.trim_oldest(min(oldest + step, floor))
            reading = await self.read(policy)
        return reading
