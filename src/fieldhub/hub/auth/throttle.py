"""Login throttle: failed attempts per key (a user name, a client address) → wait times.

Each key may fail ``free`` times within ``window_s``; every further failure locks it for twice
as long as the one before (1 s, 2 s, 4 s … up to ``max_lock_s``). While locked, attempts are
refused with the time left (HTTP 429 + Retry-After) *before* the password is checked, so a
locked name cannot be guessed at all and costs no hashing. Names and addresses are throttled
separately: a name is protected against many addresses, an address against trying many names.
Unknown names are throttled exactly like real ones, so the throttle does not reveal them.

The table is bounded (``max_keys``, least recently failed dropped first, counted in
``evicted``). It lives in the hub process: with several hub processes each keeps its own.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class _Failures:
    count: int
    last: float
    locked_until: float


class Throttle:
    """Failed attempts of one kind of key."""

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


class LoginThrottle:
    """Throttles for login-like attempts by user name and by client address."""

    def __init__(
        self,
        *,
        per_name: int = 5,
        per_address: int = 20,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.by_name = Throttle(free=per_name, clock=clock)
        self.by_address = Throttle(free=per_address, clock=clock)

    def retry_after(self, name: str | None, address: str) -> int:
        """Whole seconds to wait before this attempt may be checked (0: go ahead)."""
        wait = self.by_address.retry_after(address)
        if name is not None:
            wait = max(wait, self.by_name.retry_after(name.lower()))
        return math.ceil(wait)

    def failed(self, name: str | None, address: str) -> None:
        """Count a failed attempt for the name (if any) and the address."""
        self.by_address.failed(address)
        if name is not None:
            self.by_name.failed(name.lower())

    def succeeded(self, name: str) -> None:
        """A correct password for ``name``: its count starts again (the address's does not)."""
        self.by_name.succeeded(name.lower())
