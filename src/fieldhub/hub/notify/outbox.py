"""The outbox: notifications in the database, as write jobs and reads.

Every write here is a *job* (``store/writes.py``): a sync function of a ``Connection`` inside
an open write transaction. :func:`enqueue` is the seam for the alarms engine: called inside
the job that stores an alarm change, the notification commits with the change or not at all.
After the commit the caller wakes the worker (``NotificationService.wake``); without that the
worker still finds it on its next round.

Claiming leases a row instead of locking it for the send: the claim moves ``next_attempt_at``
past the attempt's time limit and names the hub instance, in a short transaction; the send runs
outside any transaction; the outcome is recorded in another. A hub that dies meanwhile leaves
the row pending: another hub takes it when the lease runs out, the same instance at once when
it starts again (:func:`release_leases`). On PostgreSQL, ``FOR UPDATE SKIP LOCKED`` keeps two
hubs claiming at the same moment from taking the same rows.

A notification enqueued with an alarm change and due at once is leased already by the
enqueue (its ``lease``: the hub instance whose engine wrote the change), and that instance's
worker finds it with a read (:func:`handed`) instead of a claim. The claim is a write job, and
on SQLite's one writer it waits for the ingest commit under way (hundreds of milliseconds on a
loaded machine): the alarm benchmark's largest share of raise → webhook. The lease is the
claim's, so nothing else changes: another hub takes the row when it runs out, this one at its
next start.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from sqlalchemy import and_, delete, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.ext.asyncio import AsyncEngine

from fieldhub.clock import now_ms
from fieldhub.hub.errors import Invalid
from fieldhub.hub.notify.records import (
    ChannelRecord,
    DeliveryRecord,
    NewNotification,
    NotificationNotFound,
    NotificationRecord,
    State,
)
from fieldhub.hub.store.schema import (
    notification_channels as channels,
)
from fieldhub.hub.store.schema import (
    notification_deliveries as deliveries,
)
from fieldhub.hub.store.schema import (
    notifications,
)

__all__ = [
    "MAX_DEDUP_KEY",
    "Lease",
    "Screen",
    "claim",
    "enqueue",
    "get",
    "handed",
    "list_notifications",
    "prune",
    "record_attempt",
    "release_leases",
]

MAX_DEDUP_KEY: Final = 256
MAX_SUBJECT: Final = 256
MAX_EVENT: Final = 64
MAX_ERROR: Final = 1024
_ROWS_PER_INSERT: Final = 500

Lease = tuple[str, int]
"""``(hub instance, until)``, epoch ms: whose a notification enqueued due at once is, and how
long, before anyone claimed it (see the module's text)."""
Screen = Callable[[Connection, list[NotificationRecord], int], set[str]]
"""A last look at due notifications before they are leased, in the claim's transaction (with
the time): returns the ids it held back, which it has moved itself (cancelled, or due later).
Escalation uses it: a step whose alarm was acknowledged meanwhile is never sent."""


def _new_id() -> str:
    return secrets.token_hex(16)


def _row(item: NewNotification, now: int, lease: Lease | None) -> dict[str, Any]:
    if not 0 < len(item.dedup_key) <= MAX_DEDUP_KEY:
        raise Invalid(
            f"dedup_key {item.dedup_key[:40]!r}... must have 1 to {MAX_DEDUP_KEY} characters",
            ("dedup_key",),
        )
    if not 0 < len(item.event) <= MAX_EVENT:
        raise Invalid(
            f"event {item.event[:80]!r} must have 1 to {MAX_EVENT} characters", ("event",)
        )
    due, leased_by = max(now, item.not_before or now), None
    if lease is not None and due <= now:
        leased_by, due = lease
    return {
        "id": _new_id(),
        "channel_id": item.channel_id,
        "dedup_key": item.dedup_key,
        "event": item.event,
        # A subject is made from device names and rule texts: cut, never refused.
        "subject": item.subject[:MAX_SUBJECT],
        "body": item.body,
        "created_at": now,
        "state": "pending",
        "attempts": 0,
        "next_attempt_at": due,
        "leased_by": leased_by,
        "delivered_at": None,
        "last_error": "",
        "subscription_id": item.subscription_id,
        "recipients": list(item.recipients),
    }


def enqueue(
    conn: Connection,
    items: Sequence[NewNotification],
    *,
    now: int | None = None,
    lease: Lease | None = None,
) -> int:
    """Add ``items`` to the outbox, in the caller's transaction; how many were new.

    ``now`` (epoch ms, default the clock) is their creation and first due time (or an
    item's ``not_before``, when later). With ``lease``, those due at once are leased to its
    instance (:func:`handed`).

    Idempotent on ``dedup_key``: a key already in the outbox (in any state) is skipped, by the
    database (``INSERT … ON CONFLICT DO NOTHING``), so two transactions racing with the same
    key also add one.

    Raises:
        Invalid: a dedup key or event out of bounds (the transaction fails: it is a bug).
    """
    if now is None:
        now = now_ms()
    seen: set[str] = set()
    rows = []
    for item in items:
        if item.dedup_key not in seen:
            seen.add(item.dedup_key)
            rows.append(_row(item, now, lease))
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    added = 0
    # In slices: one statement's bound values stay far below SQLite's limit (32,766).
    for start in range(0, len(rows), _ROWS_PER_INSERT):
        statement = (
            dialect.insert(notifications)
            .values(rows[start : start + _ROWS_PER_INSERT])
            .on_conflict_do_nothing(index_elements=["dedup_key"])
        )
        added += int(conn.execute(statement).rowcount or 0)
    return added


def id_for(conn: Connection, dedup_key: str) -> str | None:
    """The id of the notification enqueued with ``dedup_key`` (None: none)."""
    found = conn.execute(
        select(notifications.c.id).where(notifications.c.dedup_key == dedup_key)
    ).scalar()
    return None if found is None else str(found)


def _notification(row: RowMapping) -> NotificationRecord:
    return NotificationRecord(
        id=row["id"],
        channel_id=row["channel_id"],
        dedup_key=row["dedup_key"],
        event=row["event"],
        subject=row["subject"],
        body=row["body"],
        created_at=row["created_at"],
        state=row["state"],
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"],
        delivered_at=row["delivered_at"],
        last_error=row["last_error"],
        recipients=tuple(row["recipients"] or ()),
    )


def channel_record(row: Mapping[Any, Any]) -> ChannelRecord:
    """A channel from its row."""
    return ChannelRecord(
        id=row["id"],
        name=row["name"],
        kind=row["kind"],
        config=row["config"],
        enabled=row["enabled"],
        created_at=row["created_at"],
        created_by=row["created_by"],
    )


# A notification is deliverable while its channel is enabled; one whose channel is gone is
# claimed too, to be marked dead (it would otherwise wait forever).
_DELIVERABLE = or_(channels.c.id.is_(None), channels.c.enabled.is_(True))
_JOINED = notifications.outerjoin(channels, channels.c.id == notifications.c.channel_id)
_CHANNEL_COLUMNS = [c.label(f"ch_{c.name}") for c in channels.c]


def _with_channel(row: RowMapping) -> tuple[NotificationRecord, ChannelRecord | None]:
    channel = None
    if row["ch_id"] is not None:
        channel = channel_record({c.name: row[f"ch_{c.name}"] for c in channels.c})
    return _notification(row), channel


async def handed(
    engine: AsyncEngine, *, instance: str, now: int, limit: int, skip: set[str]
) -> list[tuple[NotificationRecord, ChannelRecord | None]]:
    """Up to ``limit`` notifications enqueued leased to ``instance`` (``enqueue``'s ``lease``,
    still running) and never tried, but those in ``skip`` (being sent, or sent and not
    recorded: their lease must run out first); with their channel. A read, not a claim: the
    lease was taken with the enqueue."""
    query = (
        select(notifications, *_CHANNEL_COLUMNS)
        .select_from(_JOINED)
        .where(
            notifications.c.state == "pending",
            notifications.c.next_attempt_at > now,
            notifications.c.leased_by == instance,
            notifications.c.attempts == 0,
            _DELIVERABLE,
        )
        .order_by(notifications.c.created_at)
        .limit(limit + len(skip))
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).mappings().all()
    found = [_with_channel(row) for row in rows if row["id"] not in skip]
    return found[:limit]


def claim(
    conn: Connection,
    *,
    now: int,
    limit: int,
    lease_ms: int,
    instance: str,
    screen: Screen | None = None,
) -> tuple[list[tuple[NotificationRecord, ChannelRecord | None]], int | None]:
    """Lease up to ``limit`` due notifications to ``instance``; with when the next one is due.

    A write job. Returns the claimed notifications with their channel (None: deleted) and the
    earliest ``next_attempt_at`` of what stays pending (None: nothing pending). ``screen``
    may hold some back (see :data:`Screen`).
    """
    query = (
        select(notifications, *_CHANNEL_COLUMNS)
        .select_from(_JOINED)
        .where(
            notifications.c.state == "pending",
            notifications.c.next_attempt_at <= now,
            _DELIVERABLE,
        )
        .order_by(notifications.c.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True, of=notifications)
    )
    claimed = [_with_channel(row) for row in conn.execute(query).mappings()]
    if claimed and screen is not None:
        held = screen(conn, [n for n, _ in claimed], now)
        claimed = [pair for pair in claimed if pair[0].id not in held]
    if claimed:
        conn.execute(
            update(notifications)
            .where(notifications.c.id.in_([n.id for n, _ in claimed]))
            .values(next_attempt_at=now + lease_ms, leased_by=instance)
        )
    next_due = conn.execute(
        select(func.min(notifications.c.next_attempt_at))
        .select_from(_JOINED)
        .where(notifications.c.state == "pending", _DELIVERABLE)
    ).scalar()
    return claimed, None if next_due is None else int(next_due)


def record_attempt(
    conn: Connection,
    notification_id: str,
    *,
    at: int,
    ok: bool,
    status: str,
    latency_ms: int,
    error: str,
    state: State,
    next_attempt_at: int,
) -> bool:
    """Log one attempt and move the notification to ``state``; False if it was no longer
    pending (another hub finished it after our lease ran out: the log still has our try)."""
    error = error[:MAX_ERROR]
    conn.execute(
        insert(deliveries).values(
            notification_id=notification_id,
            at=at,
            ok=ok,
            status=status[:64],
            latency_ms=latency_ms,
            error=error,
        )
    )
    changed = conn.execute(
        update(notifications)
        .where(notifications.c.id == notification_id, notifications.c.state == "pending")
        .values(
            state=state,
            attempts=notifications.c.attempts + 1,
            next_attempt_at=next_attempt_at,
            leased_by=None,
            delivered_at=at if ok else None,
            last_error=error,
        )
    )
    return bool(changed.rowcount)


def release_leases(conn: Connection, *, instance: str, now: int) -> int:
    """Make ``instance``'s leased notifications due now (it starts again: none is being sent)."""
    result = conn.execute(
        update(notifications)
        .where(notifications.c.state == "pending", notifications.c.leased_by == instance)
        .values(next_attempt_at=now, leased_by=None)
    )
    return int(result.rowcount or 0)


def bury_channel(conn: Connection, channel_id: int, *, now: int) -> int:
    """Mark the pending notifications of a deleted channel dead, saying why."""
    result = conn.execute(
        update(notifications)
        .where(notifications.c.channel_id == channel_id, notifications.c.state == "pending")
        .values(state="dead", leased_by=None, last_error=f"channel {channel_id} was deleted")
    )
    return int(result.rowcount or 0)


def prune(conn: Connection, *, before: int, limit: int = 5000) -> int:
    """Forget up to ``limit`` delivered and dead notifications created before ``before``,
    with their delivery logs; how many. A write job, kept short by ``limit`` (the worker
    prunes again until none is left). Pending ones are never pruned. A pruned notification's
    dedup key is free again: keys must not repeat within the retention (an alarm id does not).
    """
    old = (
        select(notifications.c.id)
        .where(notifications.c.state != "pending", notifications.c.created_at < before)
        .order_by(notifications.c.created_at)
        .limit(limit)
    )
    ids = [row[0] for row in conn.execute(old)]
    if not ids:
        return 0
    conn.execute(delete(deliveries).where(deliveries.c.notification_id.in_(ids)))
    conn.execute(delete(notifications).where(notifications.c.id.in_(ids)))
    return len(ids)


# -- reads ------------------------------------------------------------------------------------
async def list_notifications(
    engine: AsyncEngine,
    *,
    state: State | None = None,
    channel_id: int | None = None,
    limit: int = 100,
    before: str | None = None,
) -> list[NotificationRecord]:
    """Newest first; ``before`` a notification id: those created before it (a page's cursor)."""
    query = select(notifications)
    if state is not None:
        query = query.where(notifications.c.state == state)
    if channel_id is not None:
        query = query.where(notifications.c.channel_id == channel_id)
    async with engine.connect() as conn:
        if before is not None:
            cursor = (
                await conn.execute(
                    select(notifications.c.created_at).where(notifications.c.id == before)
                )
            ).scalar()
            if cursor is None:
                raise Invalid(f"before={before!r} is no notification", ("query", "before"))
            query = query.where(
                or_(
                    notifications.c.created_at < cursor,
                    and_(notifications.c.created_at == cursor, notifications.c.id < before),
                )
            )
        query = query.order_by(notifications.c.created_at.desc(), notifications.c.id.desc())
        rows = (await conn.execute(query.limit(limit))).mappings().all()
    return [_notification(row) for row in rows]


async def get(
    engine: AsyncEngine, notification_id: str
) -> tuple[NotificationRecord, list[DeliveryRecord]]:
    """One notification with its delivery log, oldest attempt first.

    Raises:
        NotificationNotFound: no such id.
    """
    async with engine.connect() as conn:
        row = (
            (await conn.execute(select(notifications).where(notifications.c.id == notification_id)))
            .mappings()
            .first()
        )
        if row is None:
            raise NotificationNotFound(f"no notification {notification_id!r}")
        log = (
            await conn.execute(
                select(deliveries)
                .where(deliveries.c.notification_id == notification_id)
                .order_by(deliveries.c.at, deliveries.c.id)
            )
        ).mappings()
        attempts = [
            DeliveryRecord(
                at=r["at"],
                ok=r["ok"],
                status=r["status"],
                latency_ms=r["latency_ms"],
                error=r["error"],
            )
            for r in log
        ]
    return _notification(row), attempts
