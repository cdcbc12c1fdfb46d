"""Opening the database: URL normalisation, SQLite tuning, migrations to the newest schema."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, Final

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import event, func, select
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from fieldhub.private_files import private_file

_MIGRATIONS = Path(__file__).parent / "migrations"
_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}
_MIGRATION_LOCK: Final = 0x46480000_6D696772  # "FH" "migr": the advisory lock of migrations
_WRITES: Final = "fieldhub_writes"
"""Execution option that marks a connection whose transaction will write (see
:func:`write_transaction`)."""
SNAPSHOT: Final = {"fieldhub_snapshot": True}
"""Execution options for reads that must all see one state of the database (a backup)."""


class DatabaseUrlError(ValueError):
    """The database URL names an engine fieldhub does not support."""


def normalize_url(url: str) -> str:
    """Give ``url`` the async driver fieldhub uses (``sqlite://`` → ``sqlite+aiosqlite://``).

    Raises:
        DatabaseUrlError: the URL is neither SQLite nor PostgreSQL.
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend not in _DRIVERS:
        raise DatabaseUrlError(
            f"database URL {parsed.render_as_string(hide_password=True)!r}: only sqlite and "
            "postgresql are supported"
        )
    return parsed.set(drivername=_DRIVERS[backend]).render_as_string(hide_password=False)


def sqlite_url(path: Path) -> str:
    """The URL of the SQLite file at ``path``."""
    return f"sqlite+aiosqlite:///{path}"


BUSY_TIMEOUT_MS = 10_000
"""How long an SQLite connection waits for a lock held by another before it gives up."""


def _tune_sqlite(dbapi_connection: Any, _record: Any) -> None:
    # BEGIN is ours to send (see _begin_sqlite), not the driver's guess.
    dbapi_connection.isolation_level = None
    # WAL lets API readers run while ingest writes; NORMAL sync is durable across process
    # crashes (the WAL is fsynced at checkpoints), which is the failure the storage ack covers.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA cache_size=-65536")  # 64 MiB page cache
    cursor.close()


def _begin_sqlite(connection: Connection) -> None:
    # A deferred transaction that reads and then writes cannot wait for the write lock: if
    # another connection committed since its read, SQLite answers "database is locked" at
    # once, busy timeout or not (its snapshot is stale). Writers take the lock up front.
    # Reads run without a transaction (each statement sees the latest commit), except those
    # that asked for one snapshot: a BEGIN and its end cost two of a read's eight trips to
    # aiosqlite's thread, and most reads are one statement.
    options = connection.get_execution_options()
    if options.get(_WRITES):
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    elif options.get("fieldhub_snapshot"):
        connection.exec_driver_sql("BEGIN")


def write_transaction(engine: AsyncEngine) -> AbstractAsyncContextManager[AsyncConnection]:
    """A transaction that writes: committed on success, rolled back on error.

    Use it instead of ``engine.begin()``. On SQLite it takes the write lock when it begins,
    so a transaction that reads before it writes waits for other writers (up to the busy
    timeout) instead of failing because one committed in between. Readers keep using
    ``engine.connect()`` and never wait for writers (WAL). On PostgreSQL this is
    ``engine.begin()``.
    """
    return engine.execution_options(**{_WRITES: True}).begin()


def _private_sqlite(
    _dialect: Any, _record: Any, cargs: list[Any], _cparams: dict[str, Any]
) -> None:
    """Before SQLite opens the database file: make it private (0600) if it is a file. SQLite
    gives the ``-wal`` and ``-shm`` files it creates the database file's permissions."""
    name = str(cargs[0]) if cargs else ""
    if name and name != ":memory:" and not name.startswith("file:"):
        path = Path(name)
        if path.parent.is_dir():  # else SQLite says why it cannot open it
            private_file(path)


def create_engine(url: str) -> AsyncEngine:
    """An async engine for ``url`` (normalised), tuned for fieldhub's workload."""
    url = normalize_url(url)
    if url.startswith("sqlite"):
        engine = create_async_engine(url)
        event.listen(engine.sync_engine, "do_connect", _private_sqlite)
        event.listen(engine.sync_engine, "connect", _tune_sqlite)
        event.listen(engine.sync_engine, "begin", _begin_sqlite)
        return engine
    return create_async_engine(url, pool_size=8, max_overflow=4)


def sync_sqlite_engine(url: str) -> Engine:
    """A synchronous engine (the standard ``sqlite3`` driver) on the SQLite file of ``url``,
    tuned as :func:`create_engine`'s, whose transactions all write (``BEGIN IMMEDIATE``): the
    hub's writer thread (``store/writes.py``)."""
    parsed = make_url(url).set(drivername="sqlite")
    engine = create_sync_engine(parsed)
    event.listen(engine, "do_connect", _private_sqlite)
    event.listen(engine, "connect", _tune_sqlite)
    event.listen(engine, "connect", _no_autocheckpoint)
    event.listen(engine, "begin", _begin_sqlite)
    return engine.execution_options(**{_WRITES: True})


def _no_autocheckpoint(dbapi_connection: Any, _record: Any) -> None:
    # The commit that crosses the WAL's checkpoint size copies the WAL into the database and
    # fsyncs it before it returns: the writer thread (and every write queued behind it) would
    # stall for that. Its checkpoints run in a thread of their own (store/writes.py).
    dbapi_connection.execute("PRAGMA wal_autocheckpoint=0")
    # Checkpoints a second apart let the WAL grow further than the default 4 MB between them;
    # once it has been copied, it is cut back to this size instead of keeping its largest.
    dbapi_connection.execute("PRAGMA journal_size_limit=67108864")


class SchemaTooNew(RuntimeError):
    """The database was migrated by a newer fieldhub; this one refuses to touch it."""


def _upgrade(connection: Connection, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.attributes["connection"] = connection
    script = ScriptDirectory.from_config(config)
    known = {migration.revision for migration in script.walk_revisions()}
    unknown = set(MigrationContext.configure(connection).get_current_heads()) - known
    if unknown:
        raise SchemaTooNew(
            f"the database's schema is at revision {', '.join(sorted(unknown))}, which this "
            f"fieldhub does not know (it knows up to {script.get_current_head()}): a newer "
            "fieldhub upgraded it. Run that version again, or restore a backup taken before "
            "the upgrade into a new data folder or database (fieldhub hub restore)"
        )
    command.upgrade(config, revision)


async def migrate(engine: AsyncEngine, revision: str = "head") -> None:
    """Bring the schema to ``revision``, the newest migration by default (idempotent).

    Raises:
        SchemaTooNew: a newer fieldhub migrated the database: going back is refused, since
            this version's code would misread a schema it does not know.
    """
    async with write_transaction(engine) as connection:
        if engine.url.get_backend_name() == "postgresql":
            # Hubs starting together on a new database (``hub --workers``): one migrates, the
            # others wait here for its commit, then find the schema current.
            await connection.execute(select(func.pg_advisory_xact_lock(_MIGRATION_LOCK)))
        await connection.run_sync(_upgrade, revision)
