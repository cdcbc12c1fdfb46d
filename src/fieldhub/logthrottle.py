"""Logging a recurring problem sparingly: once per key per interval, with a count of the rest.

Bad input arrives at message rate (a broken device, a raising callback); the log must say so
without flooding. Counting every occurrence is the job of metrics; this decides only when to
write a line again, and how many were held back meanwhile.
"""

from __future__ import annotations

import time


class LogThrottle:
    """Says when a recurring problem is due to be logged again."""

    def __init__(self, interval_s: float = 60.0, max_keys: int = 10_000) -> None:
        self._interval = interval_s
        self._max_keys = max_keys
        self._last: dict[object, float] = {}
        self._held: dict[object, int] = {}

    def due(self, key: object) -> int | None:
        """None while ``key`` was logged within the interval (counted as held back); else the
        number held back since its last line, and the interval starts again."""
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            self._held[key] = self._held.get(key, 0) + 1
            return None
        if len(self._last) >= self._max_keys:  # forget the older half so the table stays bounded
            for stale in sorted(self._last, key=self._last.__getitem__)[: self._max_keys // 2]:
                del self._last[stale]
                self._held.pop(stale, None)
        self._last[key] = now
        return self._held.pop(key, 0)


def held_back(count: int) -> str:
    """The suffix of a log line that had ``count`` like it held back (empty for none)."""
    return f" ({count} more like it since the last report)" if count else ""
