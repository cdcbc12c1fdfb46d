"""Escalation: an alarm nobody acknowledges is told again, to more people, until someone does.

A rule may name an escalation *policy* (``escalation: night-shift``): steps, each
``after_s`` seconds after the raise, to some channels, then a reminder every
``repeat_every_s`` up to ``repeat_limit`` times. Why the whole plan is written when the alarm
is raised, in the engine's own transaction (:func:`escalate`), as held outbox rows
(``not_before``): the outbox already delivers durably, once per dedup key, across restarts and
hubs; a plan kept anywhere else would need a second clock that survives both.

Stopping is the other half, and it must be as reliable, because a message sent after someone
took the alarm is the bug people hate most:

- in the transaction that acknowledges or clears the alarm, its pending steps become
  ``cancelled`` with the reason (:func:`escalate` hears those changes too);
- when the worker claims a step, :func:`screen` looks at the alarm once more: acknowledged or
  cleared, the step is cancelled instead of sent; shelved, it waits until the shelving ends
  (no escalation while shelved). An alarm raised inside a maintenance window escalates
  counting from the window's end.

The dedup key ``escalation:<alarm>:<step|repeat>:<n>:channel:<id>`` makes each message once,
also when two hubs hear the same raise or a round is retried.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from fieldhub.hub.alarms.changes import AlarmChange
from fieldhub.hub.notify.media_links import announced_media
from fieldhub.hub.notify.outbox import enqueue
from fieldhub.hub.notify.records import NewNotification, NotificationRecord
from fieldhub.hub.store.schema import (
    alarm_escalations,
    alarm_rules,
    alarms,
    escalation_policies,
    notifications,
)

__all__ = [
    "EVENT_REMINDER",
    "EVENT_STEP",
    "MAX_CHANNELS",
    "MAX_REPEATS",
    "MAX_STEPS",
    "Policy",
    "Step",
    "escalate",
    "policy_from_row",
    "screen",
]

EVENT_STEP: Final = "alarm.escalated"
EVENT_REMINDER: Final = "alarm.reminder"
MAX_STEPS: Final = 10
MAX_CHANNELS: Final = 10
MAX_REPEATS: Final = 50
"""Bounds of a policy: one raise enqueues at most (10 steps + 50 reminders) times 10 channels."""
_KEYS_PER_STATEMENT: Final = 500


@dataclass(frozen=True, slots=True)
class Step:
    """Tell ``channels`` when the alarm is still unacknowledged ``after_s`` after its raise."""

    after_s: int
    channels: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Policy:
    """A stored escalation policy."""

    id: str
    name: str
    steps: tuple[Step, ...]
    repeat_every_s: int | None
    repeat_limit: int
    created_at: int = 0
    updated_at: int = 0
    updated_by: str = ""

    def plan(self) -> Iterator[tuple[str, int, int, tuple[int, ...]]]:
        """Every message of the policy: ``(kind, number, seconds after the raise, channels)``,
        kind ``step`` (numbered from 1) or ``repeat`` (the last step's channels again)."""
        for number, step in enumerate(self.steps, start=1):
            yield "step", number, step.after_s, step.channels
        if self.repeat_every_s and self.steps:
            last = self.steps[-1]
            for number in range(1, self.repeat_limit + 1):
                yield "repeat", number, last.after_s + number * self.repeat_every_s, last.channels

    def steps_as_json(self) -> list[dict[str, Any]]:
        """The steps as stored and answered."""
        return [{"after_s": s.after_s, "channels": list(s.channels)} for s in self.steps]


def policy_from_row(row: Any) -> Policy:
    """A policy from its ``escalation_policies`` row."""
    return Policy(
        id=row.id,
        name=row.name,
        steps=tuple(Step(int(s["after_s"]), tuple(s["channels"])) for s in row.steps),
        repeat_every_s=row.repeat_every_s,
        repeat_limit=row.repeat_limit,
        created_at=row.created_at,
        updated_at=row.updated_at,
        updated_by=row.updated_by,
    )


def escalate(conn: Connection, changes: list[AlarmChange]) -> None:
    """The engine's hook (``AlarmEngine.on_change``), in the transaction of ``changes``:
    a raise enqueues its rule's policy; an acknowledgement or a clear cancels what is left."""
    raised = [change for change in changes if change.kind == "raised"]
    if raised:
        _plan(conn, raised)
    for change in changes:
        if change.kind in ("acknowledged", "cleared"):
            _cancel(conn, change.alarm_id, _why(change.alarm_id, change.kind, change.actor))


def screen(conn: Connection, due: list[NotificationRecord], now: int) -> set[str]:
    """The worker's last look (``outbox.Screen``): escalation messages of alarms no longer
    active are cancelled, those of shelved alarms wait until the shelving ends."""
    ids = [n.id for n in due]
    rows = conn.execute(
        select(
            alarm_escalations.c.notification_id,
            alarms.c.id,
            alarms.c.state,
            alarms.c.acknowledged_by,
            alarms.c.cleared_by,
            alarms.c.shelved_until,
        )
        .select_from(alarm_escalations.join(alarms, alarms.c.id == alarm_escalations.c.alarm_id))
        .where(alarm_escalations.c.notification_id.in_(ids))
    ).all()
    held: set[str] = set()
    for notification_id, alarm_id, state, acked_by, cleared_by, shelved_until in rows:
        if state != "active":
            who = acked_by if state == "acknowledged" else cleared_by
            _cancel_ids(conn, [notification_id], _why(alarm_id, state, who or "someone"))
        elif shelved_until is not None and shelved_until > now:
            conn.execute(
                update(notifications)
                .where(notifications.c.id == notification_id)
                .values(next_attempt_at=shelved_until, leased_by=None)
            )
        else:
            continue
        held.add(notification_id)
    return held


def _why(alarm_id: int, state: str, actor: str) -> str:
    return f"alarm {alarm_id} was {state} by {actor}"


def _plan(conn: Connection, raised: Sequence[AlarmChange]) -> None:
    policy_of_rule = _policies_of_rules(conn, {change.rule_id for change in raised})
    items: list[NewNotification] = []
    for change in raised:
        policy = policy_of_rule.get(change.rule_id)
        if policy is not None:
            items.extend(_messages(change, policy))
    if not items:
        return
    enqueue(conn, items, now=min(change.at for change in raised))
    alarm_of_key = {item.dedup_key: int(item.body["alarm"]) for item in items}
    keys = list(alarm_of_key)
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    # In slices: a storm of raises stays far below SQLite's limit of bound values (32,766).
    for start in range(0, len(keys), _KEYS_PER_STATEMENT):
        found = conn.execute(
            select(notifications.c.id, notifications.c.dedup_key).where(
                notifications.c.dedup_key.in_(keys[start : start + _KEYS_PER_STATEMENT])
            )
        )
        rows = [{"notification_id": r.id, "alarm_id": alarm_of_key[r.dedup_key]} for r in found]
        # Keys enqueued before (a round retried after its commit) are linked already.
        conn.execute(dialect.insert(alarm_escalations).values(rows).on_conflict_do_nothing())


def _policies_of_rules(conn: Connection, rule_ids: Iterable[str]) -> dict[str, Policy]:
    """The policy each rule names (rules naming none, or a policy gone, are left out)."""
    named: dict[str, str] = {}
    for row in conn.execute(
        select(alarm_rules.c.id, alarm_rules.c.definition).where(alarm_rules.c.id.in_(rule_ids))
    ):
        policy_id = (row.definition or {}).get("escalation")
        if isinstance(policy_id, str):
            named[row.id] = policy_id
    if not named:
        return {}
    policies = {
        row.id: policy_from_row(row)
        for row in conn.execute(
            select(escalation_policies).where(escalation_policies.c.id.in_(set(named.values())))
        )
    }
    return {rule: policies[p] for rule, p in named.items() if p in policies}


def _messages(change: AlarmChange, policy: Policy) -> Iterator[NewNotification]:
    what = change.rule_name or change.rule_id
    # Raised inside a maintenance window: the steps count from the window's end (nobody is
    # escalated to for what the people at work are doing).
    start = max(change.at, change.hold_until or 0)
    for kind, number, after_s, channels in policy.plan():
        event = EVENT_STEP if kind == "step" else EVENT_REMINDER
        label = f"step {number}" if kind == "step" else f"reminder {number}"
        subject = (
            f"[{change.severity.upper()}] {what} on {change.device_id}: not acknowledged"
            f" after {_duration(after_s)} ({label})"
        )
        body = {
            "alarm": change.alarm_id,
            "rule": change.rule_id,
            "rule_name": change.rule_name,
            "device": change.device_id,
            "labels": dict(change.device_labels),
            "severity": change.severity,
            "change": "escalated" if kind == "step" else "reminder",
            "state": "active",
            "raised_at": change.at,
            "message": change.message,
            "value": change.value,
            "policy": policy.id,
            kind: number,
            **announced_media(change),
        }
        for channel_id in channels:
            yield NewNotification(
                channel_id=channel_id,
                dedup_key=f"escalation:{change.alarm_id}:{kind}:{number}:channel:{channel_id}",
                event=event,
                subject=subject[:256],
                body=body,
                not_before=start + after_s * 1000,
            )


def _cancel(conn: Connection, alarm_id: int, reason: str) -> None:
    mine = alarm_escalations.join(
        notifications, notifications.c.id == alarm_escalations.c.notification_id
    )
    pending = [
        row.id
        for row in conn.execute(
            select(notifications.c.id)
            .select_from(mine)
            .where(alarm_escalations.c.alarm_id == alarm_id, notifications.c.state == "pending")
        )
    ]
    if pending:
        _cancel_ids(conn, pending, reason)


def _cancel_ids(conn: Connection, ids: list[str], reason: str) -> None:
    """Cancel those of ``ids`` still pending. The state is compared through ``coalesce`` so
    that SQLite finds the rows by id: on the state index it scanned every pending
    notification (measured: 30 ms per acknowledgement with 16,000 held steps, not 1)."""
    conn.execute(
        update(notifications)
        .where(notifications.c.id.in_(ids), func.coalesce(notifications.c.state, "") == "pending")
        .values(state="cancelled", leased_by=None, last_error=reason)
    )


def _duration(seconds: int) -> str:
    if seconds % 3600 == 0 and seconds:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0 and seconds:
        return f"{seconds // 60} min"
    return f"{seconds} s"
