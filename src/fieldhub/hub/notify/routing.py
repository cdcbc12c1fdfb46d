"""Alarm changes to the people who chose to hear them, in the transaction storing the change.

Each change goes to every enabled subscription (of an enabled channel) whose filter wants it
(``Subscription.wants``: change kind, severity, rule, site) and whose owner may see its device
(``Principal.sees``, the rule of the REST routes; a disabled owner hears nothing). Then the
subscription's grouping and rate limit decide (``digest.Grouper``): sent at once, or gathered
for a digest. What is sent at once is held by ``holds.not_before`` (quiet hours, maintenance
windows); ``holds.muted`` keeps back what is not sent at all (flapping, a problem that came
and went inside a maintenance window).

What is due at once is handed to this hub's delivery worker with the enqueue (a lease taken in
the same transaction, ``outbox.py``): after the commit the worker reads and sends it, with no
claim of its own (:meth:`AlarmRouter.hand_to`).

One notification per (alarm change, subscription): the dedup key makes the enqueue
idempotent, so a retried round notifies once.

What routing decided is counted (:class:`RoutingStats`, on ``/metrics``), so an operator who
hears nothing can tell "nobody subscribed" from "nobody may see that site": changes routed,
recipients (at once or gathered), changes that reached nobody and why, messages held and why.
They are counted in the round's transaction: a round that is rolled back and retried (rare)
counts twice.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy.engine import Connection

from fieldhub.clock import now_ms
from fieldhub.hub.alarms.changes import AlarmChange
from fieldhub.hub.notify import subscription_store
from fieldhub.hub.notify.digest import Grouper
from fieldhub.hub.notify.holds import muted, not_before
from fieldhub.hub.notify.media_links import announced_media
from fieldhub.hub.notify.outbox import Lease, enqueue
from fieldhub.hub.notify.records import NewNotification
from fieldhub.hub.notify.subscriptions import Subscription

__all__ = ["DROP_REASONS", "HOLD_REASONS", "AlarmRouter", "RoutingStats"]

DropReason = Literal[
    "no_subscriber", "site_not_visible", "disabled_user", "flapping", "maintenance"
]
DROP_REASONS: tuple[DropReason, ...] = (
    "no_subscriber",
    "site_not_visible",
    "disabled_user",
    "flapping",
    "maintenance",
)
"""Why a change reached nobody: no subscription wants it; only owners who may not see its
device do; only disabled owners do; its (device, rule) flaps; it came and went inside a
maintenance window (``holds.muted``)."""
HOLD_REASONS = ("quiet_hours", "maintenance")
"""Why a message waits in the outbox (``holds.not_before``)."""


@dataclass(slots=True)
class RoutingStats:
    """What routing decided, since the hub started."""

    routed: int = 0
    """Changes that reached at least one subscription."""
    recipients: Counter[str] = field(default_factory=Counter)
    """Subscriptions reached, by ``now`` (a message) or ``digest`` (gathered)."""
    dropped: Counter[str] = field(default_factory=Counter)
    """Changes that reached nobody, by :data:`DROP_REASONS`."""
    held: Counter[str] = field(default_factory=Counter)
    """Messages enqueued to wait, by :data:`HOLD_REASONS`."""


class AlarmRouter:
    """The engine's hook (``AlarmEngine.on_change``), counting what it decides."""

    def __init__(self) -> None:
        self.stats = RoutingStats()
        self._lease: Callable[[int], Lease] | None = None

    def hand_to(self, lease: Callable[[int], Lease]) -> None:
        """Lease what is due at once with ``lease(now)`` as it is enqueued (the delivery
        worker's ``lease``), so that worker sends it without claiming it."""
        self._lease = lease

    def route(self, conn: Connection, changes: list[AlarmChange]) -> None:
        """Route ``changes`` in their own write transaction (after the commit,
        ``NotificationService.wake`` delivers them and lets the digest flusher see groups
        opened)."""
        if not changes:
            return
        routes, silenced = subscription_store.routes(conn)
        now = now_ms()
        grouper = Grouper(conn, (subscription for subscription, _ in routes), now)
        messages = []
        for change in changes:
            if muted(conn, change):
                self.stats.dropped["flapping" if change.flapping else "maintenance"] += 1
                continue
            wanted = [(s, owner) for s, owner in routes if s.wants(change)]
            reached = [s for s, owner in wanted if owner.sees(change.device_labels)]
            if not reached:
                self.stats.dropped[_nobody(change, wanted, silenced)] += 1
                continue
            self.stats.routed += 1
            for subscription in reached:
                if not grouper.send_now(subscription, change):
                    self.stats.recipients["digest"] += 1
                    continue
                message = _message(subscription, change)
                messages.append(message)
                self.stats.recipients["now"] += 1
                if message.not_before is not None:
                    held_by = "quiet_hours" if change.hold_until is None else "maintenance"
                    self.stats.held[held_by] += 1
        if messages:
            lease = self._lease(now) if self._lease is not None else None
            enqueue(conn, messages, now=now, lease=lease)
        grouper.save(conn)


def _nobody(change: AlarmChange, wanted: list[Any], silenced: list[Subscription]) -> DropReason:
    if wanted:
        return "site_not_visible"
    if any(subscription.wants(change) for subscription in silenced):
        return "disabled_user"
    return "no_subscriber"


def _message(subscription: Subscription, change: AlarmChange) -> NewNotification:
    return NewNotification(
        channel_id=subscription.channel_id,
        # With the change's time: an alarm is shelved (or acknowledged) more than once.
        dedup_key=f"alarm:{change.alarm_id}:{change.kind}:{change.at}:subscription:{subscription.id}",
        event=f"alarm.{change.kind}",
        subject=_subject(change),
        body=_body(change),
        not_before=not_before(subscription, change.severity, change.at, change.hold_until),
        subscription_id=subscription.id,
        recipients=subscription.recipients,
    )


def _subject(change: AlarmChange) -> str:
    what = change.rule_name or change.rule_id
    return f"[{change.severity.upper()}] {what} on {change.device_id}: {change.kind}"[:256]


def _body(change: AlarmChange) -> dict[str, Any]:
    return {
        "alarm": change.alarm_id,
        "rule": change.rule_id,
        "rule_name": change.rule_name,
        "device": change.device_id,
        "labels": dict(change.device_labels),
        "severity": change.severity,
        "change": change.kind,
        "state": change.state,
        "at": change.at,
        "by": change.actor,
        "message": change.message,
        "value": change.value,
        "comment": change.comment,
        "in_maintenance": change.in_maintenance,
        **announced_media(change),
    }
