"""The outbox's SQLite file, used from one thread only (see ``outbox.py`` for the why).

One table holds every report the hub has not acknowledged yet, in the order reported::

    outbox(id INTEGER PRIMARY KEY AUTOINCREMENT, kind, seq, body)

``seq`` is NULL until the report is first handed out for sending; then it is the wire seq of
the message that carries it (several telemetry reports may share one). Seqs are handed out in
``id`` order, so the reports with a seq are always the oldest ones: a prefix of the table. That
prefix ends at ``_boundary``, so "not yet sent" is ``id > _boundary`` and needs no index of its
own. ``meta`` keeps the last seq ever handed out (seqs grow across restarts, even when the table
is empty) and the loss counters.

Every method is one transaction; :meth:`OutboxStore.transact` bundles everything the event loop
collected since the last one (new reports, an ack, refusals, messages wanted) so that one fsync
covers it all.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Final

import msgspec

from fieldhub.agent._outbox_schema import OutboxStoreError, Tables, create_tables, set_up_file
from fieldhub.clock import now_ms
from fieldhub.private_files import private_dir, private_file
from fieldhub.protocol import Channel, Event, Sample, State, Telemetry, encode
from fieldhub.protocol.messages import MAX_PAYLOAD_BYTES, MAX_SAMPLES

__all__ = [
    "Done",
    "Kind",
    "OutMessage",
    "OutboxStore",
    "OutboxStoreError",
    "Tables",
    "Work",
    "transact_together",
]

OVERFLOW_EVENT: Final = "outbox.overflow"
_PLACEHOLDER_SEQ: Final = 1  # events and state are stored as messages; their seq comes later


class Kind(IntEnum):
    """What a report is. The value is the drop order when the outbox is full: lowest first."""

    TELEMETRY = 0
    STATE = 1
    EVENT = 2

    @property
    def channel(self) -> Channel:
        """The wire channel reports of this kind travel on."""
        return _CHANNELS[self]


_CHANNELS: Final = {
    Kind.TELEMETRY: Channel.TELEMETRY,
    Kind.STATE: Channel.STATE,
    Kind.EVENT: Channel.EVENT,
}
_SAMPLE = msgspec.json.Decoder(Sample)
_EVENT = msgspec.json.Decoder(Event)
_STATE = msgspec.json.Decoder(State)


@dataclass(frozen=True, slots=True)
class OutMessage:
    """One wire message of the outbox: a seq and the stored bodies it carries.

    Telemetry bodies are encoded :class:`Sample` s (combined into one multi-sample message when
    there are several); an event or a state body is the whole message with a placeholder seq.
    """

    seq: int
    kind: Kind
    bodies: tuple[bytes, ...]

    @property
    def channel(self) -> Channel:
        """The channel to publish on."""
        return self.kind.channel

    @property
    def reports(self) -> int:
        """How many reports the message carries."""
        return len(self.bodies)

    def payload(self, oldest: int) -> bytes:
        """The message as sent now: ``oldest`` is the lowest seq the outbox still holds.

        Raises:
            msgspec.ValidationError, msgspec.DecodeError: a stored body is unreadable (the
                store checked every body when it handed the message out, so only a bug or a
                damaged file gets here).
        """
        oldest = min(oldest, self.seq)
        if self.kind is Kind.TELEMETRY:
            if len(self.bodies) == 1:
                sample = _SAMPLE.decode(self.bodies[0])
                message: Telemetry | Event | State = Telemetry(
                    seq=self.seq, oldest=oldest, ts=sample.ts, values=sample.values
                )
            else:
                samples = [_SAMPLE.decode(body) for body in self.bodies]
                message = Telemetry(seq=self.seq, oldest=oldest, samples=samples)
        elif self.kind is Kind.EVENT:
            message = msgspec.structs.replace(
                _EVENT.decode(self.bodies[0]), seq=self.seq, oldest=oldest
            )
        else:
            message = msgspec.structs.replace(
                _STATE.decode(self.bodies[0]), seq=self.seq, oldest=oldest
            )
        return encode(message)


@dataclass(slots=True)
class Work:
    """What one transaction should do, collected on the event loop since the last one."""

    reports: list[tuple[Kind, bytes]] = field(default_factory=list)
    ack: int = 0  # delete what messages up to this seq carry
    refused: list[int] = field(default_factory=list)  # seqs the hub will never store
    renumber_after: int | None = None  # the hub holds seqs up to here from an earlier outbox
    want: int = 0  # messages to hand out for sending, at most

    def __bool__(self) -> bool:
        return bool(
            self.reports or self.ack or self.refused or self.renumber_after is not None or self.want
        )


@dataclass(slots=True)
class Done:
    """What a transaction did, and the outbox's figures after it."""

    messages: list[OutMessage] = field(default_factory=list)
    stored: int = 0
    acked_reports: int = 0
    refused_reports: int = 0
    dropped: dict[str, int] = field(default_factory=dict)  # by kind name, this transaction
    depth: int = 0
    unsent: int = 0
    ready: bool = False  # something is waiting to be handed out
    last_seq: int = 0
    lost: dict[str, int] = field(default_factory=dict)  # by kind name, since the file was made
    refused_total: int = 0
    stored_through: int = 0  # the last row id ever stored (rows only grow: AUTOINCREMENT)
    held_from: int = 1  # the first row id still held: every row before it has left the file


@dataclass(slots=True)
class _Assigned:
    seq: int
    first_id: int
    last_id: int
    rows: int


@dataclass(slots=True)
class _Group:
    """Consecutive rows that become one message (see :meth:`OutboxStore._take`)."""

    first_id: int
    last_id: int
    kind: Kind
    bodies: list[bytes]


class OutboxStore:
    """One device's outbox. Not thread-safe: one thread opens it and makes every call.

    The agent's store has a file of its own. A gateway keeps its children's in one shared file
    (``Tables``, made by ``_outbox_file.OutboxFile``): the same rules, each device with its own
    two tables there, so its own seqs, acks and resends; one SQLite connection costs ~160 KB,
    which 200 children each paid when every one had its own file.

    Args:
        path: the SQLite file; created with its folder when missing (unused with ``tables``).
        max_messages: reports kept at most; beyond, the oldest unsent ones are dropped,
            telemetry first, events last.
        max_samples: telemetry reports combined into one message, at most.
        max_payload_bytes: size of one combined message, about, at most.
        tables: a shared file's connection and this device's tables in it.
    """

    def __init__(
        self,
        path: Path,
        *,
        max_messages: int = 100_000,
        max_samples: int = MAX_SAMPLES,
        max_payload_bytes: int = MAX_PAYLOAD_BYTES * 3 // 4,
        tables: Tables | None = None,
    ) -> None:
        if max_messages < 10:
            raise ValueError(f"max_messages must be at least 10, not {max_messages!r}.")
        if not 1 <= max_samples <= MAX_SAMPLES:
            raise ValueError(f"max_samples must be 1..{MAX_SAMPLES}, not {max_samples!r}.")
        self._max = max_messages
        self._max_samples = max_samples
        self._max_bytes = max_payload_bytes
        # Messages handed out are at most half the bound, so an overflow always finds unsent
        # reports to drop (reports in flight are never dropped: the hub may have them).
        self._max_assigned_rows = max_messages // 2
        self._owns_db = tables is None
        if tables is None:
            private_dir(path.parent)
            db = sqlite3.connect(private_file(path), isolation_level=None)
            try:
                set_up_file(db)
            except BaseException:
                db.close()
                raise
            tables = Tables(db)
        self._db = tables.db
        self._table, self._meta_table = tables.outbox, tables.meta
        try:
            create_tables(self._db, tables)
        except BaseException:
            self.close()
            raise
        self._counts = {kind: 0 for kind in Kind}
        counts = f"SELECT kind, count(*) FROM {self._table} GROUP BY kind"
        for kind, count in self._db.execute(counts):
            self._counts[Kind(kind)] = count
        self._meta: dict[str, int] = {
            str(name): int(value)
            for name, value in self._db.execute(f"SELECT name, value FROM {self._meta_table}")
        }
        self._assigned: list[_Assigned] = []
        rows = (
            f"SELECT seq, min(id), max(id), count(*) FROM {self._table} "
            "WHERE seq IS NOT NULL GROUP BY seq ORDER BY seq"
        )
        for seq, first_id, last_id, count in self._db.execute(rows):
            self._assigned.append(_Assigned(seq, first_id, last_id, count))
        self._handed_out = 0  # of _assigned; the rest were assigned before a restart

    def close(self) -> None:
        """Close the file (idempotent); a shared file stays open for the other devices."""
        if self._owns_db:
            self._db.close()

    @property
    def last_seq(self) -> int:
        """The last seq handed out, ever."""
        return self._meta.get("last_seq", 0)

    @property
    def _overflow_id(self) -> int:
        """Row of the overflow event while it is unsent and may still grow; 0 for none."""
        return self._meta.get("overflow_id", 0)

    @_overflow_id.setter
    def _overflow_id(self, row_id: int) -> None:
        self._meta["overflow_id"] = row_id

    @property
    def _boundary(self) -> int:
        return self._assigned[-1].last_id if self._assigned else 0

    # one transaction

    def transact(self, work: Work) -> Done:
        """Do ``work`` in one transaction, committed (and fsynced) before this returns.

        Raises:
            sqlite3.Error: the transaction failed and was rolled back; nothing of ``work``
                happened, and the in-memory figures are those of before.
        """
        return transact_together(self._db, [(self, work)])[0]

    def _stage(self, work: Work) -> Done:
        """``work``'s statements, inside a transaction the caller opened."""
        done = Done()
        if work.renumber_after is not None:
            self._renumber(work.renumber_after)
        elif work.ack:
            done.acked_reports = self._ack(work.ack)
        for seq in work.refused:
            done.refused_reports += self._refuse(seq)
        if work.reports:
            self._append(work.reports, done)
        if work.want:
            done.messages = self._take(work.want)
        self._save_meta()
        done.stored_through, done.held_from = self._row_marks()
        return done

    def _figures(self, done: Done, work: Work) -> Done:
        """The figures after a committed transaction, into ``done``."""
        done.stored = len(work.reports)
        done.depth = sum(self._counts.values())
        done.unsent = done.depth - sum(a.rows for a in self._assigned)
        done.ready = done.unsent > 0 or self._handed_out < len(self._assigned)
        done.last_seq = self.last_seq
        done.lost = {kind.name.lower(): self._meta.get(_lost_key(kind), 0) for kind in Kind}
        done.refused_total = self._meta.get("refused", 0)
        return done

    def _row_marks(self) -> tuple[int, int]:
        """The last row id stored ever, and the first one still held (see ``Done``): a report
        stored at or before the first mark has left the file (the hub acknowledged it, or it
        was dropped or refused) once the second is beyond it. Media wait for that."""
        row = self._db.execute(
            "SELECT seq FROM sqlite_sequence WHERE name = ?", (self._table,)
        ).fetchone()
        stored = int(row[0]) if row else 0
        (first,) = self._db.execute(f"SELECT min(id) FROM {self._table}").fetchone()
        return stored, stored + 1 if first is None else int(first)

    def _save_meta(self) -> None:
        self._db.executemany(
            f"INSERT INTO {self._meta_table} (name, value) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            self._meta.items(),
        )

    def _delete_ids(self, first_id: int, last_id: int) -> int:
        deleted = 0
        # Row by row, not fetchall(): an ack deletes up to 8,000 rows (see _take).
        for (kind,) in self._db.execute(
            f"DELETE FROM {self._table} WHERE id BETWEEN ? AND ? RETURNING kind",
            (first_id, last_id),
        ):
            self._counts[Kind(kind)] -= 1
            deleted += 1
        return deleted

    def _ack(self, seq: int) -> int:
        """Delete the messages up to ``seq``: the hub has committed them."""
        covered = 0
        while covered < len(self._assigned) and self._assigned[covered].seq <= seq:
            covered += 1
        if not covered:
            return 0
        deleted = self._delete_ids(self._assigned[0].first_id, self._assigned[covered - 1].last_id)
        del self._assigned[:covered]
        self._handed_out = max(0, self._handed_out - covered)
        return deleted

    def _refuse(self, seq: int) -> int:
        """Delete one message the hub will never store, and count its reports."""
        for index, assigned in enumerate(self._assigned):
            if assigned.seq == seq:
                deleted = self._delete_ids(assigned.first_id, assigned.last_id)
                del self._assigned[index]
                if index < self._handed_out:
                    self._handed_out -= 1
                self._meta["refused"] = self._meta.get("refused", 0) + deleted
                return deleted
        return 0

    def _renumber(self, hub_seq: int) -> None:
        """The hub already has seqs up to ``hub_seq`` from an earlier life of this device (the
        outbox file was replaced): what was handed out so far would be taken for duplicates.
        Take every seq back, and go on above the hub's."""
        self._db.execute(f"UPDATE {self._table} SET seq = NULL WHERE seq IS NOT NULL")
        self._assigned.clear()
        self._handed_out = 0
        self._meta["last_seq"] = max(self.last_seq, hub_seq)

    def _append(self, reports: list[tuple[Kind, bytes]], done: Done) -> None:
        self._db.executemany(f"INSERT INTO {self._table} (kind, body) VALUES (?, ?)", reports)
        for kind, _body in reports:
            self._counts[kind] += 1
        excess = sum(self._counts.values()) - self._max
        if excess <= 0:
            return
        if not self._is_unsent(self._overflow_id):
            excess += 1  # room for the event that tells the hub
        dropped = self._drop_oldest(excess)
        for kind, count in dropped.items():
            key = _lost_key(kind)
            self._meta[key] = self._meta.get(key, 0) + count
        done.dropped = {kind.name.lower(): count for kind, count in dropped.items() if count}
        self._record_overflow(dropped)

    def _is_unsent(self, row_id: int) -> bool:
        return (
            row_id > self._boundary
            and row_id > 0
            and (
                self._db.execute(f"SELECT 1 FROM {self._table} WHERE id = ?", (row_id,)).fetchone()
                is not None
            )
        )

    def _drop_oldest(self, count: int) -> dict[Kind, int]:
        """Delete ``count`` unsent reports: the oldest telemetry, then state, then events."""
        dropped = dict.fromkeys(Kind, 0)
        keep = self._overflow_id
        for kind in Kind:
            if count <= 0:
                break
            deleted = self._db.execute(
                f"DELETE FROM {self._table} WHERE id IN (SELECT id FROM {self._table} "
                "WHERE kind = ? AND id > ? AND id != ? ORDER BY id LIMIT ?)",
                (kind, self._boundary, keep, count),
            ).rowcount
            dropped[kind] = deleted
            self._counts[kind] -= deleted
            count -= deleted
        return dropped

    def _record_overflow(self, dropped: dict[Kind, int]) -> None:
        """Say upward what was dropped: one unsent ``outbox.overflow`` event whose counts grow
        while it waits, so that an overflow cannot fill the outbox with its own reports."""
        counts = {kind.name.lower(): dropped[kind] for kind in Kind}
        if self._is_unsent(self._overflow_id):
            (body,) = self._db.execute(
                f"SELECT body FROM {self._table} WHERE id = ?", (self._overflow_id,)
            ).fetchone()
            event = _EVENT.decode(body)
            for name, count in event.data.items():
                if name in counts and isinstance(count, int):
                    counts[name] += count
            updated = msgspec.structs.replace(event, data=counts)
            self._db.execute(
                f"UPDATE {self._table} SET body = ? WHERE id = ?",
                (encode(updated), self._overflow_id),
            )
            return
        event = Event(
            seq=_PLACEHOLDER_SEQ,
            ts=now_ms(),
            type=OVERFLOW_EVENT,
            severity="warning",
            message="outbox full while the hub was unreachable: the oldest reports were dropped",
            data=counts,
        )
        cursor = self._db.execute(
            f"INSERT INTO {self._table} (kind, body) VALUES (?, ?)", (Kind.EVENT, encode(event))
        )
        self._overflow_id = cursor.lastrowid or 0
        self._counts[Kind.EVENT] += 1

    def _take(self, want: int) -> list[OutMessage]:
        """Hand out up to ``want`` messages: first those given seqs before a restart, then
        unsent reports, telemetry combined, each new message given the next seq."""
        messages = self._reload(want)
        want -= len(messages)
        budget = self._max_assigned_rows - sum(a.rows for a in self._assigned)
        if want <= 0 or budget <= 0:
            return messages
        # Row by row from the cursor, keeping only the bodies: a drain hands out 8,000 rows at
        # a time, and a list of them all (with a tuple per row) doubled the transaction's
        # memory peak to 2 MiB, which pymalloc kept as half-empty arenas after the drain.
        cursor = self._db.execute(
            f"SELECT id, kind, body FROM {self._table} WHERE id > ? ORDER BY id LIMIT ?",
            (self._boundary, min(budget, want * self._max_samples)),
        )
        groups: list[_Group] = []
        unreadable: list[int] = []
        size = 0
        for row_id, kind_value, body in cursor:
            kind = Kind(kind_value)
            if not _readable(kind, body):
                unreadable.append(row_id)
                continue
            last = groups[-1] if groups else None
            if (
                last is not None
                and kind is Kind.TELEMETRY
                and last.kind is Kind.TELEMETRY
                and len(last.bodies) < self._max_samples
                and size + len(body) <= self._max_bytes
            ):
                last.bodies.append(body)
                last.last_id = row_id
                size += len(body)
                continue
            if len(groups) == want:
                break
            groups.append(_Group(row_id, row_id, kind, [body]))
            size = len(body)
        cursor.close()
        self._drop_unreadable(unreadable)
        seq = self.last_seq
        updates = []
        for group in groups:
            seq += 1
            first_id, last_id = group.first_id, group.last_id
            updates.append((seq, first_id, last_id))
            self._assigned.append(_Assigned(seq, first_id, last_id, len(group.bodies)))
            messages.append(OutMessage(seq, group.kind, tuple(group.bodies)))
            if first_id <= self._overflow_id <= last_id:
                self._overflow_id = 0  # sent: the next overflow gets an event of its own
        self._db.executemany(f"UPDATE {self._table} SET seq = ? WHERE id BETWEEN ? AND ?", updates)
        self._meta["last_seq"] = seq
        self._handed_out = len(self._assigned)
        return messages

    def _reload(self, want: int) -> list[OutMessage]:
        """Messages given seqs before this process started, in seq order (their seq and their
        content are fixed: the hub may hold them already)."""
        pending = self._assigned[self._handed_out : self._handed_out + max(want, 0)]
        messages = []
        for assigned in pending:
            rows = self._db.execute(
                f"SELECT kind, body FROM {self._table} WHERE id BETWEEN ? AND ? ORDER BY id",
                (assigned.first_id, assigned.last_id),
            ).fetchall()
            messages.append(
                OutMessage(assigned.seq, Kind(rows[0][0]), tuple(body for _, body in rows))
            )
        self._handed_out += len(pending)
        return messages

    def _drop_unreadable(self, row_ids: Iterable[int]) -> None:
        """Reports that no longer decode (a damaged file): never sendable, counted as refused."""
        for row_id in row_ids:
            if self._delete_ids(row_id, row_id):
                self._meta["refused"] = self._meta.get("refused", 0) + 1


def transact_together(
    db: sqlite3.Connection, items: Sequence[tuple[OutboxStore, Work]]
) -> list[Done]:
    """Every store's work in one transaction on ``db`` (their shared file): one commit and one
    fsync for all, which is what lets 200 children share one file and one thread. All or
    nothing: when it fails, every store's in-memory figures are those of before.

    Raises:
        sqlite3.Error: the transaction failed and was rolled back.
    """
    saved = [(dict(s._counts), dict(s._meta), list(s._assigned), s._handed_out) for s, _ in items]
    try:
        db.execute("BEGIN IMMEDIATE")
        staged = [store._stage(work) for store, work in items]
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.rollback()
        for (store, _work), (counts, meta, assigned, handed_out) in zip(items, saved, strict=True):
            store._counts, store._meta, store._assigned = counts, meta, assigned
            store._handed_out = handed_out
        raise
    return [store._figures(done, work) for (store, work), done in zip(items, staged, strict=True)]


def _lost_key(kind: Kind) -> str:
    return f"lost_{kind.name.lower()}"


def _readable(kind: Kind, body: bytes) -> bool:
    decoder = _SAMPLE if kind is Kind.TELEMETRY else _EVENT if kind is Kind.EVENT else _STATE
    try:
        decoder.decode(body)
    except (msgspec.ValidationError, msgspec.DecodeError, ValueError):
        return False
    return True
