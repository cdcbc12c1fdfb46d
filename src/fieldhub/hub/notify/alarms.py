"""Alarm changes as notifications, enqueued in the transaction that stores the change.

Until per-user subscriptions exist (issue 13: by site, severity and rule, quiet hours,
escalation), the routing is the simplest one a user can predict: every *enabled* channel hears
every alarm raised and every alarm cleared. Acknowledgements and shelving are a person's own
doing and are not sent. One notification per (alarm, change, channel): the dedup key makes
the enqueue idempotent, so a retried round or a second hub that sees the same change notifies
once.
"""

from __future__ import annotations

from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.engine import Connection

from fieldhub.hub.alarms.changes import AlarmChange
from fieldhub.hub.notify.alarm_holds import muted
from fieldhub.hub.notify.outbox import enqueue
from fieldhub.hub.notify.records import NewNotification
from fieldhub.hub.store.schema import notification_channels

NOTIFIED_KINDS: Final = frozenset({"raised", "cleared", "settled"})


def alarm_notifications(conn: Connection, changes: list[AlarmChange]) -> None:
    """The engine's hook (``AlarmEngine.on_change``): enqueue a notification per enabled
    channel for each raise and clear among ``changes``, in their own write transaction."""
    wanted = [c for c in changes if c.kind in NOTIFIED_KINDS and not muted(conn, c)]
    if not wanted:
        return
    query = select(notification_channels.c.id).where(notification_channels.c.enabled)
    channel_ids = [row.id for row in conn.execute(query)]
    enqueue(
        conn,
        [
            NewNotification(
                channel_id=channel_id,
                dedup_key=f"alarm:{change.alarm_id}:{change.kind}:channel:{channel_id}",
                event=f"alarm.{change.kind}",
                subject=_subject(change),
                body=_body(change),
                not_before=change.hold_until,
            )
            for change in wanted
            for channel_id in channel_ids
        ],
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
