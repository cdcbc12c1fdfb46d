"""Flapping: a (device, rule) whose alarm is raised and cleared over and over.

A sensor on the edge of its threshold, or a loose contact, can raise and clear an alarm every
minute; a notification for each wakes people for nothing. So each raise and clear of a
(device, rule) is counted in ``alarm_flapping`` (the database, so the count and the settling
time survive a restart and are shared by every hub); more than the rule's
``flapping.changes`` within ``flapping.window_s`` and the pair **flaps**: its alarms are
marked ``flapping`` and their changes are not notified. Once the pair has been quiet for
``window_s``, it **settles**: one ``settled`` change, notified, says the alarm's state now
(:func:`settle`, run by the sweeper).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection

from fieldhub.hub.alarms.rules import DEFAULT_FLAPPING, Flapping, Rule
from fieldhub.hub.store.schema import alarm_flapping

__all__ = ["count_change", "forget_rule", "settled_pairs"]

MAX_KEPT: Final = 1000
"""Change times kept per pair: beyond any sensible ``flapping.changes``."""


def count_change(conn: Connection, device_id: str, rule: Flapping, rule_id: str, at: int) -> bool:
    """Count one raise or clear of (device, rule) at ``at``; True when the pair flaps now."""
    where = (alarm_flapping.c.device_id == device_id) & (alarm_flapping.c.rule_id == rule_id)
    row = conn.execute(select(alarm_flapping).where(where)).first()
    since = at - rule.window_s * 1000
    changes = [t for t in (row.changes if row is not None else []) if t > since][-MAX_KEPT:]
    changes.append(at)
    flapping_since = row.flapping_since if row is not None else None
    if flapping_since is None and len(changes) > rule.changes:
        flapping_since = at
    values = {"changes": changes, "flapping_since": flapping_since}
    if row is None:
        conn.execute(insert(alarm_flapping).values(device_id=device_id, rule_id=rule_id, **values))
    else:
        conn.execute(update(alarm_flapping).where(where).values(values))
    return flapping_since is not None


def settled_pairs(conn: Connection, rules: Mapping[str, Rule], now: int) -> list[tuple[str, str]]:
    """The flapping (device, rule) pairs quiet for their window as of ``now``: forgotten here
    (the caller tells of them), with the pairs of deleted rules."""
    settled = []
    for row in conn.execute(
        select(alarm_flapping).where(alarm_flapping.c.flapping_since.is_not(None))
    ):
        rule = rules.get(row.rule_id)
        window_ms = (rule.flapping if rule is not None else DEFAULT_FLAPPING).window_s * 1000
        last = max(row.changes, default=row.flapping_since)
        if now - last >= window_ms:
            settled.append((row.device_id, row.rule_id))
    for device_id, rule_id in settled:
        conn.execute(
            delete(alarm_flapping).where(
                (alarm_flapping.c.device_id == device_id) & (alarm_flapping.c.rule_id == rule_id)
            )
        )
    return settled


def forget_rule(conn: Connection, rule_id: str) -> None:
    """A rule was changed or deleted: its pairs count afresh (like its pending timers)."""
    conn.execute(delete(alarm_flapping).where(alarm_flapping.c.rule_id == rule_id))
