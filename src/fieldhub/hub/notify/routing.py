"""Alarm changes to the people who chose to hear them, in the transaction storing the change.

Each change goes to every enabled subscription (of an enabled channel) whose filter wants it
(``Subscription.wants``: change kind, severity, rule, site) and whose owner may see its device
(``Principal.sees``, the rule of the REST routes; a disabled owner hears nothing). Then the
subscription's grouping and rate limit decide (``digest.Grouper``): sent at once, or gathered
for a digest. What is sent at once is held by ``holds.not_before`` (quiet hours, maintenance
windows); ``holds.muted`` keeps back what is not sent at all (flapping, a problem that came
and went inside a maintenance window).

One notification per (alarm change, subscription): the dedup key makes the enqueue
idempotent, so a retried round notifies once.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Connection

from fieldhub.clock import now_ms
from fieldhub.hub.alarms.changes import AlarmChange
from fieldhub.hub.notify import subscription_store
from fieldhub.hub.notify.digest import Grouper
from fieldhub.hub.notify.holds import muted, not_before
from fieldhub.hub.notify.outbox import enqueue
from fieldhub.hub.notify.records import NewNotification
from fieldhub.hub.notify.subscriptions import Subscription

__all__ = ["alarm_notifications"]


def alarm_notifications(conn: Connection, changes: list[AlarmChange]) -> None:
    """The engine's hook (``AlarmEngine.on_change``): route ``changes`` in their own write
    transaction (after the commit, ``NotificationService.wake`` delivers them and lets the
    digest flusher see groups opened)."""
    if not changes:
        return
    routes = subscription_store.routable(conn)
    if not routes:
        return
    now = now_ms()
    grouper = Grouper(conn, (subscription for subscription, _ in routes), now)
    messages = [
        _message(subscription, change)
        for change in changes
        if not muted(conn, change)
        for subscription, owner in routes
        if subscription.wants(change)
        and owner.sees(change.device_labels)
        and grouper.send_now(subscription, change)
    ]
    enqueue(conn, messages, now=now)
    grouper.save(conn)


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
    }
