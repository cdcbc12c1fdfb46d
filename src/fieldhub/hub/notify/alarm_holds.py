"""Held alarm notifications: what the routing does with a change's maintenance and flapping
marks (``hub/alarms/marks.py``), in one place whatever the routing becomes.

- A change with ``hold_until`` (made inside a maintenance window) is sent at the window's end:
  the routing sets ``NewNotification.not_before`` to it.
- A clear made inside the window whose raise is still held (raised inside it too) drops both:
  the raise's pending notifications are marked dead ("skipped: …") and the clear is not
  sent. Nobody is told after the window about a problem that came and went during the work.
  A raise inside the window still open at its end is sent then.
- A change of a flapping pair is not sent; its ``settled`` change is.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from fieldhub.hub.alarms.changes import AlarmChange
from fieldhub.hub.store.schema import alarms, notifications

__all__ = ["SKIPPED", "muted"]

SKIPPED: Final = "skipped: raised and cleared inside a maintenance window"


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
        update(notifications).where(held_raise).values(state="dead", last_error=SKIPPED)
    )
    return bool(cancelled.rowcount)
