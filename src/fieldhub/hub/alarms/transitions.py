"""Alarm transitions: what one evaluation round changes, and how a change is written.

The engine (``engine.py``) decides; this module records: each transition is a small value
(:class:`Raise`, :class:`Gone`, :class:`Back`) that :func:`apply` turns into rows of
``alarms`` and ``alarm_changes`` inside the round's write job, and into the
:class:`~fieldhub.hub.alarms.changes.AlarmChange` the hooks and listeners are told of.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.engine import Connection

from fieldhub.hub.alarms.changes import AlarmChange
from fieldhub.hub.alarms.rules import Rule
from fieldhub.hub.devices.directory import DeviceDirectory
from fieldhub.hub.store.alarms import add_change, insert_alarm, update_alarm
from fieldhub.hub.store.schema import alarms
from fieldhub.protocol.media import MediaRef

__all__ = [
    "HUB_ACTOR",
    "Back",
    "Gone",
    "Op",
    "OpenAlarm",
    "Pair",
    "PairKey",
    "Raise",
    "Round",
    "apply",
]

HUB_ACTOR: Final = "hub"
"""How history and changes name the engine as the actor."""
PairKey = tuple[str, str]  # (device id, rule id)


@dataclass(slots=True)
class OpenAlarm:
    """What the engine keeps of an open alarm (``id`` is None until its raise commits)."""

    id: int | None
    state: str
    condition_active: bool
    raised_at: int


@dataclass(slots=True)
class Pair:
    """Evaluation state of one rule on one device."""

    active: bool = False  # the condition holds (after hysteresis)
    pending_since: int | None = None  # active, waiting for for_s
    gone_since: int | None = None  # gone (or event seen), waiting to clear
    alarm: OpenAlarm | None = None
    pending_value: tuple[Any, str] = (None, "")  # what made it pending: raised with it


@dataclass(slots=True)
class Raise:
    """Open a new alarm (or adopt the one another writer opened first)."""

    key: PairKey
    rule: Rule
    alarm: OpenAlarm
    value: Any
    message: str
    media: tuple[MediaRef, ...] = ()  # of the event that raised it


@dataclass(slots=True)
class Gone:
    """The condition is gone for good: clear the alarm (``clear``) or latch it."""

    key: PairKey
    rule: Rule
    alarm: OpenAlarm
    at: int
    clear: bool
    reason: str


@dataclass(slots=True)
class Back:
    """The condition of a latched alarm holds again."""

    key: PairKey
    rule: Rule
    alarm: OpenAlarm


Op = Raise | Gone | Back


@dataclass(slots=True)
class Round:
    """What one evaluation round writes: transitions, and the pairs whose timers changed."""

    at: int
    ops: list[Op] = field(default_factory=list)
    timers: set[PairKey] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.ops or self.timers)


def apply(conn: Connection, op: Op, at: int, directory: DeviceDirectory) -> AlarmChange | None:
    device_id, rule = op.key[0], op.rule
    entry = directory.get(device_id)
    labels = dict(entry.labels) if entry is not None else {}
    alarm = op.alarm
    if isinstance(op, Raise):
        alarm_id = insert_alarm(
            conn,
            {
                "rule_id": rule.id,
                "device_id": device_id,
                "severity": rule.severity,
                "state": "active",
                "condition_active": True,
                "raised_at": at,
                "value": op.value,
                "message": op.message[:1024],
                "updated_at": at,
            },
        )
        if alarm_id is None:  # another writer's alarm is open: adopt it, raise nothing
            row = conn.execute(
                select(alarms.c.id, alarms.c.state, alarms.c.raised_at).where(
                    (alarms.c.device_id == device_id)
                    & (alarms.c.rule_id == rule.id)
                    & (alarms.c.state != "cleared")
                )
            ).one()
            alarm.id, alarm.state, alarm.raised_at = row.id, row.state, row.raised_at
            return None
        alarm.id = alarm_id
        add_change(
            conn,
            alarm_id,
            at=at,
            actor=HUB_ACTOR,
            kind="raised",
            from_state=None,
            to_state="active",
            comment=op.message[:1024],
        )
        return AlarmChange(
            alarm_id,
            rule.id,
            rule.name,
            device_id,
            rule.severity,
            "raised",
            at,
            HUB_ACTOR,
            op.message,
            op.value,
            labels,
            "active",
            media=op.media,
        )
    if alarm.id is None:
        return None
    if isinstance(op, Back):
        update_alarm(conn, alarm.id, {"condition_active": True, "updated_at": at})
        add_change(
            conn,
            alarm.id,
            at=at,
            actor=HUB_ACTOR,
            kind="returned",
            from_state=alarm.state,
            to_state=alarm.state,
            comment="condition back",
        )
        return None
    if not op.clear:
        update_alarm(conn, alarm.id, {"condition_active": False, "updated_at": at})
        add_change(
            conn,
            alarm.id,
            at=at,
            actor=HUB_ACTOR,
            kind="latched",
            from_state=alarm.state,
            to_state=alarm.state,
            comment="condition gone, not acknowledged",
        )
        return None
    update_alarm(
        conn,
        alarm.id,
        {
            "state": "cleared",
            "condition_active": False,
            "cleared_at": at,
            "cleared_by": HUB_ACTOR,
            "clear_reason": op.reason,
            "updated_at": at,
        },
    )
    add_change(
        conn,
        alarm.id,
        at=at,
        actor=HUB_ACTOR,
        kind="cleared",
        from_state=alarm.state,
        to_state="cleared",
        comment=op.reason,
    )
    return AlarmChange(
        alarm.id,
        rule.id,
        rule.name,
        device_id,
        rule.severity,
        "cleared",
        at,
        HUB_ACTOR,
        op.reason,
        None,
        labels,
        "cleared",
    )
