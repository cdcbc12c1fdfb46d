"""When API tokens were last used: noted by requests, written in the background.

``last_used_at`` is a hint for people ("used 3 minutes ago" in the token list), worth at most
one write a minute per token. It used to be written inside the request that found it due: that
request then waited for the database's write lock behind ingest, and when the write failed (a
full disk) the request failed with it, a 500 or a reset, so health, metrics and commands went
blind whenever a token's time was due. Now a request only notes the time in memory; a
background task writes every time noted since its last round in one transaction, every
:data:`FLUSH_EVERY_S`; a round that fails keeps its times for the next one. Its failure goes to
the hub's storage health like any write's (a full disk is logged there, once); any other
cause gets one throttled line here. Never a request's failure.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from sqlalchemy.exc import SQLAlchemyError

from fieldhub.hub.store.health import StorageHealth
from fieldhub.hub.store.users import UserStore
from fieldhub.logthrottle import LogThrottle, held_back

log = logging.getLogger(__name__)

FLUSH_EVERY_S: Final = 5.0
"""How often noted times are written (the hint is a minute coarse anyway)."""


class TokenUse:
    """API token use noted by requests, written in rounds by :meth:`run`.

    Args:
        users: where the times are stored.
        storage: the hub's storage health, told of every round's outcome.
        flush_every_s: the interval between rounds.
    """

    def __init__(
        self,
        users: UserStore,
        *,
        storage: StorageHealth | None = None,
        flush_every_s: float = FLUSH_EVERY_S,
    ) -> None:
        self._users = users
        self._storage = storage or StorageHealth()
        self._every = flush_every_s
        # Token id → newest time noted. Bounded by the tokens that exist: only a token found
        # valid is noted, and each once however often it is used.
        self._due: dict[int, int] = {}
        self._throttle = LogThrottle()
        self.writing = asyncio.Lock()
        """Held while a round writes (the hub stops this task only between rounds)."""

    def note(self, token_id: int, when: int) -> None:
        """Remember that ``token_id`` was used at ``when`` (epoch ms): no I/O, never fails."""
        if when > self._due.get(token_id, -1):
            self._due[token_id] = when

    async def run(self) -> None:
        """Write what was noted, every ``flush_every_s``, until cancelled."""
        while True:
            await asyncio.sleep(self._every)
            await self.flush()

    async def flush(self) -> None:
        """Write every time noted so far; keep them for the next round if that fails."""
        async with self.writing:
            due, self._due = self._due, {}
            if not due:
                return
            try:
                await self._users.touch_tokens(due)
            except (SQLAlchemyError, OSError) as exc:
                for token_id, when in due.items():
                    self.note(token_id, when)
                if self._storage.failed(exc) is not None:
                    return  # an outage: logged by the storage health
                held = self._throttle.due("touch")
                if held is not None:
                    log.warning(
                        "API token use not recorded (%s); kept for the next try%s",
                        exc,
                        held_back(held),
                    )
                return
            self._storage.succeeded()
