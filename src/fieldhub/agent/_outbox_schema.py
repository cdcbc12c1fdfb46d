"""The outbox file's settings and one device's tables in it: shared by the agent's file of its
own (``_outbox_store.py``) and a gateway's file for all its children (``_outbox_file.py``)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Final

__all__ = ["SCHEMA_VERSION", "OutboxStoreError", "Tables", "create_tables", "set_up_file"]

SCHEMA_VERSION: Final = 1


class OutboxStoreError(RuntimeError):
    """The outbox file cannot be used as it is (another program's file, a newer schema)."""


@dataclass(frozen=True, slots=True)
class Tables:
    """Where one device's outbox lives in an open file: its reports and its figures. The
    names are made by this code, never taken from input: they go into SQL text."""

    db: sqlite3.Connection
    outbox: str = "outbox"
    meta: str = "meta"


def set_up_file(db: sqlite3.Connection) -> None:
    """The file's durability and size settings; its schema version checked, then set.

    Raises:
        OutboxStoreError: the file has a newer schema.
    """
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA journal_size_limit=4194304")
    # KiB. SQLite keeps its page cache full once a drain has filled it: after a drain of
    # 50,000 reports, SQLite's memory (both of the agent's files) was 1.2 MiB with a 1 MiB
    # cache, 0.4 MiB with this one, 0.25 MiB before the drain (measured, docs/benchmarks.md,
    # agent section). The outbox reads and writes the two ends of one table, and the kernel
    # caches the file anyway: the drain was as fast.
    db.execute("PRAGMA cache_size=-256")
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version not in (0, SCHEMA_VERSION):
        raise OutboxStoreError(
            f"the outbox file has schema version {version}; this agent knows "
            f"{SCHEMA_VERSION} (a newer agent wrote it?)"
        )
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def create_tables(db: sqlite3.Connection, tables: Tables) -> None:
    """One device's two tables, when missing."""
    db.executescript(
        f"""
        BEGIN;
        CREATE TABLE IF NOT EXISTS {tables.outbox} (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            kind INTEGER NOT NULL,
            seq INTEGER,
            body BLOB NOT NULL
        );
        CREATE INDEX IF NOT EXISTS {tables.outbox}_kind ON {tables.outbox} (kind, id);
        CREATE TABLE IF NOT EXISTS {tables.meta} (name TEXT PRIMARY KEY, value INTEGER NOT NULL)
            WITHOUT ROWID;
        COMMIT;
        """
    )
