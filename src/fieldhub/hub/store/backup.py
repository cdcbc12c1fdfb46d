"""``hub backup`` / ``hub restore``: a consistent snapshot of registry, state and history.

A backup is a zip of JSON-lines files, one per table, read in one database snapshot (a read
transaction in SQLite's WAL mode, REPEATABLE READ on PostgreSQL), so it is consistent while
the hub keeps ingesting. It does not depend on the engine: a SQLite backup restores into
PostgreSQL, which is also the way to move a growing installation.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from sqlalchemy import Table, func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from fieldhub.clock import now_ms
from fieldhub.hub.store.database import SNAPSHOT, migrate, write_transaction
from fieldhub.hub.store.schema import ALL_TABLES
from fieldhub.private_files import private_file

FORMAT = "fieldhub-backup"
FORMAT_VERSION = 1
_CHUNK = 10_000


class BackupError(Exception):
    """A backup cannot be written or restored; the text says why."""


@dataclass(frozen=True, slots=True)
class BackupSummary:
    """What a backup holds."""

    path: Path
    schema: str
    rows: dict[str, int]


async def _schema_revision(conn: AsyncConnection) -> str:
    result = await conn.execute(text("SELECT version_num FROM alembic_version"))
    return str(result.scalar_one())


async def backup(engine: AsyncEngine, path: Path) -> BackupSummary:
    """Write a snapshot of every table to ``path`` (replaced only once complete)."""
    encoder = msgspec.json.Encoder()
    partial = path.with_name(path.name + ".partial")
    rows: dict[str, int] = {}
    options: dict[str, Any] = dict(SNAPSHOT)
    if engine.dialect.name == "postgresql":
        options["isolation_level"] = "REPEATABLE READ"
    async with engine.connect() as plain:
        conn = await plain.execution_options(**options)
        async with conn.begin():
            schema = await _schema_revision(conn)
            private_file(partial)  # the whole database: users, password hashes, device keys
            with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
                for table in ALL_TABLES:
                    count = 0
                    with archive.open(f"{table.name}.jsonl", "w", force_zip64=True) as member:
                        result = await conn.stream(select(table))
                        async for chunk in result.partitions(_CHUNK):
                            member.write(b"".join(encoder.encode(list(r)) + b"\n" for r in chunk))
                            count += len(chunk)
                    rows[str(table.name)] = count
                manifest = {
                    "format": FORMAT,
                    "version": FORMAT_VERSION,
                    "schema": schema,
                    "created_at": now_ms(),
                    "rows": rows,
                    "columns": {str(t.name): [str(c.name) for c in t.columns] for t in ALL_TABLES},
                }
                archive.writestr("manifest.json", encoder.encode(manifest))
    partial.replace(path)
    return BackupSummary(path, schema, rows)


def _read_manifest(archive: zipfile.ZipFile, path: Path) -> dict[str, Any]:
    try:
        manifest: dict[str, Any] = msgspec.json.decode(archive.read("manifest.json"))
    except (KeyError, msgspec.DecodeError):
        raise BackupError(f"{path} is not a fieldhub backup (no readable manifest)") from None
    if manifest.get("format") != FORMAT or manifest.get("version") != FORMAT_VERSION:
        raise BackupError(f"{path} is not a fieldhub backup of format version {FORMAT_VERSION}")
    return manifest


def _lines(archive: zipfile.ZipFile, name: str) -> Iterator[list[list[Any]]]:
    decoder = msgspec.json.Decoder(list[Any])
    chunk: list[list[Any]] = []
    with archive.open(name) as member:
        for line in member:
            chunk.append(decoder.decode(line))
            if len(chunk) >= _CHUNK:
                yield chunk
                chunk = []
    if chunk:
        yield chunk


async def restore(engine: AsyncEngine, path: Path) -> BackupSummary:
    """Load the backup at ``path`` into an empty database (created and migrated if needed).

    Raises:
        BackupError: not a backup, a different schema, or the database is not empty.
    """
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise BackupError(f"cannot read backup {path}: {exc}") from None
    with archive:
        manifest = _read_manifest(archive, path)
        await migrate(engine)
        async with write_transaction(engine) as conn:
            schema = await _schema_revision(conn)
            if manifest["schema"] != schema:
                raise BackupError(
                    f"backup has schema {manifest['schema']}, this hub {schema}: restore it "
                    "with the fieldhub version that wrote it"
                )
            for table in ALL_TABLES:
                if (await conn.execute(select(func.count()).select_from(table))).scalar_one():
                    raise BackupError(
                        f"the database is not empty (table {table.name} has rows): restore "
                        "into a new data folder or database"
                    )
            for table in ALL_TABLES:
                await _load_table(conn, archive, table, manifest["columns"][table.name])
            if engine.dialect.name == "postgresql":
                for table in ALL_TABLES:
                    if "id" in table.c and table.c.id.autoincrement is True:
                        await conn.execute(
                            text(
                                f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                                f"COALESCE((SELECT max(id) FROM {table.name}), 0) + 1, false)"
                            )
                        )
    return BackupSummary(path, schema, dict(manifest["rows"]))


async def _load_table(
    conn: AsyncConnection, archive: zipfile.ZipFile, table: Table, columns: list[str]
) -> None:
    missing = [c.name for c in table.columns if c.name not in columns]
    if missing:
        raise BackupError(f"backup table {table.name} lacks columns {missing}")
    for chunk in _lines(archive, f"{table.name}.jsonl"):
        await conn.execute(table.insert(), [dict(zip(columns, row, strict=True)) for row in chunk])
