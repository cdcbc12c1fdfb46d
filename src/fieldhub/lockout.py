"""Lock-out after failed attempts, per key: ``free`` failures, then 1 s, 2 s, 4 s … locked.

One rule for every login in fieldhub: the hub's users (``hub/auth/throttle.py``, per name and
per address) and the agent's technician page (per address). A locked key is refused *before*
the password is checked, so it can be neither guessed nor used to burn CPU on hashing.

The table is bounded (``max_keys``, least recently failed dropped first, counted in
``evicted``), so a flood of addresses costs memory once, not without end. Standard library
only: the agent imports it too and counts its megabytes.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class _Failures:
    count: int
    last: float
    locked_until: float


class Lockout:
    """Failed attempts of one kind of key (a user name, a client address)."""

    def __init__(
        self,
        *,
        free: int,
        window_s: float = 900.0,
        max_lock_s: float = 900.0,
        max_keys: int = 50_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.free = free
        self.window_s = window_s
        self.max_lock_s = max_lock_s
        self.max_keys = max_keys
        self.clock = clock
        self.evicted = 0
        self._failures: OrderedDict[str, _Failures] = OrderedDict()

    def retry_after(self, key: str) -> float:
        """Seconds until ``key`` may try again (0: now)."""
        entry = self._failures.get(key)
        if entry is None:
            return 0.0
        now = self.clock()
        if now - entry.last > self.window_s and now >= entry.locked_until:
            del self._failures[key]
            return 0.0
        return max(0.0, entry.locked_until - now)

    def failed(self, key: str) -> None:
        """Count a failure of ``key``, locking it once past its free attempts."""
        now = self.clock()
        entry = self._failures.pop(key, None)
        if entry is None or now - entry.last > self.window_s:
            entry = _Failures(0, now, 0.0)
        entry.count += 1
        entry.last = now
        if entry.count > self.free:
            lock = min(self.max_lock_s, 2.0 ** (entry.count - self.free - 1))
            entry.locked_until = now + lock
        self._failures[key] = entry  # most recent last
        while len(self._failures) > self.max_keys:
            self._failures.popitem(last=False)
            self.evicted += 1

    def succeeded(self, key: str) -> None:
        """Forget the failures of ``key``."""
        self._failures.pop(key, None)
