"""The trimmer: what the policy no longer keeps, removed in small batches.

Why batches: on SQLite every write goes through the one writer thread (``store/writes.py``),
so one large ``DELETE`` would hold every ingest commit queued behind it for as long as it
takes (seconds for a month of samples). Here each batch is one job of at most
:data:`BATCH_ROWS` rows, and the next is given only when the last has committed: an ingest
commit waits at most one batch (on PostgreSQL, one short transaction of its own), and the
trimmer paces itself (:data:`PACE`) so that it never takes most of the writer's time.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Final

from fieldhub.hub.retention.policy import DAY_MS, RetentionPolicy
from fieldhub.hub.store.retention import RetentionRows, RollupTier, SeriesRef
from fieldhub.hub.store.rollup_tiers import Coverage

BATCH_ROWS: Final = 2000
"""Rows one batch deletes: a few ms of the writer's time (benchmarks/retention.py)."""

PACE: Final = 3.0
"""After each full batch the trimmer waits this many times what the batch took: it takes at
most a quarter of the writer's time, and ingest keeps the rest (benchmarks/retention.py)."""

Labels = Callable[[str], Mapping[str, str]]
"""A device's labels by its id (empty for one no longer registered)."""


class Trimmer:
    """Applies a policy (see the module's text); counts what it removed, by kind."""

    def __init__(self, rows: RetentionRows, labels_of: Labels, batch_rows: int = BATCH_ROWS):
        self._rows = rows
        self._labels_of = labels_of
        self._batch = batch_rows
        self.removed: Counter[str] = Counter()
        """Rows removed since start: ``samples``, ``rollups`` (of every tier), ``events``,
        ``alarms``, ``budget``."""
        self.writing = asyncio.Lock()
        """Held while a batch or a read runs: the hub's stop cancels the task only between
        them (a statement cut off would leave its pooled connection checked out)."""

    async def sweep(self, policy: RetentionPolicy, now: int, covered: Coverage) -> None:
        """Remove everything older than ``policy`` keeps at ``now``. Rollups of a tier go
        only once the next coarser tier holds their periods (``covered``: up to where the hour
        and day tiers do), so a roller that is behind never loses what it has yet to fold."""
        cuts: dict[RollupTier, int] = {
            "minute": min(now - policy.minute_days * DAY_MS, covered.hour),
            "hour": min(now - policy.hour_days * DAY_MS, covered.day),
            "day": now - policy.day_days * DAY_MS,
        }
        for ref in await self.series():
            days = policy.raw_days_for(ref.key, self._labels_of(ref.device_id))
            raw_cut = now - days * DAY_MS
            self.removed["samples"] += await self._drain(
                partial(self._rows.trim_samples, ref.id, raw_cut)
            )
            for tier, cut in cuts.items():
                self.removed["rollups"] += await self._drain(
                    partial(self._rows.trim_rollups, tier, ref.id, cut)
                )
        typed = set(policy.event_types)
        for kind, days in policy.event_types.items():
            self.removed["events"] += await self._drain(
                partial(self._rows.trim_events, now - days * DAY_MS, only={kind})
            )
        events_cut = now - policy.events_days * DAY_MS
        self.removed["events"] += await self._drain(
            partial(self._rows.trim_events, events_cut, but=typed)
        )
        self.removed["alarms"] += await self._drain(
            partial(self._rows.trim_alarms, now - policy.alarms_days * DAY_MS)
        )

    async def trim_oldest(self, before: int) -> int:
        """Remove every raw sample older than ``before``, whatever the policy (the disk
        budget guard's last resort); how many."""
        removed = 0
        for ref in await self.series():
            removed += await self._drain(partial(self._rows.trim_samples, ref.id, before))
        self.removed["budget"] += removed
        return removed

    async def series(self) -> list[SeriesRef]:
        """Every series (under :attr:`writing`)."""
        async with self.writing:
            return await self._rows.series()

    async def _drain(self, trim: Callable[[int], Awaitable[int]]) -> int:
        total = 0
        while True:
            started = time.perf_counter()
            async with self.writing:
                removed = await trim(self._batch)
            total += removed
            if removed < self._batch:
                return total
            await asyncio.sleep((time.perf_counter() - started) * PACE)
