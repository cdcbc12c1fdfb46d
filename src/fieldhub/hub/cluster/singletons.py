"""Work that must run in one hub process at a time, started and stopped with the lease.

The alarm sweeper, retention and media sweeps: each is a loop that would do its job twice
(two trims racing over the same rows) if every hub process ran it. The hub names each here;
:class:`Singletons` starts them all when its process gains the lease (``lease.py``) and
cancels them when it loses it, so the work moves to the process that holds the lease next,
within seconds of its holder's death. A loop that does part of its work everywhere asks
:meth:`Singletons.here` before the part that must run once (the presence clock, before its
``stale`` sweep: two sweeps would record every ``stale`` twice).

A loop is cancelled only while its ``guard`` lock is free (the lock it holds around its writes):
a write cut off by cancellation would leave its pooled connection checked out (the same rule
as the hub's stop, ``Hub._stop_tasks``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

from fieldhub.hub.cluster.lease import Lease

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Work:
    name: str
    start: Callable[[], Coroutine[Any, Any, None]]
    guard: asyncio.Lock | None


class Singletons:
    """The singleton work of one hub process, run while ``lease`` is held."""

    def __init__(self, lease: Lease) -> None:
        self.lease = lease
        self._work: list[_Work] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = False

    def add(
        self,
        name: str,
        start: Callable[[], Coroutine[Any, Any, None]],
        *,
        guard: asyncio.Lock | None = None,
    ) -> None:
        """Run ``start()`` (a loop until cancelled) while this process holds the lease."""
        self._work.append(_Work(name, start, guard))

    def here(self) -> bool:
        """Whether the singleton work runs in this process now (for a loop that does part of
        its work everywhere: the presence clock)."""
        return self.lease.held

    async def run(self) -> None:
        """Follow the lease until cancelled (which gives it back); call :meth:`stop` first."""
        await self.lease.run(self._changed)

    async def stop(self) -> None:
        """Stop the work for good (the hub stops), each loop outside its guard; the lease goes
        when :meth:`run` is cancelled, after this: never work without the lease."""
        self._stopped = True
        await self._stop()

    async def _changed(self, held: bool) -> None:
        if held and not self._stopped:
            self._tasks = [asyncio.create_task(work.start(), name=work.name) for work in self._work]
            log.info("singleton work runs here: %s", ", ".join(w.name for w in self._work))
        else:
            await self._stop()

    async def _stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        if not tasks:
            return
        try:
            async with AsyncExitStack() as guards:
                for lock in {id(w.guard): w.guard for w in self._work if w.guard}.values():
                    await guards.enter_async_context(lock)
                for task in tasks:
                    task.cancel()
                for task in tasks:
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        finally:  # cancelled itself while waiting for a guard (the hub stops): no loop left
            for task in tasks:
                task.cancel()
