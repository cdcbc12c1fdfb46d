"""Commits an ingest batch in one transaction: samples, their per-minute rollups, latest values,
events, state, bookkeeping.

One transaction per batch is what makes the storage ack honest: the sequence watermark of every
device is written in the same transaction as its data, so after a crash the hub's idea of what
is stored and what is stored cannot disagree.

Rollups (``schema.rollups``: count, sum, min, max and newest value of each series and minute)
stay exact, including when a value replaces one stored for the same instant (last wins):

- While the batch's rows are built, the same loop aggregates them per series and minute.
  A batch whose every (series, ts) is new (the common case) *adds* these aggregates to the
  stored ones in one upsert: counts and sums add up, min and max combine, the later newest
  value wins. That is exact because no stored value was replaced.
- Whether that holds is known from the samples insert itself, at no extra cost: on SQLite the
  batch first goes in with ``ON CONFLICT DO NOTHING`` and the driver's change count says how
  many rows were new; on PostgreSQL the plain COPY fails with a unique violation. A batch with
  an instant already stored, or one instant twice, then goes in with last wins (the upsert on
  SQLite, the staging table on PostgreSQL) and the minutes it touched are *recomputed* from
  the samples as they now are, replacing their rollups.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import msgspec
from sqlalchemy import bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from fieldhub.clock import now_ms
from fieldhub.hub.ingest.batch import Batch
from fieldhub.hub.ingest.ledger import SeqLedger
from fieldhub.hub.ingest.sequence import SeqTracker
from fieldhub.hub.store.health import StorageHealth
from fieldhub.hub.store.media import media_rows
from fieldhub.hub.store.schema import devices, events, media, received, samples, series
from fieldhub.hub.store.writes import EngineWrites, Writes

_SAMPLE_COLUMNS = ("series_id", "ts", "num", "txt")
# A later value for the same series and millisecond replaces the earlier one (last wins); rows
# are read in list order, so within a batch too the last one stays. ``WHERE true`` tells
# SQLite's parser that ON CONFLICT belongs to the INSERT, not to the join. The batch goes in
# first with DO NOTHING: when every row was new (the change count says so) the rollups can be
# added to; otherwise the upsert applies last wins and the touched minutes are recomputed.
_SQLITE_INSERT_NEW_SAMPLES = (
    "INSERT INTO samples (series_id, ts, num, txt)"
    " SELECT value->>0, value->>1, value->>2, value->>3 FROM json_each(?) WHERE true"
    " ON CONFLICT (series_id, ts) DO NOTHING"
)
_SQLITE_INSERT_SAMPLES = (
    "INSERT INTO samples (series_id, ts, num, txt)"
    " SELECT value->>0, value->>1, value->>2, value->>3 FROM json_each(?) WHERE true"
    " ON CONFLICT (series_id, ts) DO UPDATE SET num = excluded.num, txt = excluded.txt"
)
_ROLLUP_COLUMNS = "series_id, minute, count_num, sum_num, min_num, max_num, last_ts, last_num"
# A batch's own per-minute aggregates, added to the stored ones (exact when the batch replaced
# nothing). SQLite's two-argument min() and max() are null when either side is: coalesce.
_ADD_ROLLUPS = (
    " ON CONFLICT (series_id, minute) DO UPDATE SET"
    " count_num = rollups.count_num + excluded.count_num,"
    " sum_num = rollups.sum_num + excluded.sum_num,"
    " min_num = {min}(coalesce(rollups.min_num, excluded.min_num),"
    " coalesce(excluded.min_num, rollups.min_num)),"
    " max_num = {max}(coalesce(rollups.max_num, excluded.max_num),"
    " coalesce(excluded.max_num, rollups.max_num)),"
    " last_num = CASE WHEN excluded.last_ts > rollups.last_ts"
    " THEN excluded.last_num ELSE rollups.last_num END,"
    " last_ts = CASE WHEN excluded.last_ts > rollups.last_ts"
    " THEN excluded.last_ts ELSE rollups.last_ts END"
)
_SQLITE_ADD_ROLLUPS = (
    f"INSERT INTO rollups ({_ROLLUP_COLUMNS})"
    " SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6,"
    " value->>7 FROM json_each(?) WHERE true" + _ADD_ROLLUPS.format(min="min", max="max")
)
_PG_ADD_ROLLUPS = (
    f"INSERT INTO rollups ({_ROLLUP_COLUMNS})"
    " SELECT * FROM unnest($1::integer[], $2::bigint[], $3::integer[], $4::float8[],"
    " $5::float8[], $6::float8[], $7::bigint[], $8::float8[])"
    + _ADD_ROLLUPS.format(min="least", max="greatest")
)
# After a batch that replaced values: the minutes it touched, recomputed from the samples as
# they now are. The newest value of a minute is read by its key (SQLite: with several min()
# and max() in one query, its bare-column rule does not say which row a bare ``num`` is from).
_REPLACE_ROLLUPS = (
    " ON CONFLICT (series_id, minute) DO UPDATE SET count_num = excluded.count_num,"
    " sum_num = excluded.sum_num, min_num = excluded.min_num, max_num = excluded.max_num,"
    " last_ts = excluded.last_ts, last_num = excluded.last_num"
)
_SQLITE_RECOMPUTE_ROLLUPS = (
    f"INSERT INTO rollups ({_ROLLUP_COLUMNS})"
    " SELECT g.sid, g.minute, g.n, g.total, g.lo, g.hi, g.last_ts,"
    " (SELECT s.num FROM samples s WHERE s.series_id = g.sid AND s.ts = g.last_ts)"
    " FROM (SELECT t.sid, t.minute, count(s.num) AS n, total(s.num) AS total,"
    " min(s.num) AS lo, max(s.num) AS hi, max(s.ts) AS last_ts"
    " FROM (SELECT value->>0 AS sid, value->>1 AS minute FROM json_each(?)) t JOIN samples s"
    " ON s.series_id = t.sid AND s.ts >= t.minute AND s.ts < t.minute + 60000"
    " GROUP BY t.sid, t.minute) g WHERE true" + _REPLACE_ROLLUPS
)
_PG_RECOMPUTE_ROLLUPS = (
    f"INSERT INTO rollups ({_ROLLUP_COLUMNS})"
    " SELECT s.series_id, t.minute, count(s.num), coalesce(sum(s.num), 0), min(s.num),"
    " max(s.num), max(s.ts), (array_agg(s.num ORDER BY s.ts DESC))[1]"
    " FROM unnest($1::integer[], $2::bigint[]) AS t(series_id, minute) JOIN samples s"
    " ON s.series_id = t.series_id AND s.ts >= t.minute AND s.ts < t.minute + 60000"
    " GROUP BY s.series_id, t.minute" + _REPLACE_ROLLUPS
)
# PostgreSQL's COPY cannot replace; batches holding an instant already stored (or one instant
# twice) go through a staging table instead, with the same last-wins rule.
_PG_STAGING = (
    "CREATE TEMP TABLE IF NOT EXISTS samples_incoming"
    " (n bigint, series_id integer, ts bigint, num float8, txt varchar(256))"
    " ON COMMIT DELETE ROWS"
)
_PG_MERGE_STAGED = (
    "INSERT INTO samples (series_id, ts, num, txt)"
    " SELECT DISTINCT ON (series_id, ts) series_id, ts, num, txt FROM samples_incoming"
    " ORDER BY series_id, ts, n DESC"
    " ON CONFLICT (series_id, ts) DO UPDATE SET num = excluded.num, txt = excluded.txt"
)
_ROWS_JSON = msgspec.json.Encoder()
_PRESENCE_SEVERITY = {
    "online": "info",
    "offline": "warning",
    "stale": "warning",
    "unreachable": "warning",
}


def value_kind(value: bool | int | float | str) -> str:
    """The series kind a first value gives: ``bool``, ``number`` or ``text``."""
    if isinstance(value, bool):
        return "bool"
    return "text" if isinstance(value, str) else "number"


class IngestWriter:
    """Writes batches; keeps the ``(device, key) → series id`` map that ingest needs.

    Args:
        engine: for reading the sequence state at start.
        writes: where commits run (the hub's SQLite writer thread; by default transactions
            of ``engine``).
    """

    def __init__(self, engine: AsyncEngine, writes: Writes | None = None) -> None:
        self._engine = engine
        self._writes = writes or EngineWrites(engine)
        self._series: dict[str, dict[str, int]] = {}  # device → key → series id
        self._dialect = engine.dialect.name
        self._insert = sqlite.insert if self._dialect == "sqlite" else postgresql.insert
        newest = (
            select(samples.c.ts, samples.c.num, samples.c.txt)
            .where(samples.c.series_id == series.c.id)
            .order_by(samples.c.ts.desc())
            .limit(1)
        )
        # One statement for every series a batch touched (an IN list, not one parameter set
        # per series: SQLAlchemy's per-row handling cost twice the statement, measured).
        self._update_latest = (
            update(series)
            .where(series.c.id.in_(bindparam("ids", expanding=True)))
            .values(
                last_ts=newest.with_only_columns(samples.c.ts).scalar_subquery(),
                last_num=newest.with_only_columns(samples.c.num).scalar_subquery(),
                last_txt=newest.with_only_columns(samples.c.txt).scalar_subquery(),
            )
        )
        self._ledger = SeqLedger(self._dialect)
        self._update_presence = (
            update(devices)
            .where(devices.c.id == bindparam("b_id"))
            .values(
                presence=bindparam("b_presence"),
                presence_since=bindparam("b_since"),
                presence_reason=bindparam("b_reason"),
                connected=bindparam("b_connected"),
            )
        )

    @property
    def storage(self) -> StorageHealth:
        """Where the commits' outcomes go: whether the store can be written, and how long a
        batch it could not take waits before the next try."""
        return self._writes.storage

    async def load_trackers(self) -> dict[str, SeqTracker]:
        """Sequence state of every registered device, as last committed."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(devices.c.id, devices.c.acked_seq, received.c.seq).outerjoin(
                    received,
                    (received.c.device_id == devices.c.id) & (received.c.seq > devices.c.acked_seq),
                )
            )
            trackers: dict[str, SeqTracker] = {}
            for row in rows:
                tracker = trackers.setdefault(row.id, SeqTracker(row.acked_seq))
                if row.seq is not None:
                    tracker.above.add(row.seq)
            return trackers

    def forget_device(self, device_id: str) -> None:
        """Drop cached series ids of a deleted device."""
        self._series.pop(device_id, None)

    async def write(self, batch: Batch) -> tuple[Batch, dict[str, SeqTracker]]:
        """Commit ``batch``; return what of it was stored (its messages that no commit, of
        this hub or another, stored before) and the sequence state of each touched device
        once committed (``ingest/ledger.py``)."""
        now = now_ms()

        def job(conn: Connection) -> tuple[Batch, dict[str, SeqTracker], dict[str, dict[str, int]]]:
            fresh, advanced = self._ledger.record(conn, batch.seqs, now)
            stored = batch if len(fresh) == batch.messages else batch.only(fresh)
            grown = self._write_samples(conn, stored) if stored.telemetry else {}
            if stored.events:
                conn.execute(events.insert(), [_event_row(d, r, e) for d, r, e in stored.events])
                announced = [
                    row for d, r, e in stored.events if e.media for row in media_rows(d, r, e)
                ]
                if announced:  # the promise "pictures are coming", stored with the event
                    conn.execute(media.insert(), announced)
            if stored.states:
                self._merge_states(conn, stored)
            if stored.presence:
                self._write_presence(conn, stored)
            return stored, advanced, grown

        # Series made by this batch are known only once it is committed: ids of a rolled-back
        # insert would be given to other series later.
        stored, advanced, grown = await self._writes.run(job)
        self._series.update(grown)
        return stored, advanced

    def _write_samples(self, conn: Connection, batch: Batch) -> dict[str, dict[str, int]]:
        # Per value, a dict lookup, a tuple and the update of its minute's aggregate: this
        # loop runs for every point ingested. Aggregating here costs less than a GROUP BY of
        # the batch in SQL, which sorts every row (docs/benchmarks.md, Ingest). Numbers and
        # booleans go to the REAL column as they are (the engine stores 0/1 and floats); the
        # newest value per series is then read back by the database itself, one index seek per
        # series touched, instead of being tracked here per point.
        touched, grown = self._resolve_series(conn, batch)
        rows: list[tuple[int, int, bool | int | float | None, str | None]] = []
        append = rows.append
        # minute -> series id -> [count, sum, min, max, newest ts, its number]: as rollups.
        minutes: dict[int, dict[int, list[Any]]] = {}
        for device_id, message in batch.telemetry:
            ids = grown.get(device_id) or self._series[device_id]
            for ts, values in message.instants():
                minute = ts - ts % 60_000
                rolled = minutes.get(minute)
                if rolled is None:
                    rolled = minutes[minute] = {}
                for key, value in values.items():
                    series_id = ids[key]
                    rollup = rolled.get(series_id)
                    if isinstance(value, str):
                        append((series_id, ts, None, value))
                        if rollup is None:
                            rolled[series_id] = [0, 0.0, None, None, ts, None]
                        elif ts >= rollup[4]:
                            rollup[4], rollup[5] = ts, None
                        continue
                    append((series_id, ts, value, None))
                    if rollup is None:
                        rolled[series_id] = [1, float(value), value, value, ts, value]
                        continue
                    if rollup[0]:
                        rollup[1] += value
                        if value < rollup[2]:
                            rollup[2] = value
                        elif value > rollup[3]:
                            rollup[3] = value
                    else:  # the first number of a minute that so far had text only
                        rollup[1], rollup[2], rollup[3] = float(value), value, value
                    rollup[0] += 1
                    if ts >= rollup[4]:
                        rollup[4], rollup[5] = ts, value
        groups = [
            (series_id, minute, *rollup)
            for minute, rolled in minutes.items()
            for series_id, rollup in rolled.items()
        ]
        self._insert_samples(conn, rows, groups)
        conn.execute(self._update_latest, {"ids": sorted(touched)})
        return grown

    def _insert_samples(
        self,
        conn: Connection,
        rows: list[tuple[int, int, float | None, str | None]],
        groups: list[tuple[Any, ...]],
    ) -> None:
        # The hot path bypasses SQLAlchemy's per-row parameter handling (more than half the cost
        # of an insert, measured). On SQLite the whole batch goes in as one JSON array read by
        # json_each: one statement step, so the driver releases the GIL once per batch instead
        # of around every row, and the event loop no longer slows the insert (163k -> 205k
        # points/s in benchmarks/ingest.py). On PostgreSQL, COPY, inside a savepoint so that a
        # batch repeating an instant falls back to the merging path. Same transaction either way
        # (asyncpg's COPY is awaited through the adapted connection's ``run_async``: this code
        # runs in ``AsyncConnection.run_sync``). The rollups of the batch's minutes follow, in
        # the same transaction: ``groups`` added when every row was new, else the touched
        # minutes recomputed (module docstring).
        if not rows:
            return
        if self._dialect == "sqlite":
            batch_json = (_ROWS_JSON.encode(rows),)
            inserted = conn.exec_driver_sql(_SQLITE_INSERT_NEW_SAMPLES, batch_json).rowcount
            if inserted == len(rows):
                conn.exec_driver_sql(_SQLITE_ADD_ROLLUPS, (_ROWS_JSON.encode(groups),))
            else:  # an instant already stored, or one twice: last wins, then recount
                conn.exec_driver_sql(_SQLITE_INSERT_SAMPLES, batch_json)
                touched = _ROWS_JSON.encode([group[:2] for group in groups])
                conn.exec_driver_sql(_SQLITE_RECOMPUTE_ROLLUPS, (touched,))
            return
        adapted: Any = conn.connection.dbapi_connection
        try:
            with conn.begin_nested():
                adapted.run_async(
                    lambda pg: pg.copy_records_to_table(
                        "samples", records=rows, columns=_SAMPLE_COLUMNS
                    )
                )
        except asyncpg.UniqueViolationError:
            conn.exec_driver_sql(_PG_STAGING)
            adapted.run_async(
                lambda pg: pg.copy_records_to_table(
                    "samples_incoming",
                    records=[(n, *row) for n, row in enumerate(rows)],
                    columns=("n", *_SAMPLE_COLUMNS),
                )
            )
            conn.exec_driver_sql(_PG_MERGE_STAGED)
            series_ids, minutes = [group[0] for group in groups], [group[1] for group in groups]
            adapted.run_async(lambda pg: pg.execute(_PG_RECOMPUTE_ROLLUPS, series_ids, minutes))
            return
        columns = list(zip(*groups, strict=True))
        adapted.run_async(lambda pg: pg.execute(_PG_ADD_ROLLUPS, *columns))

    def _resolve_series(
        self, conn: Connection, batch: Batch
    ) -> tuple[set[int], dict[str, dict[str, int]]]:
        """Make sure every (device, key) of the batch has a series; return the ids touched and
        the key → id maps of the devices that got a new series (kept once committed)."""
        keys_by_device: dict[str, dict[str, bool | int | float | str]] = {}
        for device_id, message in batch.telemetry:
            seen = keys_by_device.setdefault(device_id, {})
            for _ts, values in message.instants():
                seen.update(values)  # key -> a value, for the kind of a new series
        missing = [
            (device_id, key, value_kind(value))
            for device_id, seen in keys_by_device.items()
            for key, value in seen.items()
            if key not in self._series.get(device_id, {})
        ]
        grown: dict[str, dict[str, int]] = {}
        if missing:
            conn.execute(
                self._insert(series)
                .values([{"device_id": d, "key": k, "kind": kind} for d, k, kind in missing])
                .on_conflict_do_nothing(index_elements=["device_id", "key"])
            )
            rows = conn.execute(
                select(series.c.id, series.c.device_id, series.c.key).where(
                    series.c.device_id.in_({d for d, _, _ in missing})
                )
            )
            for row in rows:
                grown.setdefault(row.device_id, {})[row.key] = row.id
        known = {**self._series, **grown}
        return {
            known[device_id][key] for device_id, seen in keys_by_device.items() for key in seen
        }, grown

    def _merge_states(self, conn: Connection, batch: Batch) -> None:
        by_device: dict[str, list[Any]] = {}
        for device_id, state in batch.states:
            by_device.setdefault(device_id, []).append(state)
        rows = conn.execute(
            select(devices.c.id, devices.c.reported, devices.c.reported_ts).where(
                devices.c.id.in_(by_device)
            )
        )
        updates = []
        for row in rows:
            reported = dict(row.reported or {})
            reported_ts = row.reported_ts
            for state in sorted(by_device[row.id], key=lambda s: s.seq):
                for key, value in state.state.items():
                    if value is None:
                        reported.pop(key, None)
                    else:
                        reported[key] = value
                reported_ts = max(reported_ts or 0, state.ts)
            updates.append({"b_id": row.id, "b_reported": reported, "b_ts": reported_ts})
        conn.execute(
            update(devices)
            .where(devices.c.id == bindparam("b_id"))
            .values(reported=bindparam("b_reported"), reported_ts=bindparam("b_ts")),
            updates,
        )

    def _write_presence(self, conn: Connection, batch: Batch) -> None:
        conn.execute(
            self._update_presence,
            [
                {
                    "b_id": p.device_id,
                    "b_presence": p.presence,
                    "b_since": p.since,
                    "b_reason": p.reason,
                    "b_connected": p.connected,
                }
                for p in batch.presence
            ],
        )
        conn.execute(
            events.insert(),
            [
                {
                    "device_id": p.device_id,
                    "seq": None,
                    "ts": p.since,
                    "received_at": p.since,
                    "type": f"presence.{p.presence}",
                    "severity": _PRESENCE_SEVERITY.get(p.presence, "info"),
                    "message": p.reason,
                    "data": {"connected": p.connected},
                }
                for p in batch.presence
            ],
        )


def _event_row(device_id: str, received_at: int, event: Any) -> dict[str, Any]:
    return {
        "device_id": device_id,
        "seq": event.seq,
        "ts": event.ts,
        "received_at": received_at,
        "type": event.type,
        "severity": event.severity,
        "message": event.message,
        "data": event.data,
    }
