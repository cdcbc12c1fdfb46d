"""Login throttle: failed attempts per key (a user name, a client address) → wait times.

Each key may fail ``free`` times within ``window_s``; every further failure locks it for twice
as long as the one before (``fieldhub.lockout``, the rule the agent's page uses too). While
locked, attempts are refused with the time left (HTTP 429 + Retry-After). Names and addresses
are throttled separately: a name is protected against many addresses, an address against
trying many names.
Unknown names are throttled exactly like real ones, so the throttle does not reveal them.

It lives in the hub process: with several hub processes each keeps its own.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from fieldhub.lockout import Lockout


class LoginThrottle:
    """Throttles for login-like attempts by user name and by client address."""

    def __init__(
        self,
        *,
        per_name: int = 5,
        per_address: int = 20,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.by_name = Lockout(free=per_name, clock=clock)
        self.by_address = Lockout(free=per_address, clock=clock)

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
