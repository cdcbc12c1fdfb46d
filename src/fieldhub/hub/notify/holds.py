"""When a routed message may be sent: the one place that computes its ``not_before``.

A message is held, never dropped: in the subscription's quiet hours it waits in the outbox
until they end (a change of a severity that passes quiet hours goes at once). Other holds
(a maintenance window) belong here too, so that every message, single or digest, obeys them
all.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from fieldhub.hub.notify.subscriptions import QuietHours, Subscription

__all__ = ["not_before", "quiet_until"]


def not_before(subscription: Subscription, severity: str, at: int) -> int | None:
    """Epoch ms before which a message of ``severity`` for ``subscription``, made at ``at``,
    must not be sent; None: at once."""
    quiet = subscription.quiet_hours
    if quiet is None or severity in quiet.passing:
        return None
    return quiet_until(quiet, at)


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
