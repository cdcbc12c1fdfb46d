"""Which seqs a commit may store, and how far each device's data is stored: facts of the database.

Several hub processes may ingest one fleet (shared subscriptions, docs/scaling-ingest.md): seq 1
and 3 of a device may reach hub A and seq 2 hub B, and a message the broker redelivers after a
hub died may reach both. So neither "is this a duplicate" nor "what may be acknowledged" can be
answered from one process's memory. Inside each ingest transaction:

1. ``claim`` inserts the batch's (device, seq) pairs into ``received`` (primary key: each pair
   once) unless at or below the device's watermark; the pairs that went in are the messages this
   commit stores, every other one is a duplicate whichever hub stored it.
2. ``settle`` reads each touched device's watermark and its committed seqs above it, moves the
   watermark over the contiguous run (``SeqTracker``, the one home of that rule), writes it, and
   deletes the ``received`` rows it passed: the table holds only out-of-order seqs, and no
   separate clean-up has to race with ingest.

On PostgreSQL the transaction first takes one advisory lock, so ingest commits of all hubs run
one after another: each then sees everything committed before it (READ COMMITTED), the
watermark it computes is the one of all hubs together, and two commits touching the same rows
(series, rollups, devices) in different orders cannot deadlock. Decoding, validating and
batching, the larger share of the work, still run in parallel in every hub. SQLite has one
writer anyway (and one hub: ``hub/store/exclusive.py``).
"""

from __future__ import annotations

from typing import Any

import msgspec
from sqlalchemy.engine import Connection

from fieldhub.hub.ingest.sequence import SeqTracker

# One lock for every hub's ingest commits (a 64-bit key of our own; PostgreSQL releases it at
# commit or rollback). Other advisory locks of fieldhub must use other keys.
_PG_LOCK = "SELECT pg_advisory_xact_lock(7020113601854291297)"
_SQLITE_CLAIM = (
    "INSERT INTO received (device_id, seq)"
    " SELECT j.value->>0, j.value->>1 FROM json_each(?) j JOIN devices d ON d.id = j.value->>0"
    " WHERE j.value->>1 > d.acked_seq ON CONFLICT DO NOTHING RETURNING device_id, seq"
)
_PG_CLAIM = (
    "INSERT INTO received (device_id, seq)"
    " SELECT t.device_id, t.seq FROM unnest($1::varchar[], $2::bigint[]) AS t(device_id, seq)"
    " JOIN devices d ON d.id = t.device_id WHERE t.seq > d.acked_seq"
    " ON CONFLICT DO NOTHING RETURNING device_id, seq"
)
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
_SQLITE_PRUNE = (
    "DELETE FROM received WHERE device_id IN (SELECT value FROM json_each(?)) AND seq <="
    " (SELECT d.acked_seq FROM devices d WHERE d.id = received.device_id)"
)
_PG_PRUNE = (
    "DELETE FROM received r USING devices d"
    " WHERE d.id = r.device_id AND r.seq <= d.acked_seq AND d.id = ANY($1::varchar[])"
)
_JSON = msgspec.json.Encoder()

Seqs = dict[str, list[tuple[int, int]]]
"""Per device, the (seq, floor) pairs of a batch (``Batch.seqs``)."""


class SeqLedger:
    """Runs steps 1 and 2 (module docstring) on a connection inside an ingest transaction."""

    def __init__(self, dialect: str) -> None:
        self._postgres = dialect == "postgresql"

    def claim(self, conn: Connection, seqs: Seqs) -> set[tuple[str, int]]:
        """Serialize with other hubs' ingest (PostgreSQL) and record the batch's seqs; return
        the (device, seq) pairs stored by no commit before this one."""
        pairs = [(device_id, seq) for device_id, entries in seqs.items() for seq, _ in entries]
        if not self._postgres:
            rows = conn.exec_driver_sql(_SQLITE_CLAIM, (_JSON.encode(pairs),)).all()
            return {(row[0], row[1]) for row in rows}
        conn.exec_driver_sql(_PG_LOCK)
        if not pairs:
            return set()
        device_ids, numbers = (list(column) for column in zip(*pairs, strict=True))
        records = _pg(conn, lambda pg: pg.fetch(_PG_CLAIM, device_ids, numbers))
        return {(record[0], record[1]) for record in records}

    def settle(self, conn: Connection, seqs: Seqs, now: int) -> dict[str, SeqTracker]:
        """Move the watermark of every device in ``seqs`` over what is committed (this
        transaction's rows included) and write it; return each device's state."""
        if not seqs:
            return {}
        device_ids = list(seqs)
        trackers: dict[str, SeqTracker] = {}
        if self._postgres:
            rows: Any = _pg(conn, lambda pg: pg.fetch(_PG_STATE, device_ids))
        else:
            rows = conn.exec_driver_sql(_SQLITE_STATE, (_JSON.encode(device_ids),)).all()
        for device_id, acked, above in rows:
            tracker = trackers.get(device_id)
            if tracker is None:
                tracker = trackers[device_id] = SeqTracker(acked)
            if above is not None:
                tracker.above.add(above)
        for device_id, tracker in trackers.items():
            tracker.commit(seqs[device_id])
        marks = [(device_id, tracker.acked) for device_id, tracker in trackers.items()]
        if self._postgres:
            ids, acked_seqs = (list(column) for column in zip(*marks, strict=True))
            _pg(conn, lambda pg: pg.execute(_PG_SET_WATERMARK, ids, acked_seqs, now))
            _pg(conn, lambda pg: pg.execute(_PG_PRUNE, ids))
        else:
            conn.exec_driver_sql(_SQLITE_SET_WATERMARK, (now, _JSON.encode(marks)))
            conn.exec_driver_sql(_SQLITE_PRUNE, (_JSON.encode(device_ids),))
        return trackers


def _pg(conn: Connection, call: Any) -> Any:
    """Run ``call`` on the raw asyncpg connection of this transaction (this code runs inside
    ``AsyncConnection.run_sync``; asyncpg's batch calls skip SQLAlchemy's per-row work)."""
    adapted: Any = conn.connection.dbapi_connection
    return adapted.run_async(call)
