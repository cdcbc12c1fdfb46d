"""``hub backup`` / ``hub restore``: a consistent snapshot of registry, state and history.

A backup is a zip of JSON-lines files, one per table, read in one database snapshot (a read
transaction in SQLite's WAL mode, REPEATABLE READ on PostgreSQL), so it is consistent while
the hub keeps ingesting. It does not depend on the engine: a SQLite backup restores into
PostgreSQL, which is also the way to move a growing installation.

Folders of files go along (``folders``: the media objects and their thumbnails), under their
name in the archive, stored as they are (pictures do not compress). They are copied after the
tables: objects are immutable and named by their content, so a file is either the one the
snapshot's rows name or one they do not know; only a file removed by retention meanwhile can
be missing. Restoring writes them back privately (0600 in 0700 folders), and refuses member
names that would leave their folder.
"""

from __future__ import annotations

import os
import re
import shutil
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from sqlalchemy import Table, func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from fieldhub.clock import now_ms
from fieldhub.hub.store.database import SNAPSHOT, migrate, write_transaction
from fieldhub.hub.store.schema import ALL_TABLES
from fieldhub.private_files import PRIVATE_FILE_MODE, private_dir, private_file

FORMAT = "fieldhub-backup"
FORMAT_VERSION = 1
_CHUNK = 10_000
_SAFE_PART = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")


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


async def backup(
    engine: AsyncEngine,
    path: Path,
    folders: Mapping[str, Path] | None = None,
    elsewhere: Mapping[str, str] | None = None,
) -> BackupSummary:
    """Write a snapshot of every table to ``path`` (replaced only once complete), with the
    files of ``folders`` (archive name → folder). ``elsewhere`` names what the tables refer to
    but the archive does not hold (``media/objects`` → an S3 bucket), so that whoever
    restores it knows where those files are (the manifest's ``elsewhere``)."""
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
                files = {name: _add_folder(archive, name, f) for name, f in (folders or {}).items()}
                manifest = {
                    "format": FORMAT,
                    "version": FORMAT_VERSION,
                    "schema": schema,
                    "created_at": now_ms(),
                    "rows": rows,
                    "columns": {str(t.name): [str(c.name) for c in t.columns] for t in ALL_TABLES},
                    "folders": files,
                    "elsewhere": dict(elsewhere or {}),
                }
                archive.writestr("manifest.json", encoder.encode(manifest))
    partial.replace(path)
    return BackupSummary(path, schema, rows)


def _add_folder(archive: zipfile.ZipFile, name: str, folder: Path) -> int:
    """Add the files below ``folder`` as ``name/...`` (temporary dot-files left out)."""
    count = 0
    if not folder.is_dir():
        return 0
    for file in sorted(folder.rglob("*")):
        relative = file.relative_to(folder)
        if file.is_file() and not any(part.startswith(".") for part in relative.parts):
            archive.write(file, f"{name}/{relative.as_posix()}", zipfile.ZIP_STORED)
            count += 1
    return count


def _restore_folders(archive: zipfile.ZipFile, folders: Mapping[str, Path], path: Path) -> None:
    """Write the members of each folder back below its place; names are checked first."""
    for member in archive.infolist():
        prefix = next((n for n in folders if member.filename.startswith(n + "/")), None)
        if prefix is None or member.is_dir():
            continue
        parts = member.filename[len(prefix) + 1 :].split("/")
        if not all(_SAFE_PART.match(part) for part in parts):
            raise BackupError(f"{path}: member {member.filename!r} is not a safe file name")
        folder = folders[prefix]
        target = folder.joinpath(*parts)
        for parent in reversed(target.relative_to(folder).parents):
            private_dir(folder / parent)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
        with archive.open(member) as source, open(fd, "wb") as sink:
            shutil.copyfileobj(source, sink)


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


async def restore(
    engine: AsyncEngine, path: Path, folders: Mapping[str, Path] | None = None
) -> BackupSummary:
    """Load the backup at ``path`` into an empty database (created and migrated if needed),
    and its files into ``folders`` (archive name → folder).

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
            _restore_folders(archive, folders or {}, path)
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
