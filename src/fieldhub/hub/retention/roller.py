"""The roller: folds complete hours of minute rollups into the hour tier, and complete days of
hour rollups into the day tier, in the background (never in ingest's transaction).

Why tiers: history over a year in hour buckets would read 525,600 minute rows per key; from
the hour tier it reads 8,760, from the day tier 365, and each tier is kept longer than the one
below it (the policy's ``minute_days`` ≤ ``hour_days`` ≤ ``day_days``).

Each pass first folds again the hours that late minutes changed (``rollup_late``), then moves
each tier's mark over the periods that are complete: an hour once it ended :data:`GRACE_MS`
ago (batches of its last minutes may still be on their way), a day once its 24 hours are in
the hour tier. Progress is stored (``rollup_marks``): a hub stopped in the middle folds the
rest of the period at its next pass, and a fold replaces rows, so nothing counts twice.
"""

from __future__ import annotations

import asyncio
import time
from typing import Final

from fieldhub.hub.retention.trimmer import PACE
from fieldhub.hub.store.rollup_tiers import (
    DAY_MS,
    HOUR_MS,
    SERIES_PER_JOB,
    Coverage,
    RollupTiers,
    Tier,
)

__all__ = ["GRACE_MS", "Roller"]

GRACE_MS: Final = 120_000
"""How long after its end an hour is folded: ingest batches are committed within seconds, so
later minutes are late readings (noted and folded again)."""
LATE_PER_JOB: Final = 500
"""Late hours (series and hour) one job folds again."""


class Roller:
    """Folds the tiers (see the module's text); counts the periods it folded."""

    def __init__(
        self, tiers: RollupTiers, series_per_job: int = SERIES_PER_JOB, pace: float = PACE
    ) -> None:
        self._tiers = tiers
        self._per_job = series_per_job
        self._pace = pace
        self.folded = {"hour": 0, "day": 0, "late": 0}
        """Periods folded since start (``late``: hours folded again)."""

    async def roll(self, now: int, keep_minutes_from: int) -> Coverage:
        """One pass at ``now``; minutes before ``keep_minutes_from`` are no longer all kept
        (retention), so late hours before it are not folded again. Up to where the tiers now
        hold every period."""
        day_mark = await self._tiers.mark("day")
        day_folded = 0 if day_mark is None else day_mark.folded
        while True:
            done = await self._tiers.refold_late(keep_minutes_from, day_folded, LATE_PER_JOB)
            self.folded["late"] += done
            if done < LATE_PER_JOB:
                break
        hours_until = (now - GRACE_MS) // HOUR_MS * HOUR_MS
        hour_folded = await self._advance("hour", hours_until)
        day_folded = await self._advance("day", hour_folded // DAY_MS * DAY_MS)
        return Coverage(hour_folded, day_folded)

    async def _advance(self, tier: Tier, until: int) -> int:
        """Fold every period of ``tier`` before ``until`` not folded yet; up to where the
        tier now holds every period."""
        width = HOUR_MS if tier == "hour" else DAY_MS
        mark = await self._tiers.mark(tier)
        if mark is None:
            oldest = await self._tiers.oldest(tier)
            start = until if oldest is None else min(until, oldest // width * width)
            await self._tiers.advance(tier, until, folded=start)
            folded = start
        else:
            folded = mark.folded
            if mark.upto < until:
                await self._tiers.advance(tier, until)
            until = max(until, mark.upto)  # an interrupted pass had promised up to there
        low, high = await self._tiers.series_bounds()
        per_job = min(self._per_job, max(1, high - low))  # series in one job
        step = width * max(1, self._per_job // per_job)  # and the periods
        for span_start in range(folded, until, step):
            span = (span_start, min(span_start + step, until))
            chunks = list(range(low, high, per_job)) or [low]
            for index, first in enumerate(chunks):
                last = index == len(chunks) - 1
                started = time.perf_counter()
                await self._tiers.fold(tier, span, first, first + per_job, done=last)
                # Paced as the trimmer is: a backlog (a hub upgraded with months of minutes)
                # takes at most a quarter of the writer's time.
                await asyncio.sleep((time.perf_counter() - started) * self._pace)
            self.folded[tier] += (span[1] - span[0]) // width
        return max(folded, until)
