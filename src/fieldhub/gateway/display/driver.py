"""One sink kept going: its blocking I/O on its own thread, its outages survived and counted.

A display is a cable that gets pulled. Whatever the sink (serial, I2C), the rule is the same
and lives here: a write that fails closes the sink and marks an outage (logged once, counted);
the sink is opened again with a growing back-off until it answers, and then shown the whole
screen, since what it showed before is unknown. Nothing of this ever raises into the gateway.

Each sink gets one worker thread, so a slow or hung device delays only itself, and its
open, write and close never overlap, even when the display is closed mid-write.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol, TypeVar

__all__ = ["Sink", "SinkDriver", "SinkStats"]

log = logging.getLogger(__name__)

T = TypeVar("T")

FIRST_RETRY_S = 0.25


class Sink(Protocol):
    """A display device, driven by blocking calls (on the driver's thread only)."""

    name: str
    width: int
    rows: int

    def open(self) -> None:
        """Reach the device and make it ready. Raises OSError when it is not there."""

    def show(self, lines: Sequence[str], previous: Sequence[str] | None) -> None:
        """Show ``lines`` (``rows`` lines of ``width`` characters); ``previous`` is what the
        device shows now (write only the difference), None when unknown (write all).
        Raises OSError when the device went away."""

    def close(self) -> None:
        """Let go of the device; never raises."""


@dataclass(slots=True)
class SinkStats:
    """What a sink went through, for the gateway's metrics."""

    writes: int = 0
    """Screens (whole or changed lines) written."""
    failures: int = 0
    """Attempts to open or write that failed."""
    outages: int = 0
    """Times the sink went away (each logged once)."""
    recoveries: int = 0
    """Times it came back."""


class SinkDriver:
    """Keeps one :class:`Sink` showing the newest screen (see the module doc)."""

    def __init__(self, sink: Sink, reconnect_max_s: float) -> None:
        self.sink = sink
        self.stats = SinkStats()
        self._reconnect_max_s = reconnect_max_s
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=f"display-{sink.name}")
        self._open = False
        self._shown: list[str] | None = None
        self._shown_whole_at = 0.0
        self._retry_at: float | None = None
        self._retry_delay = FIRST_RETRY_S
        self._down_since: float | None = None

    async def update(self, lines: list[str], redraw_s: float) -> None:
        """Show ``lines`` if they differ from what the sink shows, the whole screen if it is
        due again (``redraw_s``); during an outage, only when the next attempt is due."""
        now = time.monotonic()
        if self._retry_at is not None and now < self._retry_at:
            return
        whole = self._shown is None or now - self._shown_whole_at >= redraw_s
        if not whole and lines == self._shown:
            return
        previous = None if whole else self._shown
        try:
            await self._call(self._write, lines, previous)
        except OSError as exc:
            self._fail(exc)
            return
        self._shown = lines
        if previous is None:
            self._shown_whole_at = now
        self.stats.writes += 1
        if self._down_since is not None:
            self.stats.recoveries += 1
            log.info("display %s is back after %.1f s", self.sink.name, now - self._down_since)
        self._down_since, self._retry_at, self._retry_delay = None, None, FIRST_RETRY_S

    def due_in(self, redraw_s: float) -> float:
        """Seconds until this sink needs a write with no change: a retry or a redraw."""
        now = time.monotonic()
        if self._retry_at is not None:
            return max(0.0, self._retry_at - now)
        return max(0.0, self._shown_whole_at + redraw_s - now)

    async def close(self) -> None:
        """Close the sink after any write in flight, and end its thread."""
        try:
            await self._call(self._close)
        finally:
            self._thread.shutdown(wait=False)

    def _write(self, lines: list[str], previous: list[str] | None) -> None:
        if not self._open:
            self.sink.open()
            self._open = True
        self.sink.show(lines, previous)

    def _close(self) -> None:
        self._open = False
        self.sink.close()

    def _fail(self, exc: OSError) -> None:
        self.stats.failures += 1
        self._thread.submit(self._close)  # after the failed call, before the next attempt
        self._shown = None
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = now
            self.stats.outages += 1
            log.warning(
                "display %s is unavailable (%s); trying again every %g s at most",
                self.sink.name,
                exc,
                self._reconnect_max_s,
            )
        self._retry_at = now + self._retry_delay
        self._retry_delay = min(self._retry_delay * 2, self._reconnect_max_s)

    async def _call(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)
