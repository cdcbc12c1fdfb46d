"""Grouping and rate limits: an outage of 200 devices is one digest, not 200 messages.

A *group* is (subscription, rule, change kind). Its first change is sent at once and opens
the group for the subscription's ``group_interval_s``; the changes that follow within it are
*gathered*, one row each, and sent as one digest: the first 10 s after the first message
(:data:`FIRST_DIGEST_MS`), the next ones when the interval ends. A digest keeps the
group open for one more interval (a flood that goes on makes one digest per interval); an
interval that gathered nothing closes the group, and the next change is again sent at once.

A change held by a maintenance window (``AlarmChange.hold_until``) is gathered like the
others but waits for the window's end before a digest lists it, as a message would
(``holds.py``); so when its problem clears inside the window, ``holds.muted`` can still take
it out, and nobody hears of it.

The rate limit (``max_per_hour`` messages per subscription, counted in the outbox over the
last hour) rolls the excess into the next digest: a change over the limit is gathered, and a
digest over the limit waits until a message of the last hour is an hour old.

Durable and exact: groups and gathered changes are rows written in the transaction that
stores the alarm change; a digest is enqueued in the same transaction that deletes what it
lists, with a dedup key naming its first row. A hub that stops in the middle of a group
loses nothing and sends nothing twice: the next start (or another hub) flushes it when due.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any, Final

from sqlalchemy import delete, func, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from fieldhub.clock import now_ms
from fieldhub.hub.alarms.changes import AlarmChange
from fieldhub.hub.notify import subscription_store
from fieldhub.hub.notify.holds import not_before
from fieldhub.hub.notify.outbox import enqueue
from fieldhub.hub.notify.records import NewNotification
from fieldhub.hub.notify.subscriptions import Subscription, severity_rank
from fieldhub.hub.store.schema import notification_gathered as gathered
from fieldhub.hub.store.schema import notification_groups as groups
from fieldhub.hub.store.schema import notifications
from fieldhub.hub.store.writes import Writes

__all__ = ["DigestFlusher", "Grouper", "flush_due"]

log = logging.getLogger(__name__)

HOUR_MS: Final = 3_600_000
FIRST_DIGEST_MS: Final = 10_000
"""A group's first digest comes this long after its first message (or at ``group_interval_s``
when that is shorter): when a site goes dark, its first device is told at once and the list of
the others 10 s later, not a whole interval later. The group stays open for the interval."""
MAX_DIGEST_ITEMS: Final = 1000
"""A digest lists at most this many changes; the rest make the next one, at once."""
_GROUPS_PER_FLUSH: Final = 50
HOLD_KEY: Final = "hold_until"
"""In a gathered change's item: until when a maintenance window holds it (never listed)."""

GroupKey = tuple[int, str, str]  # subscription, rule, change kind


@dataclass(slots=True)
class _Rate:
    """A subscription's messages in the last hour: how many, and the oldest's time."""

    sent: int = 0
    oldest: int | None = None

    def free_at(self, now: int) -> int:
        """When the oldest message of the hour leaves it (a slot frees)."""
        return (self.oldest if self.oldest is not None else now) + HOUR_MS


def _rates(conn: Connection, subscription_ids: Iterable[int], now: int) -> dict[int, _Rate]:
    ids = list(subscription_ids)
    rates: dict[int, _Rate] = defaultdict(_Rate)
    if not ids:
        return rates
    query = (
        select(
            notifications.c.subscription_id,
            func.count().label("sent"),
            func.min(notifications.c.created_at).label("oldest"),
        )
        .where(
            notifications.c.subscription_id.in_(ids),
            notifications.c.created_at > now - HOUR_MS,
        )
        .group_by(notifications.c.subscription_id)
    )
    for row in conn.execute(query):
        rates[row.subscription_id] = _Rate(int(row.sent), int(row.oldest))
    return rates


def _item(change: AlarmChange) -> dict[str, Any]:
    """A change as a digest lists it."""
    return {
        "alarm": change.alarm_id,
        "rule_name": change.rule_name,
        "device": change.device_id,
        "labels": dict(change.device_labels),
        "severity": change.severity,
        "at": change.at,
        "message": change.message,
        "value": change.value,
        "state": change.state,
        "by": change.actor,
        "in_maintenance": change.in_maintenance,
        HOLD_KEY: change.hold_until,
    }


class Grouper:
    """Decides, in one routing round (one write transaction), which changes go at once and
    which are gathered; :meth:`save` writes the groups opened and the changes gathered."""

    def __init__(self, conn: Connection, subscriptions: Iterable[Subscription], now: int) -> None:
        by_id = {s.id: s for s in subscriptions}
        self._now = now
        self._rates = _rates(conn, by_id, now)
        self._open: set[GroupKey] = set()
        if by_id:
            query = select(groups.c.subscription_id, groups.c.rule_id, groups.c.kind).where(
                groups.c.subscription_id.in_(list(by_id))
            )
            self._open = {(r.subscription_id, r.rule_id, r.kind) for r in conn.execute(query)}
        self._opened: dict[GroupKey, int] = {}
        self._gathered: list[dict[str, Any]] = []

    def send_now(self, subscription: Subscription, change: AlarmChange) -> bool:
        """True: send ``change`` now (counted against the rate); False: it was gathered."""
        key = (subscription.id, change.rule_id, change.kind)
        rate = self._rates[subscription.id]
        if key not in self._open:
            interval_ms = subscription.group_interval_s * 1000
            if rate.sent < subscription.max_per_hour:
                rate.sent += 1
                rate.oldest = self._now if rate.oldest is None else rate.oldest
                if interval_ms:
                    self._open_group(key, self._now + min(interval_ms, FIRST_DIGEST_MS))
                return True
            self._open_group(key, max(self._now + interval_ms, rate.free_at(self._now)))
        self._gathered.append(
            {
                "subscription_id": subscription.id,
                "rule_id": change.rule_id,
                "kind": change.kind,
                "alarm_id": change.alarm_id,
                "severity": change.severity,
                "at": change.at,
                "item": _item(change),
            }
        )
        return False

    def _open_group(self, key: GroupKey, flush_at: int) -> None:
        self._open.add(key)
        self._opened[key] = flush_at

    def save(self, conn: Connection) -> None:
        """Write the groups this round opened and the changes it gathered."""
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        if self._opened:
            rows = [
                {
                    "subscription_id": s,
                    "rule_id": r,
                    "kind": k,
                    "opened_at": self._now,
                    "flush_at": at,
                }
                for (s, r, k), at in self._opened.items()
            ]
            conn.execute(dialect.insert(groups).values(rows).on_conflict_do_nothing())
        if self._gathered:
            # One statement for many parameter sets: compiled once and cached, where a
            # multi-row VALUES of a new length would be compiled again for every round.
            conn.execute(dialect.insert(gathered).on_conflict_do_nothing(), self._gathered)


def flush_due(conn: Connection, *, now: int) -> tuple[int, int | None]:
    """Send the digests of the groups due at ``now``; a write job. Returns how many digests
    were enqueued and when the next group is due (None: no group open)."""
    query = (
        select(groups)
        .where(groups.c.flush_at <= now)
        .order_by(groups.c.flush_at)
        .limit(_GROUPS_PER_FLUSH)
        .with_for_update(skip_locked=True)
    )
    due = conn.execute(query).mappings().all()
    enqueued = 0
    if due:
        ids = sorted({row["subscription_id"] for row in due})
        routes = {s.id: (s, owner) for s, owner in subscription_store.routable(conn, ids)}
        rates = _rates(conn, ids, now)
        for row in due:
            key: GroupKey = (row["subscription_id"], row["rule_id"], row["kind"])
            route = routes.get(key[0])
            enqueued += _flush(conn, key, route, rates[key[0]], now, row["opened_at"])
    next_due = conn.execute(select(func.min(groups.c.flush_at))).scalar()
    return enqueued, None if next_due is None else int(next_due)


def _group(key: GroupKey) -> Any:
    return tuple_(groups.c.subscription_id, groups.c.rule_id, groups.c.kind) == key


def _flush(
    conn: Connection,
    key: GroupKey,
    route: tuple[Subscription, Any] | None,
    rate: _Rate,
    now: int,
    opened_at: int,
) -> int:
    """One due group: its digest (1) or nothing (0)."""
    of_group = (
        gathered.c.subscription_id == key[0],
        gathered.c.rule_id == key[1],
        gathered.c.kind == key[2],
    )
    if route is None:
        # Disabled (the subscription, its channel or its owner) or deleted: a disabled user
        # receives nothing, so what was gathered is dropped with the group.
        conn.execute(delete(gathered).where(*of_group))
        conn.execute(delete(groups).where(_group(key)))
        return 0
    subscription, owner = route
    rows = conn.execute(
        select(gathered.c.id, gathered.c.item)
        .where(*of_group)
        .order_by(gathered.c.id)
        .limit(MAX_DIGEST_ITEMS + 1)
    ).all()
    if not rows:
        open_until = opened_at + subscription.group_interval_s * 1000
        if now < open_until:  # the early first digest had no news: the interval still holds
            conn.execute(update(groups).where(_group(key)).values(flush_at=open_until))
        else:  # an interval without news: the group closes
            conn.execute(delete(groups).where(_group(key)))
        return 0
    taken = [row for row in rows if (row.item.get(HOLD_KEY) or 0) <= now]
    held_until = min((row.item[HOLD_KEY] for row in rows if row not in taken), default=None)
    if not taken:  # all wait for the end of their maintenance window
        conn.execute(update(groups).where(_group(key)).values(flush_at=held_until))
        return 0
    if rate.sent >= subscription.max_per_hour:  # rolled into the next digest
        conn.execute(update(groups).where(_group(key)).values(flush_at=rate.free_at(now)))
        return 0
    more = len(rows) > MAX_DIGEST_ITEMS
    taken = taken[:MAX_DIGEST_ITEMS]
    # Visibility again, at the digest's enqueue: the owner's sites may have changed since.
    items = [_listed(row.item) for row in taken if owner.sees(row.item.get("labels", {}))]
    conn.execute(delete(gathered).where(gathered.c.id.in_([row.id for row in taken])))
    next_at = now if more else now + subscription.group_interval_s * 1000
    if held_until is not None:
        next_at = min(next_at, held_until)
    conn.execute(update(groups).where(_group(key)).values(flush_at=next_at))
    if not items:
        return 0
    rate.sent += 1
    return enqueue(conn, [_digest(subscription, key, taken[0].id, items, now)], now=now)


def _listed(item: dict[str, Any]) -> dict[str, Any]:
    """A gathered change as its digest lists it: its hold is the hub's business."""
    return {name: value for name, value in item.items() if name != HOLD_KEY}


def _digest(
    subscription: Subscription, key: GroupKey, first_id: int, items: list[dict[str, Any]], now: int
) -> NewNotification:
    _, rule_id, kind = key
    severity = min((item["severity"] for item in items), key=severity_rank)
    rule_name = next((i.get("rule_name") for i in items if i.get("rule_name")), rule_id)
    count = len(items)
    devices = sorted({item["device"] for item in items})
    what = f"{count} more device{'s' if len(devices) != 1 else ''}"
    return NewNotification(
        channel_id=subscription.channel_id,
        # The first gathered row's id is unique to this digest: enqueued twice (a retried
        # transaction, two hubs), it is one notification.
        dedup_key=f"digest:{subscription.id}:{rule_id}:{kind}:{first_id}",
        event="alarm.digest",
        subject=f"[{severity.upper()}] {rule_name} on {what}: {kind}",
        body={
            "digest": True,
            "rule": rule_id,
            "rule_name": rule_name,
            "change": kind,
            "severity": severity,
            "count": count,
            "devices": devices,
            "alarms": items,
        },
        not_before=not_before(subscription, severity, now),
        subscription_id=subscription.id,
        recipients=subscription.recipients,
    )


class DigestFlusher:
    """The task that sends digests when their groups are due (one per hub process; a second
    hub flushing the same group is harmless: rows are locked and dedup keys hold)."""

    def __init__(
        self,
        writes: Writes,
        delivered: Callable[[], None],
        *,
        poll_s: float = 5.0,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self._writes = writes
        self._delivered = delivered
        self._poll_s = poll_s
        self._clock = clock
        self._wake = asyncio.Event()
        self._stopping = False

    def wake(self) -> None:
        """Look again now (a group may have opened with an earlier due time)."""
        self._wake.set()

    def stop(self) -> None:
        """End :meth:`run` after the flush under way (nothing is cut off mid-transaction)."""
        self._stopping = True
        self._wake.set()

    async def flush(self) -> tuple[int, int | None]:
        """Send the digests due now; how many were enqueued, and when the next group is due
        (None: none open)."""
        enqueued, next_due = await self._writes.run(
            partial(flush_due, now=self._clock()), urgent=True
        )
        if enqueued:
            self._delivered()
        return enqueued, next_due

    async def run(self) -> None:
        """Flush due groups until :meth:`stop`."""
        while not self._stopping:
            self._wake.clear()
            wait = self._poll_s
            try:
                _, next_due = await self.flush()
            except (SQLAlchemyError, OSError) as exc:  # the store is down: try again later
                log.debug("cannot flush notification digests: %s", exc)
            else:
                if next_due is not None:
                    wait = min(wait, max(0.0, (next_due - self._clock()) / 1000))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()
