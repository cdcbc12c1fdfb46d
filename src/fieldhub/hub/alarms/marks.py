"""Marks on alarm changes: maintenance windows and flapping, applied in the write job that
stores the changes, before the hooks (notifications) see them.

One function, :func:`mark`, so that every writer of changes (the engine's rounds, a user's
clear, the sweeper) marks them alike:

- a **raise** inside a maintenance window covering its device and rule: the alarm is marked
  ``in_maintenance`` (a history entry ``maintenance`` says which window and until when), the
  change carries ``hold_until`` = the window's end; a **clear** or **settled** inside one
  carries it too (notifications turn it into ``not_before``, ``notify/holds.py`` drops a
  raise and clear that both fell inside the window);
- a raise or clear of a (device, rule) that flaps (``flapping.py``): the alarm is marked
  ``flapping`` and the change carries ``flapping`` (not notified; one ``settled`` later is).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping

from sqlalchemy.engine import Connection

from fieldhub.hub.alarms.changes import AlarmChange
from fieldhub.hub.alarms.flapping import count_change
from fieldhub.hub.alarms.maintenance import Window
from fieldhub.hub.alarms.rules import Rule
from fieldhub.hub.alarms.windows import load_windows
from fieldhub.hub.store.alarms import add_change, update_alarm

__all__ = ["mark", "window_end"]

_HELD_KINDS = frozenset({"raised", "cleared", "settled"})
_COUNTED_KINDS = frozenset({"raised", "cleared"})


def window_end(
    windows: list[Window], device_id: str, labels: Mapping[str, str], rule_id: str, at: int
) -> tuple[Window, int] | None:
    """The window covering (device, rule) at ``at`` that ends last, with that end."""
    found: tuple[Window, int] | None = None
    for window in windows:
        end = window.open_until(device_id, labels, rule_id, at)
        if end is not None and (found is None or end > found[1]):
            found = (window, end)
    return found


def mark(
    conn: Connection, changes: list[AlarmChange], rules: Mapping[str, Rule]
) -> list[AlarmChange]:
    """``changes`` with their maintenance and flapping marks, the alarms' rows marked too."""
    if not any(change.kind in _HELD_KINDS for change in changes):
        return changes
    windows = load_windows(conn)
    marked = []
    for change in changes:
        held = _maintenance(conn, change, windows) if change.kind in _HELD_KINDS else change
        if held.kind in _COUNTED_KINDS:
            held = _flapping(conn, held, rules.get(held.rule_id))
        marked.append(held)
    return marked


def _maintenance(conn: Connection, change: AlarmChange, windows: list[Window]) -> AlarmChange:
    found = window_end(windows, change.device_id, change.device_labels, change.rule_id, change.at)
    if found is None:
        return change
    window, end = found
    if change.kind == "raised":
        update_alarm(conn, change.alarm_id, {"in_maintenance": True})
        until = dt.datetime.fromtimestamp(end / 1000, dt.UTC).isoformat(timespec="seconds")
        add_change(
            conn,
            change.alarm_id,
            at=change.at,
            actor=change.actor,
            kind="maintenance",
            from_state=change.state,
            to_state=change.state,
            comment=f"maintenance window {window.id} ({window.name[:64]}) until {until}:"
            " notifications held",
        )
    return dataclasses.replace(change, hold_until=end, in_maintenance=True)


def _flapping(conn: Connection, change: AlarmChange, rule: Rule | None) -> AlarmChange:
    if rule is None:
        return change
    if not count_change(conn, change.device_id, rule.flapping, rule.id, change.at):
        return change
    update_alarm(conn, change.alarm_id, {"flapping": True})
    return dataclasses.replace(change, flapping=True)
