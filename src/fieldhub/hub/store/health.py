"""Whether the store can be written: outages (a full disk, an I/O error, a lost database
server) told apart from a write's own faults, reported once, and waited out.

On a full disk the hub's writes fail one after another. Each failure
used to be logged with its traceback (two, chained), at message rate, onto the full disk,
while no line said "disk full" and ``/api/health`` answered ``ok``. So the writers hand every
outcome to one :class:`StorageHealth`: it names the cause, logs the first failure of an
outage with its traceback, later ones as one throttled line, and the recovery (once writes
succeed and none failed for :data:`SETTLE_S`); health reports the outage; and writers that
hold their work back (ingest keeps its batch) ask it how long to wait before the next try,
short enough that writes resume within seconds once space is freed.
"""

from __future__ import annotations

import errno
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from fieldhub.clock import now_ms
from fieldhub.logthrottle import LogThrottle, held_back

log = logging.getLogger(__name__)

FIRST_RETRY_S: Final = 0.1
MAX_RETRY_S: Final = 2.0
"""The longest wait between tries while the store is out: how late writes resume after it is
back (a try that fails costs one statement; a full disk is not freed in milliseconds)."""
SETTLE_S: Final = 2 * MAX_RETRY_S
"""An outage is over once a write succeeded and none failed for this long. A full disk does
not fail every write: a small one (a command's state) can fit into space the store's files
have already (the WAL keeps its size) while a batch of data cannot. Were one success the end,
every small write between two tries of a held batch would end the outage and the next try
start a new one, with its traceback; longer than the longest wait between two tries."""
_OUTAGE: Final = "storage"  # the one throttle key: one line per interval, whatever the cause

_SQLITE_CAUSES: Final = {
    "SQLITE_FULL": "disk full",
    "SQLITE_IOERR": "I/O error",
    "SQLITE_CANTOPEN": "cannot open the database file",
    "SQLITE_READONLY": "database is read-only",
    "SQLITE_CORRUPT": "database file is corrupt",
    "SQLITE_NOTADB": "file is not a database",
}
_OS_CAUSES: Final = {
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk quota exceeded",
    errno.EIO: "I/O error",
    errno.EROFS: "read-only file system",
}
_PG_CAUSES: Final = {  # SQLSTATE class (two characters) or code → what it means here
    "53100": "disk full",
    "53": "database server out of resources",
    "08": "database connection lost",
    "57P": "database server shutting down",
    "58": "database server I/O error",
}


def storage_problem(exc: BaseException) -> str | None:
    """What keeps the store from being written, e.g. ``disk full (SQLITE_FULL)``; None when
    ``exc`` is a fault of the write itself (a constraint, a bug), which retrying cannot fix."""
    for cause in _causes(exc):
        if isinstance(cause, sqlite3.Error):
            name = getattr(cause, "sqlite_errorname", "") or ""
            for prefix, meaning in _SQLITE_CAUSES.items():
                if name.startswith(prefix):
                    return f"{meaning} ({name})"
        sqlstate = getattr(cause, "sqlstate", None)  # asyncpg's errors
        if isinstance(sqlstate, str):
            for prefix in sorted(_PG_CAUSES, key=len, reverse=True):
                if sqlstate.startswith(prefix):
                    return f"{_PG_CAUSES[prefix]} (PostgreSQL {sqlstate})"
        if isinstance(cause, OSError) and cause.errno is not None:
            code = errno.errorcode.get(cause.errno, str(cause.errno))
            return f"{_OS_CAUSES.get(cause.errno, cause.strerror or 'OS error')} ({code})"
    return None


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, the driver's error SQLAlchemy wraps (``.orig``), and what they were raised from."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        cause = pending.pop(0)
        if cause is None or id(cause) in seen:
            continue
        seen.add(id(cause))
        yield cause
        orig = getattr(cause, "orig", None)
        pending += [orig if isinstance(orig, BaseException) else None]
        pending += [cause.__cause__, cause.__context__]


@dataclass(frozen=True, slots=True)
class Outage:
    """The store cannot be written since ``since`` (epoch ms) because of ``problem``."""

    problem: str
    since: int
    failures: int

    def describe(self) -> str:
        """One line for health and logs: ``disk full (SQLITE_FULL) since 2026-…Z``."""
        when = datetime.fromtimestamp(self.since / 1000, UTC).isoformat(timespec="seconds")
        return f"{self.problem} since {when.replace('+00:00', 'Z')}"


class StorageHealth:
    """The store's state as its writers find it; shared by every writer of one hub.

    Thread-safe: the SQLite writer thread reports, the event loop reads.

    Args:
        log_every_s: while an outage lasts, at most one line per this interval.
        settle_s: an outage is over once a write succeeded and none failed for this long
            (:data:`SETTLE_S`).
    """

    def __init__(self, *, log_every_s: float = 60.0, settle_s: float | None = None) -> None:
        self._lock = threading.Lock()
        self._outage: Outage | None = None
        self._started = 0.0  # monotonic start of the outage
        self._failed_at = 0.0  # monotonic time of its last failure
        self._recovered_at: float | None = None  # first success since then
        self._settle_s = SETTLE_S if settle_s is None else settle_s
        self._log_every_s = log_every_s
        self._throttle = LogThrottle(log_every_s)

    @property
    def outage(self) -> Outage | None:
        """The current outage, or None while writes succeed."""
        if self._outage is None:  # the common case, without the lock
            return None
        with self._lock:
            ended = self._settle()
        _log_end(ended)
        return self._outage

    def failed(self, exc: BaseException) -> str | None:
        """Report a failed write; return its storage problem, or None when ``exc`` is the
        write's own fault (not an outage: nothing is recorded, the caller reports it)."""
        problem = storage_problem(exc)
        if problem is None:
            return None
        with self._lock:
            ended = self._settle()
            outage = self._outage
            self._failed_at, self._recovered_at = time.monotonic(), None
            if outage is None:
                self._outage = Outage(problem, now_ms(), 1)
                self._started = self._failed_at
                self._throttle = LogThrottle(self._log_every_s)  # counted from this line
                self._throttle.due(_OUTAGE)
                held = None
            else:
                self._outage = Outage(problem, outage.since, outage.failures + 1)
                held = self._throttle.due(_OUTAGE)
            described = self._outage.describe()
        _log_end(ended)
        if outage is None:  # the traceback once per outage, for the cause's detail
            log.error(
                "storage: %s: writes fail; held writes are retried until it is fixed",
                problem,
                exc_info=exc,
            )
        elif held is not None:
            log.error("storage: still %s: writes fail%s", described, held_back(held))
        return problem

    def succeeded(self) -> None:
        """Report a committed write (the outage is over once none failed for a while)."""
        if self._outage is None:  # the common case, without the lock
            return
        with self._lock:
            if self._recovered_at is None:
                self._recovered_at = time.monotonic()
            ended = self._settle()
        _log_end(ended)

    def retry_in_s(self) -> float:
        """How long a writer holding work back waits before its next try: doubling from
        :data:`FIRST_RETRY_S` per failure up to :data:`MAX_RETRY_S`; 0 without an outage."""
        outage = self._outage
        if outage is None:
            return 0.0
        return min(MAX_RETRY_S, FIRST_RETRY_S * (1 << min(outage.failures - 1, 16)))

    def _settle(self) -> tuple[Outage, float] | None:
        """End the outage if writes succeed and none failed for ``settle_s``: the outage and
        how long it lasted (until the first success), to be logged outside the lock."""
        outage, recovered_at = self._outage, self._recovered_at
        if outage is None or recovered_at is None:
            return None
        if time.monotonic() - self._failed_at < self._settle_s:
            return None
        self._outage = None
        return outage, recovered_at - self._started


def _log_end(ended: tuple[Outage, float] | None) -> None:
    if ended is not None:
        outage, lasted = ended
        log.warning(
            "storage: writes succeed again after %.1f s of %s (%d failed writes)",
            lasted,
            outage.problem,
            outage.failures,
        )
