"""The hub's tables, written for append-order ingest.

Telemetry is stored one row per value in ``samples`` keyed by a small integer ``series_id``
(one series per device and key) instead of the device id and key strings: rows stay narrow and
the history index ``(series_id, ts)`` compares integers. The latest value of each series lives
in ``series`` itself so that "latest values" never scans history.

Timestamps are epoch milliseconds (``BigInteger``) everywhere, as on the wire.
Alembic migrations in ``migrations/versions`` create exactly these tables; a test compares them.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

devices = Table(
    "devices",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(128), nullable=False, default=""),
    Column("labels", JSON, nullable=False, default=dict),  # {"site": "berlin", "group": "atm"}
    Column("attributes", JSON, nullable=False, default=dict),  # free-form, set by operators
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    # Ingest bookkeeping: highest contiguous committed seq and committed seqs above it.
    Column("acked_seq", BigInteger, nullable=False, default=0),
    Column("seq_above", JSON, nullable=False, default=list),
    Column("last_seen", BigInteger, nullable=True),  # hub clock, last committed message
    # Presence, derived by the hub (see hub/presence.py), with when and why it last changed.
    Column("connected", Boolean, nullable=True),
    Column("presence", String(16), nullable=False, default="unknown"),
    Column("presence_since", BigInteger, nullable=True),
    Column("presence_reason", String(256), nullable=False, default=""),
    # Reported state, merged key by key from `state` messages.
    Column("reported", JSON, nullable=False, default=dict),
    Column("reported_ts", BigInteger, nullable=True),
)

series = Table(
    "series",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("device_id", String(64), nullable=False),
    Column("key", String(64), nullable=False),
    Column("kind", String(8), nullable=False),  # number | bool | text: how values are rendered
    Column("last_ts", BigInteger, nullable=True),
    Column("last_num", Float, nullable=True),
    Column("last_txt", String(256), nullable=True),
    UniqueConstraint("device_id", "key", name="uq_series_device_key"),
)

samples = Table(
    "samples",
    metadata,
    Column("series_id", Integer, nullable=False),
    Column("ts", BigInteger, nullable=False),
    Column("num", Float, nullable=True),  # numbers and booleans (0/1)
    Column("txt", String(256), nullable=True),  # text values
    # One value per series and millisecond; a later value for the same instant replaces the
    # earlier one (last wins, as in time-series stores). On SQLite the table is clustered on
    # this key (WITHOUT ROWID): one B-tree instead of table plus index, 12-20 % faster inserts,
    # 4.6x faster range reads of one series, 43 % smaller (docs/benchmarks.md).
    PrimaryKeyConstraint("series_id", "ts", name="pk_samples"),
    sqlite_with_rowid=False,
)

events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("device_id", String(64), nullable=False),
    Column("seq", BigInteger, nullable=True),  # null for events the hub itself raised
    Column("ts", BigInteger, nullable=False),
    Column("received_at", BigInteger, nullable=False),
    Column("type", String(64), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("message", Text, nullable=False, default=""),
    Column("data", JSON, nullable=False, default=dict),
    Index("ix_events_device_ts", "device_id", "ts"),
    Index("ix_events_ts", "ts"),
)

ALL_TABLES = (devices, series, samples, events)
