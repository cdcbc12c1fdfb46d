"""The singleton lease: which hub process runs the work that must run once (docs/scaling.md).

On PostgreSQL the lease is a session-level advisory lock (``pg_try_advisory_lock``) held on a
connection of its own, outside the pool: the database releases it the moment that session
ends, so a holder killed with ``kill -9`` (its socket closed by the kernel) gives it up at once
and another process takes it at its next try, :data:`RETRY_S` later. A holder checks its
connection every :data:`RETRY_S` too; a connection that fails or does not answer within
:data:`PING_TIMEOUT_S` means the lease is lost (the session may be gone, and with it the lock):
the work stops before another process can have started it twice for long. No row, no expiry,
no clock shared between machines: the database's own session is the lease.

On SQLite only one hub may use the database, so it always holds the lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from collections.abc import Awaitable, Callable
from typing import Any, Final

import asyncpg
from sqlalchemy.engine import URL

from fieldhub.logthrottle import LogThrottle, held_back

log = logging.getLogger(__name__)

RETRY_S: Final = 2.0
"""How often a process without the lease tries to take it, and a holder checks it still has
it: the longest a dead holder's work waits for another process (plus the database noticing)."""
PING_TIMEOUT_S: Final = 5.0
"""A holder whose lease connection does not answer within this gives the lease up."""
_CONNECT_TIMEOUT_S: Final = 10.0

Changed = Callable[[bool], Awaitable[None]]
"""Told ``True`` when this process gains the lease, ``False`` when it loses it."""


def lock_key(name: str) -> int:
    """The advisory lock's 64-bit key for the lease called ``name`` (stable across versions:
    processes of two versions during an upgrade must contend for the same lock)."""
    return zlib.crc32(f"fieldhub:{name}".encode()) | (0x46480000 << 32)  # "FH" in the high bits


class Lease:
    """One named lease of this process.

    Args:
        url: the hub's database URL (any driver name; PostgreSQL or SQLite).
        name: which lease (every process of one deployment must use the same).
        retry_s: seconds between tries and checks (tests shorten it).
    """

    def __init__(self, url: URL, name: str = "singletons", *, retry_s: float = RETRY_S) -> None:
        self._url = url
        self.name = name
        self._key = lock_key(name)
        self._retry_s = retry_s
        self._conn: Any = None  # asyncpg.Connection holding the lock
        self._throttle = LogThrottle()
        self.held = url.get_backend_name() == "sqlite"
        """Whether this process holds the lease now."""
        self.gained = 0
        """How many times this process took the lease (metrics, tests)."""

    @property
    def shared(self) -> bool:
        """Whether other processes may contend for it (PostgreSQL)."""
        return self._url.get_backend_name() != "sqlite"

    async def run(self, changed: Changed) -> None:
        """Take the lease when free and keep it, telling ``changed`` of every gain and loss,
        until cancelled (which gives it back)."""
        if not self.shared:
            self.gained += 1
            await changed(True)
            await asyncio.Future[None]()  # held for good; cancelled when the hub stops
        try:
            while True:
                was = self.held
                self.held = await self._check()
                if self.held != was:
                    if self.held:
                        self.gained += 1
                    log.info("lease %s %s", self.name, "taken" if self.held else "lost")
                    await changed(self.held)
                await asyncio.sleep(self._retry_s)
        finally:
            await self._close()
            self.held = False

    async def _check(self) -> bool:
        """Whether this process holds the lease after one try (taking it if free)."""
        try:
            if self._conn is None:
                self._conn = await asyncpg.connect(self._dsn(), timeout=_CONNECT_TIMEOUT_S)
            async with asyncio.timeout(PING_TIMEOUT_S):
                if self.held:
                    await self._conn.fetchval("SELECT 1")
                    return True
                taken = bool(
                    await self._conn.fetchval("SELECT pg_try_advisory_lock($1)", self._key)
                )
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            held = self._throttle.due("lease")
            if held is not None:
                log.warning(
                    "lease %s: the database is unreachable: %s%s", self.name, exc, held_back(held)
                )
            await self._close()
            return False
        return taken

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # it may be dead already: nothing to give back
                conn.terminate()

    def _dsn(self) -> str:
        return self._url.set(drivername="postgresql").render_as_string(hide_password=False)
