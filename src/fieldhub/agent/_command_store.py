"""The record of commands this device has taken on, in SQLite, so none ever runs twice.

One table, ``command_log``, with a row per command id::

    id            the command's id (primary key)
    state         'running' (claimed, maybe executing) | 'done' (reply stored)
    boot          which agent process claimed it (random per process start)
    action        for people reading the file
    reply_to      hub instance that asked, to announce an interrupted command to it
    received_ms   when it was claimed
    keep_until_ms not deleted before this (see below)
    reply         the encoded Reply once done

A row is written and committed (``synchronous=FULL``: on disk, not just in the OS) *before*
the action starts. A ``running`` row whose ``boot`` is not this process's was interrupted by a
crash, a kill or a power cut: it is answered "interrupted, not retried" and never run again.

The table is bounded. A row may go once its command has expired (a redelivery is then refused
as expired anyway, without looking here) *and* it has been kept ``retain_ms`` (to answer
redeliveries of short-lived commands from memory); the margin ``skew_ms`` covers the device's
clock being set back a little. A table full of rows that may not go yet refuses new commands
(``StoreFull``) rather than forget one that could still be redelivered.

The connection is used from one thread only (``commands.py`` runs every call on its own
single-thread executor); the file may be shared with the outbox (no ``user_version`` is used
here), though a file of its own keeps the two fsync streams apart.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import msgspec

from fieldhub.private_files import private_dir, private_file
from fieldhub.protocol import Reply

__all__ = ["INTERRUPTED", "CommandLog", "StoreFull", "Stored"]

INTERRUPTED: Final = "interrupted, not retried"
"""The error of a command whose execution a crash or restart cut short."""

_PRUNE_EVERY: Final = 1000
"""Claims between two prunes of the log (besides the one a full log forces)."""
_REPLY = msgspec.json.Decoder(Reply)
_ENCODE = msgspec.json.Encoder().encode

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS command_log (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL CHECK (state IN ('running', 'done')),
    boot TEXT NOT NULL,
    action TEXT NOT NULL,
    reply_to TEXT NOT NULL,
    received_ms INTEGER NOT NULL,
    keep_until_ms INTEGER NOT NULL,
    reply BLOB
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS command_log_keep ON command_log (keep_until_ms);
"""


class StoreFull(RuntimeError):
    """Every row of the command log must still be kept; no new command can be taken on."""


@dataclass(frozen=True, slots=True)
class Stored:
    """What the log knows of a command id: its state, and its reply once there is one."""

    state: Literal["running", "done"]
    mine: bool
    """Claimed by this process (False: by an earlier run of the agent)."""
    reply: Reply | None


class CommandLog:
    """The command log in one SQLite file (blocking calls; see the module docstring).

    Args:
        path: the SQLite file (created with its folder if missing).
        max_rows: rows kept at most.
        retain_ms: how long a finished command is kept at least, to answer redeliveries.
        skew_ms: extra time a row is kept past its command's expiry.
    """

    def __init__(
        self,
        path: Path,
        *,
        max_rows: int = 100_000,
        retain_ms: int = 3_600_000,
        skew_ms: int = 600_000,
    ) -> None:
        if max_rows < 1:
            raise ValueError(f"max_rows must be at least 1, not {max_rows!r}.")
        self._max_rows = max_rows
        self._retain_ms = retain_ms
        self._skew_ms = skew_ms
        self._claims = 0
        # Random, like secrets.token_hex(8) (both read os.urandom), without importing
        # secrets: it imports hmac and so OpenSSL, 3.5 MB of the agent's RSS.
        self.boot = os.urandom(8).hex()
        private_dir(path.parent)
        self._db = sqlite3.connect(private_file(path), isolation_level=None)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.executescript(f"BEGIN; {_SCHEMA} COMMIT;")
            self._rows: int = self._db.execute("SELECT count(*) FROM command_log").fetchone()[0]
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        """Close the file (idempotent)."""
        self._db.close()

    @property
    def rows(self) -> int:
        """Rows in the log now."""
        return self._rows

    def lookup(self, command_id: str) -> Stored | None:
        """What the log holds for ``command_id``, or None if it was never taken on (or is
        long forgotten)."""
        row = self._db.execute(
            "SELECT state, boot, reply FROM command_log WHERE id = ?", (command_id,)
        ).fetchone()
        if row is None:
            return None
        state, boot, reply = row
        return Stored(state, boot == self.boot, None if reply is None else _REPLY.decode(reply))

    def claim(self, command_id: str, action: str, reply_to: str, now: int, expires: int) -> bool:
        """Record ``command_id`` as running, durably, before it runs. False when the id is
        already there (another delivery claimed it first).

        Raises:
            StoreFull: the log is full of rows that must still be kept.
            sqlite3.Error: the file cannot be written; the command must not run.
        """
        self._claims += 1
        if self._rows >= self._max_rows or self._claims % _PRUNE_EVERY == 0:
            self.prune(now)
            if self._rows >= self._max_rows:
                raise StoreFull(f"the command log holds {self._rows} commands still to be kept")
        keep_until = max(expires + self._skew_ms, now + self._retain_ms)
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO command_log "
            "(id, state, boot, action, reply_to, received_ms, keep_until_ms) "
            "VALUES (?, 'running', ?, ?, ?, ?, ?)",
            (command_id, self.boot, action, reply_to, now, keep_until),
        )
        self._rows += cursor.rowcount
        return cursor.rowcount == 1

    def finish(self, reply: Reply, now: int) -> None:
        """Store the reply of a command this process claimed; it is done."""
        self._db.execute(
            "UPDATE command_log SET state = 'done', reply = ?, "
            "keep_until_ms = max(keep_until_ms, ?) WHERE id = ?",
            (_ENCODE(reply), now + self._retain_ms, reply.id),
        )

    def interrupt(self, now: int, command_id: str | None = None) -> list[tuple[str, Reply]]:
        """Mark commands an earlier agent process left ``running`` as interrupted, storing
        that reply; all of them, or only ``command_id``. Returns ``(reply_to, reply)`` of
        each, for announcing."""
        query = "SELECT id, reply_to FROM command_log WHERE state = 'running' AND boot != ?"
        params: tuple[str, ...] = (self.boot,)
        if command_id is not None:
            query += " AND id = ?"
            params += (command_id,)
        marked = []
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for found_id, reply_to in self._db.execute(query, params).fetchall():
                reply = Reply(id=found_id, ok=False, ts=now, error=INTERRUPTED)
                self.finish(reply, now)
                marked.append((reply_to, reply))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return marked

    def prune(self, now: int) -> int:
        """Delete finished rows past their keeping time; returns how many went."""
        cursor = self._db.execute(
            "DELETE FROM command_log WHERE keep_until_ms < ? AND state = 'done'", (now,)
        )
        self._rows -= cursor.rowcount
        return cursor.rowcount
