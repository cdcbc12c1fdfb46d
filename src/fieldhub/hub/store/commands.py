"""Commands and command batches in the database.

The hub writes a command before it sends it (so the queue survives a restart) and writes its
later states behind (``save``, batched): a state lost in a crash is recovered when the hub
sends the unfinished command again and the device answers from its log.

A command request's audit entry is written in the command's own transaction: one write
transaction per request instead of two (on SQLite each one may wait for the write lock behind
an ingest commit; docs/benchmarks.md, commands).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.engine import Connection, Row
from sqlalchemy.ext.asyncio import AsyncEngine

from fieldhub.hub.errors import NotFound
from fieldhub.hub.store.schema import audit_log, command_batches, commands
from fieldhub.hub.store.writes import EngineWrites, Writes

Status = Literal[
    "queued",
    "sent",
    "acknowledged",
    "succeeded",
    "failed",
    "timed_out",
    "expired",
    "unsupported",
    "aborted",
]
OPEN: Final[frozenset[str]] = frozenset({"queued", "sent", "acknowledged"})
"""States in which a command may still reach its device or hear from it."""
FINISHED: Final[frozenset[str]] = frozenset(
    {"succeeded", "failed", "timed_out", "expired", "unsupported", "aborted"}
)
"""``unsupported``: a device of a group command that does not offer the action (or not with
these arguments), never sent; ``aborted``: a device of a paced group command not sent yet when
too many others failed."""
FAILURES: Final[frozenset[str]] = frozenset({"failed", "timed_out", "expired"})
"""What counts against a group command's ``abort_failure_ratio``."""

_STATE_COLUMNS: Final = (
    "status",
    "sent_at",
    "acknowledged_at",
    "finished_at",
    "deliveries",
    "result",
    "error",
)


class CommandNotFound(NotFound):
    """No command (or batch) with that id."""


@dataclass(slots=True, kw_only=True)
class CommandRecord:
    """One command to one device, with where it is in its life (mutable: the service moves it)."""

    id: str
    device_id: str
    batch_id: str | None
    hub: str
    action: str
    args: dict[str, Any]
    status: Status
    created_by: str
    created_at: int
    expires_at: int
    timeout_ms: int
    sent_at: int | None = None
    """When it was first sent (``deliveries`` counts every time)."""
    acknowledged_at: int | None = None
    """When the device took it (said so, or answered): ``timeout_ms`` counts from here."""
    finished_at: int | None = None
    deliveries: int = 0
    result: Any = None
    error: str = ""
    not_before: int | None = None
    """A paced group command is not sent before this epoch ms (None: at once)."""

    @property
    def finished(self) -> bool:
        """True once the command reached a final state (a late reply may still change it)."""
        return self.status in FINISHED

    @property
    def late(self) -> bool:
        """True when the device's outcome arrived after the hub had given up waiting: more
        than ``timeout_ms`` after the device took the command, or taken only after its TTL."""
        return (
            self.status in ("succeeded", "failed")
            and self.acknowledged_at is not None
            and self.finished_at is not None
            and (
                self.finished_at - self.acknowledged_at > self.timeout_ms
                or self.acknowledged_at > self.expires_at
            )
        )

    @classmethod
    def from_row(cls, row: Row[Any]) -> CommandRecord:
        """Build a record from a ``commands`` row."""
        return cls(**{column: row._mapping[column] for column in _ALL_COLUMNS})


_ALL_COLUMNS: Final = tuple(column.name for column in commands.columns)


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchRecord:
    """A group command: one action for many devices, each with its own command."""

    id: str
    action: str
    args: dict[str, Any]
    target: dict[str, Any]
    size: int
    created_by: str
    created_at: int
    per_second: float | None = None
    """Pace: devices sent to per second (None: all at once)."""
    abort_failure_ratio: float | None = None
    """The commands not sent yet are aborted once more than this share of the batch's devices
    that offer the action failed (None: never)."""
    command_ids: list[str] = field(default_factory=list)


class CommandStore:
    """Reads and writes ``commands`` and ``command_batches``.

    Args:
        engine: for reads.
        writes: where writes run (the hub's SQLite writer thread; by default transactions of
            ``engine``).
    """

    def __init__(self, engine: AsyncEngine, writes: Writes | None = None) -> None:
        self._engine = engine
        self._writes = writes or EngineWrites(engine)

    async def insert(
        self,
        records: list[CommandRecord],
        batch: BatchRecord | None = None,
        audit: Sequence[dict[str, Any]] = (),
    ) -> None:
        """Store new commands (and their batch, and the audit rows of the request, see
        ``audit_row``) in one transaction, ahead of queued bulk writes (a user waits)."""
        rows = [{column: getattr(r, column) for column in _ALL_COLUMNS} for r in records]

        def job(conn: Connection) -> None:
            if batch is not None:
                conn.execute(
                    insert(command_batches).values(
                        id=batch.id,
                        action=batch.action,
                        args=batch.args,
                        target=batch.target,
                        size=batch.size,
                        created_by=batch.created_by,
                        created_at=batch.created_at,
                        per_second=batch.per_second,
                        abort_failure_ratio=batch.abort_failure_ratio,
                    )
                )
            conn.execute(insert(commands), rows)
            if audit:
                conn.execute(insert(audit_log), list(audit))

        await self._writes.run(job, urgent=True)

    async def save(self, records: Iterable[CommandRecord]) -> None:
        """Write the state columns of ``records`` (one statement, one transaction)."""
        rows = [
            {"key": r.id, **{column: getattr(r, column) for column in _STATE_COLUMNS}}
            for r in records
        ]
        if not rows:
            return
        statement = (
            update(commands)
            .where(commands.c.id == bindparam("key"))
            .values({column: bindparam(column) for column in _STATE_COLUMNS})
        )
        await self._writes.run(lambda conn: conn.execute(statement, rows))  # written behind

    async def get(self, command_id: str) -> CommandRecord:
        """The command ``command_id``.

        Raises:
            CommandNotFound: there is none.
        """
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(commands).where(commands.c.id == command_id))).first()
        if row is None:
            raise CommandNotFound(f"no command {command_id!r}")
        return CommandRecord.from_row(row)

    async def open_for(self, hub: str) -> list[CommandRecord]:
        """The unfinished commands hub instance ``hub`` sent or is to send, oldest first."""
        query = (
            select(commands)
            .where(commands.c.hub == hub, commands.c.status.in_(sorted(OPEN)))
            .order_by(commands.c.created_at, commands.c.id)
        )
        async with self._engine.connect() as conn:
            return [CommandRecord.from_row(row) for row in await conn.execute(query)]

    async def of_device(
        self, device_id: str, *, limit: int = 100, before: int | None = None
    ) -> list[CommandRecord]:
        """The device's commands, newest first (``before``: created before that epoch ms)."""
        query = select(commands).where(commands.c.device_id == device_id)
        if before is not None:
            query = query.where(commands.c.created_at < before)
        query = query.order_by(commands.c.created_at.desc(), commands.c.id.desc()).limit(limit)
        async with self._engine.connect() as conn:
            return [CommandRecord.from_row(row) for row in await conn.execute(query)]

    async def of_batch(self, batch_id: str) -> list[CommandRecord]:
        """The commands of a batch, by device id."""
        query = (
            select(commands).where(commands.c.batch_id == batch_id).order_by(commands.c.device_id)
        )
        async with self._engine.connect() as conn:
            return [CommandRecord.from_row(row) for row in await conn.execute(query)]

    async def batch(self, batch_id: str) -> BatchRecord:
        """The batch ``batch_id`` with the ids of its commands.

        Raises:
            CommandNotFound: there is none.
        """
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(select(command_batches).where(command_batches.c.id == batch_id))
            ).first()
            if row is None:
                raise CommandNotFound(f"no command batch {batch_id!r}")
            ids = (
                await conn.execute(
                    select(commands.c.id)
                    .where(commands.c.batch_id == batch_id)
                    .order_by(commands.c.device_id)
                )
            ).scalars()
            return BatchRecord(**row._mapping, command_ids=list(ids))
