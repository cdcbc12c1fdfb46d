"""When a routed message may be sent, and which alarm changes are not sent at all.

A message is held, never dropped: in the subscription's quiet hours it waits in the outbox
until they end (a change of a severity that passes quiet hours goes at once), and a change
made inside a maintenance window (``AlarmChange.hold_until``, set by ``alarms/marks.py``)
waits until the window's end. :func:`not_before` is the one place that computes the hold.

What is not sent (:func:`muted`):

- a clear made inside the window whose raise is still held (raised inside it too) drops
  both: the raise's pending notifications are ``cancelled`` ("skipped: …"), the raise
  gathered for a digest (``digest.py`` holds it until the window's end, like a message) is
  taken out of it, and the clear is not sent. Nobody is told after the window about a
  problem that came and went during the work. A raise inside the window still open at its
  end is sent then, on its own or in a digest;
- a change of a flapping (device, rule) is not sent; its ``settled`` change is.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final

from sqlalchemy import delete, select, update
from sqlalchemy.engine import Connection

from fieldhub.hub.alarms.changes import AlarmChange
from fieldhub.hub.notify.subscriptions import QuietHours, Subscription
from fieldhub.hub.store.schema import alarms, notifications
from fieldhub.hub.store.schema import notification_gathered as gathered

__all__ = ["SKIPPED", "muted", "not_before", "quiet_until"]

SKIPPED: Final = "skipped: raised and cleared inside a maintenance window"


def not_before(
    subscription: Subscription, severity: str, at: int, hold_until: int | None = None
) -> int | None:
    """Epoch ms before which a message of ``severity`` for ``subscription``, made at ``at``
    (held by a maintenance window until ``hold_until``), must not be sent; None: at once."""
    quiet = subscription.quiet_hours
    quiet_end = None if quiet is None or severity in quiet.passing else quiet_until(quiet, at)
    if hold_until is None:
        return quiet_end
    # Out of the window into quiet hours: the quiet hours of the window's end count.
    if quiet is not None and severity not in quiet.passing:
        quiet_end = quiet_until(quiet, hold_until)
    return max(hold_until, quiet_end or 0)


def muted(conn: Connection, change: AlarmChange) -> bool:
    """True when ``change`` is not to be notified (see the module's text); cancels the held
    raise of a clear inside a maintenance window, in the caller's transaction."""
    if change.flapping:
        return True
    if change.kind != "cleared" or change.hold_until is None:
        return False
    raised_inside = conn.execute(
        select(alarms.c.in_maintenance).where(alarms.c.id == change.alarm_id)
    ).scalar()
    if not raised_inside:  # raised before the window: its raise was sent, its clear will be
        return False
    held_raise = (
        (notifications.c.dedup_key.like(f"alarm:{change.alarm_id}:raised:%"))
        & (notifications.c.state == "pending")
        & (notifications.c.leased_by.is_(None))
        & (notifications.c.next_attempt_at > change.at)
    )
    cancelled = conn.execute(
        update(notifications).where(held_raise).values(state="cancelled", last_error=SKIPPED)
    )
    ungathered = conn.execute(
        delete(gathered).where(
            (gathered.c.alarm_id == change.alarm_id) & (gathered.c.kind == "raised")
        )
    )
    return bool(cancelled.rowcount or ungathered.rowcount)


def quiet_until(quiet: QuietHours, at: int) -> int | None:
    """The end (epoch ms) of the quiet period ``at`` falls in; None: ``at`` is not quiet.

    A period starts on one of ``quiet.days`` at ``start`` local time and lasts until the next
    ``end`` (the next day when it crosses midnight); both yesterday's period, which may run
    into today, and today's are looked at.
    """
    zone = quiet.zone
    local = datetime.fromtimestamp(at / 1000, zone)
    for back in (1, 0):
        day = local.date() - timedelta(days=back)
        if day.weekday() not in quiet.days:
            continue
        start = datetime.combine(day, quiet.start, zone)
        end_day = day if quiet.end > quiet.start else day + timedelta(days=1)
        end = datetime.combine(end_day, quiet.end, zone)
        if start <= local < end:
            return int(end.timestamp() * 1000)
    return None
