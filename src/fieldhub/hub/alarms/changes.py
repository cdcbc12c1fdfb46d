"""The seam between alarms and whoever must hear of their changes (notifications, live API).

Two ways to hear, for two needs:

- an :data:`AlarmHook` runs *inside the write job* that stores the change, with its
  ``Connection``: what it writes commits or rolls back with the change itself. The
  notification outbox uses it, so a notification is enqueued exactly when its alarm change
  is committed (never for a change that was rolled back, never lost to a crash in between).
  A hook must be quick, must not await, and must write only through ``conn``; raising undoes
  the whole round of changes: the engine reloads its state from the store and raises again
  when the condition is next seen (a user's request fails instead, with nothing changed).
- an :data:`AlarmListener` runs after the commit, on the event loop, for what may lag or be
  lost with the process (pushing to WebSocket clients).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy.engine import Connection

from fieldhub.protocol.media import MediaRef

__all__ = ["AlarmChange", "AlarmHook", "AlarmListener", "ChangeKind"]

ChangeKind = Literal[
    "raised",
    "acknowledged",
    "cleared",
    "shelved",
    "unshelved",
    "settled",
    "assigned",
    "commented",
    "maintenance",  # its maintenance mark ended (the sweeper): live, and to those who ask
]


@dataclass(frozen=True, slots=True)
class AlarmChange:
    """One change of one alarm, as committed."""

    alarm_id: int
    rule_id: str
    rule_name: str
    device_id: str
    severity: str
    kind: ChangeKind
    at: int  # epoch ms, hub clock
    actor: str  # "hub" for the engine, else the user ("user:alice")
    message: str
    value: Any = None
    device_labels: Mapping[str, str] = field(default_factory=dict)
    state: str = "active"  # the alarm's state after the change
    comment: str = ""
    hold_until: int | None = None
    """Epoch ms until which its notifications wait (a maintenance window's end), or None."""
    in_maintenance: bool = False  # made while a maintenance window covers the alarm
    flapping: bool = False  # its (device, rule) flaps: notified only once it settles
    media: tuple[MediaRef, ...] = ()
    """What the event that raised it announced (a raise by an event only): notifications link
    each object (``notify/media_links.py``), which may still be on its way."""


AlarmHook = Callable[[Connection, list[AlarmChange]], None]
"""Runs in the write transaction that stores the changes (see the module's text)."""
AlarmListener = Callable[[list[AlarmChange]], None]
"""Runs after the commit, on the event loop."""
