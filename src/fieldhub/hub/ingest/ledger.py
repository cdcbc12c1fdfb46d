"""Which seqs a commit may store, and how far each device's data is stored: facts of the database.

Several hub processes may ingest one fleet (shared subscriptions, docs/scaling.md): seq 1
and 3 of a device may reach hub A and seq 2 hub B, and a message the broker redelivers after a
hub died may reach both. So neither "is this a duplicate" nor "what may be acknowledged" can be
answered from one process's memory. Each ingest transaction, before it writes the batch:

1. reads each touched device's watermark (``devices.acked_seq``) and its committed seqs above
   it (``received``, primary key (device, seq));
2. keeps the batch's messages that are neither (every other one is a duplicate, whichever hub
   stored it), moves the watermark over the contiguous run (``SeqTracker``, the one home of
   that rule) and writes it;
3. inserts into ``received`` only the kept seqs still above the new watermark, and deletes the
   rows the watermark passed: the table holds only out-of-order seqs, no clean-up has to race
   with ingest, and the common case (seqs in order) costs one read and one update per batch.

This is exact because ingest transactions never overlap: on PostgreSQL each first takes one
advisory lock (so each sees everything committed before it, READ COMMITTED, and two commits
touching the same series, rollups or devices rows cannot deadlock); SQLite has one writer (and
one hub: ``hub/store/exclusive.py``). Should that ever not hold, the primary key still refuses
a seq stored twice above the watermark, and the batch fails (its devices resend) instead of
storing it twice. Decoding, validating and batching, the larger share of the work, still run
in parallel in every hub.
"""

from __future__ import annotations

from typing import Any

import msgspec
from sqlalchemy.engine import Connection

from fieldhub.hub.ingest.sequence import SeqTracker

# One lock for every hub's ingest commits (a 64-bit key of our own; PostgreSQL releases it at
# commit or rollback). Other advisory locks of fieldhub must use other keys.
_PG_LOCK = "SELECT pg_advisory_xact_lock(7020113601854291297)"
_SQLITE_STATE = (
    "SELECT d.id, d.acked_seq, r.seq FROM devices d"
    " LEFT JOIN received r ON r.device_id = d.id AND r.seq > d.acked_seq"
    " WHERE d.id IN (SELECT value FROM json_each(?))"
)
_PG_STATE = (
    "SELECT d.id, d.acked_seq, r.seq FROM devices d"
    " LEFT JOIN received r ON r.device_id = d.id AND r.seq > d.acked_seq"
    " WHERE d.id = ANY($1::varchar[])"
)
_SQLITE_SET_WATERMARK = (
    "UPDATE devices SET acked_seq = j.value->>1, last_seen = ? FROM json_each(?) j"
    " WHERE devices.id = j.value->>0"
)
_PG_SET_WATERMARK = (
    "UPDATE devices d SET acked_seq = t.acked, last_seen = $3"
    " FROM unnest($1::varchar[], $2::bigint[]) AS t(id, acked) WHERE d.id = t.id"
)
_INSERT_ABOVE = "INSERT INTO received (device_id, seq) VALUES ({})"
_PRUNE = "DELETE FROM received WHERE device_id = {} AND seq <= {}"
_JSON = msgspec.json.Encoder()

Seqs = dict[str, list[tuple[int, int]]]
"""Per device, the (seq, floor) pairs of a batch (``Batch.seqs``)."""


class SeqLedger:
    """Runs steps 1 to 3 (module docstring) on a connection inside an ingest transaction."""

    def __init__(self, dialect: str) -> None:
        self._postgres = dialect == "postgresql"
        mark = "$1, $2" if self._postgres else "?, ?"
        self._insert_above = _INSERT_ABOVE.format(mark)
        self._prune = _PRUNE.format(*mark.split(", "))

    def record(
        self, conn: Connection, seqs: Seqs, now: int
    ) -> tuple[set[tuple[str, int]], dict[str, SeqTracker]]:
        """Serialize with other hubs' ingest (PostgreSQL) and record the batch's seqs; return
        the (device, seq) pairs stored by no commit before this one, and each device's state
        once this transaction commits."""
        if self._postgres:
            conn.exec_driver_sql(_PG_LOCK)
        if not seqs:
            return set(), {}
        device_ids = list(seqs)
        if self._postgres:
            rows: Any = _pg(conn, lambda pg: pg.fetch(_PG_STATE, device_ids))
        else:
            rows = conn.exec_driver_sql(_SQLITE_STATE, (_JSON.encode(device_ids),)).all()
        trackers: dict[str, SeqTracker] = {}
        for device_id, acked, above in rows:
            tracker = trackers.get(device_id)
            if tracker is None:
                tracker = trackers[device_id] = SeqTracker(acked)
            if above is not None:
                tracker.above.add(above)
        fresh: set[tuple[str, int]] = set()
        inserts: list[tuple[str, int]] = []
        prunes: list[tuple[str, int]] = []
        for device_id, tracker in trackers.items():
            entries = seqs[device_id]
            kept = [seq for seq, _ in entries if not tracker.is_duplicate(seq)]
            had_above = bool(tracker.above)
            tracker.commit(entries)
            fresh.update((device_id, seq) for seq in kept)
            inserts += [(device_id, seq) for seq in kept if seq > tracker.acked]
            if had_above:
                prunes.append((device_id, tracker.acked))
        self._write(conn, trackers, inserts, prunes, now)
        return fresh, trackers

    def _write(
        self,
        conn: Connection,
        trackers: dict[str, SeqTracker],
        inserts: list[tuple[str, int]],
        prunes: list[tuple[str, int]],
        now: int,
    ) -> None:
        marks = [(device_id, tracker.acked) for device_id, tracker in trackers.items()]
        if not marks:
            return
        if self._postgres:
            ids, acked_seqs = (list(column) for column in zip(*marks, strict=True))
            _pg(conn, lambda pg: pg.execute(_PG_SET_WATERMARK, ids, acked_seqs, now))
            if prunes:
                _pg(conn, lambda pg: pg.executemany(self._prune, prunes))
            if inserts:
                _pg(conn, lambda pg: pg.executemany(self._insert_above, inserts))
            return
        conn.exec_driver_sql(_SQLITE_SET_WATERMARK, (now, _JSON.encode(marks)))
        if prunes:
            conn.exec_driver_sql(self._prune, prunes)
        if inserts:
            conn.exec_driver_sql(self._insert_above, inserts)


def _pg(conn: Connection, call: Any) -> Any:
    """Run ``call`` on the raw asyncpg connection of this transaction (this code runs inside
    ``AsyncConnection.run_sync``; asyncpg's batch calls skip SQLAlchemy's per-row work)."""
    adapted: Any = conn.connection.dbapi_connection
    return adapted.run_async(call)
