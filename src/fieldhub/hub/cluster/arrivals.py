"""What another hub process committed, handed to this process's parts (``feed.py`` receives it).

Each part takes it as it takes this process's own commits, except what was recorded already:

- presence: the devices heard from are fresh, the changes are taken as they are (never
  recorded twice); the command service hears of them too (a device back online gets the
  commands that wait for it here);
- the directory: reported action catalogs, which command checks read;
- the live fan-out: frames for this process's WebSocket clients.

A device registered through another process may be in its commits before this process has
adopted it (its key sync runs once a second). Its row is read then, and since a notification
is sent after its commit, the row already holds what the batch says; the batch is handed
over again once the device is known, so nothing of it is lost to the race.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection

from sqlalchemy.exc import SQLAlchemyError

from fieldhub.hub.commands.service import CommandService
from fieldhub.hub.devices.directory import DeviceDirectory
from fieldhub.hub.devices.presence import PresenceTracker
from fieldhub.hub.ingest.batch import Batch
from fieldhub.hub.live.fanout import LiveHub
from fieldhub.logthrottle import LogThrottle, held_back

log = logging.getLogger(__name__)

Adopt = Callable[[Collection[str]], Awaitable[None]]
"""``DeviceLifecycle.adopt_ids``: announce devices another process registered."""


class Arrivals:
    """Hands other processes' commits to ``presence``, ``commands``, ``directory``, ``live``."""

    def __init__(
        self,
        presence: PresenceTracker,
        commands: CommandService,
        directory: DeviceDirectory,
        live: LiveHub,
        adopt: Adopt,
    ) -> None:
        self._presence = presence
        self._commands = commands
        self._directory = directory
        self._live = live
        self._adopt = adopt
        self._adopting: set[asyncio.Task[None]] = set()
        self._throttle = LogThrottle()

    def __call__(self, batch: Batch) -> None:
        self._presence.elsewhere(batch.seqs, batch.presence)
        for change in batch.presence:
            self._commands.on_presence(change)
        self._directory.committed(batch)
        self._live.committed(batch)
        named = {*batch.seqs, *(d for d, _ in batch.states), *(p.device_id for p in batch.presence)}
        unknown = {device_id for device_id in named if self._directory.get(device_id) is None}
        if unknown:
            task = asyncio.get_running_loop().create_task(
                self._adopted(unknown, batch), name="cluster-adopt"
            )
            self._adopting.add(task)
            task.add_done_callback(self._adopting.discard)

    async def _adopted(self, device_ids: set[str], batch: Batch) -> None:
        """Adopt the devices, then hand their part of ``batch`` over again."""
        try:
            await self._adopt(device_ids)
        except (SQLAlchemyError, OSError) as exc:  # the key sync adopts them within a second
            held = self._throttle.due("adopt")
            if held is not None:
                log.warning("cannot adopt devices of another hub: %s%s", exc, held_back(held))
            return
        self._presence.elsewhere(
            [d for d in batch.seqs if d in device_ids],
            [p for p in batch.presence if p.device_id in device_ids],
        )
        self._directory.committed(batch)
