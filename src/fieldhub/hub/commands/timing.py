"""When each open command needs the command service's attention next.

A command waits on one clock at a time, by its state: queued, its pacing slot
(``not_before``) and then its TTL; sent and not taken, its next resend or its TTL; taken, its
timeout. This module keeps those times in one heap, and the resend back-off of each command
(:data:`RESEND_MIN_MS`, doubling up to :data:`RESEND_MAX_MS`), so that the service decides
*what* to do when a time comes and this decides only *when*. A heap entry may be stale (the
command moved on since): the service looks at the command's state when it pops one.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from typing import Final

from fieldhub.hub.store.commands import CommandRecord

__all__ = ["RESEND_MAX_MS", "RESEND_MIN_MS", "DeliveryTiming"]

RESEND_MIN_MS: Final = 2_000
"""A command not taken this long after it was sent to a connected device is sent again; the
wait doubles with each such resend up to :data:`RESEND_MAX_MS`, and starts again from here
when the device comes online or the hub's broker connection is back (both send it at once).
The device answers within a round trip (it says it took a command within 50 ms, see
``agent/commands.py``), so a command still untaken after seconds was lost on the way, and
sending it again is safe (at most once). Nothing is sent on the clock while the hub's own
broker connection is down: it would only pile up in the client's queue."""
RESEND_MAX_MS: Final = 30_000


class DeliveryTiming:
    """The due times of open commands, and when each was last sent."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, str]] = []  # (epoch ms, command id)
        self._last_sent: dict[str, int] = {}  # command id → epoch ms of its last delivery
        self._resend_wait: dict[str, int] = {}  # command id → ms until it is sent again

    def schedule(self, record: CommandRecord) -> bool:
        """Note when ``record`` is next due, by its state; False when no clock concerns it."""
        if record.status == "queued":
            when = min(record.expires_at, record.not_before or record.expires_at)
        elif record.status == "sent":
            when = min(record.expires_at, self.resend_at(record))
        elif record.status == "acknowledged" and record.acknowledged_at is not None:
            when = record.acknowledged_at + record.timeout_ms
        else:
            return False
        self.at(when, record.id)
        return True

    def at(self, when: int, command_id: str) -> None:
        """Look at ``command_id`` again at ``when`` (epoch ms)."""
        heapq.heappush(self._heap, (when, command_id))

    def delay_s(self, now: int, longest: float) -> float:
        """Seconds until the next due time, at most ``longest``."""
        if not self._heap:
            return longest
        return min(longest, max(0.0, (self._heap[0][0] - now) / 1000))

    def due(self, now: int) -> Iterator[str]:
        """The ids due by ``now``, each popped as it is yielded (one may come more than once)."""
        while self._heap and self._heap[0][0] <= now:
            yield heapq.heappop(self._heap)[1]

    def sent(self, command_id: str, now: int, *, backoff: bool) -> None:
        """``command_id`` was sent at ``now``; ``backoff``: because none was taken in time (the
        next wait doubles), else for an event (the wait starts again from the shortest)."""
        wait = RESEND_MIN_MS
        if backoff:
            wait = min(2 * self._resend_wait.get(command_id, RESEND_MIN_MS), RESEND_MAX_MS)
        self._resend_wait[command_id] = wait
        self._last_sent[command_id] = now

    def resend_at(self, record: CommandRecord) -> int:
        """When a sent command not yet taken goes out again."""
        last = self._last_sent.get(record.id, record.sent_at or record.created_at)
        return last + self._resend_wait.get(record.id, RESEND_MIN_MS)

    def forget(self, command_id: str) -> None:
        """The command is no longer followed (its heap entries are skipped when they come)."""
        self._last_sent.pop(command_id, None)
        self._resend_wait.pop(command_id, None)
