"""What users do with rules and alarms: create, change and delete rules; acknowledge, clear,
shelve, assign and comment on alarms. Every change is one write job holding the change, its
history entry, its audit entry and the engine's hooks (``changes.py``), taken under the
engine's lock so that the engine's memory and the store never disagree.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import insert, select
from sqlalchemy.engine import Connection

from fieldhub.clock import now_ms
from fieldhub.hub.alarms.changes import AlarmChange, ChangeKind
from fieldhub.hub.alarms.engine import AlarmEngine
from fieldhub.hub.alarms.flapping import forget_rule
from fieldhub.hub.alarms.marks import mark
from fieldhub.hub.alarms.rules import Rule, parse_rule
from fieldhub.hub.alarms.sweeper import unshelve_row
from fieldhub.hub.devices.directory import DeviceDirectory
from fieldhub.hub.errors import Conflict, Invalid, Refused
from fieldhub.hub.store.alarms import (
    AlarmChangeRecord,
    AlarmFilter,
    AlarmNotFound,
    AlarmRecord,
    RuleNotFound,
    RuleRow,
    add_change,
    delete_rule,
    delete_rule_states,
    put_rule,
    update_alarm,
)
from fieldhub.hub.store.audit import audit_row
from fieldhub.hub.store.schema import alarm_rules, alarms, audit_log, escalation_policies
from fieldhub.hub.store.writes import Writes

__all__ = ["AlarmService", "StoredRule"]

MAX_SHELVE_MS: Final = 30 * 24 * 3600 * 1000
"""Longest shelving: a month (an alarm put away for longer should be a changed rule)."""


class AlarmCleared(Conflict):
    """The alarm is already cleared: nothing more can happen to it."""


class AlreadyAcknowledged(Conflict):
    """The alarm is already acknowledged."""


class NotShelved(Conflict):
    """The alarm is not shelved."""


class NotClearable(Refused):
    """The alarm's rule does not let users clear its alarms."""


@dataclass(frozen=True, slots=True)
class StoredRule:
    """A rule with its bookkeeping."""

    rule: Rule
    created_at: int
    updated_at: int
    updated_by: str


class AlarmService:
    """Rules and alarms as users change them (the API and the CLI call this)."""

    def __init__(
        self,
        engine: AlarmEngine,
        writes: Writes,
        directory: DeviceDirectory,
        *,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.engine = engine
        self.store = engine.store
        self._writes = writes
        self._directory = directory
        self._clock = clock

    # -- rules ------------------------------------------------------------------------------
    async def rules(self) -> list[StoredRule]:
        """Every valid stored rule, by id."""
        found = []
        for row in await self.store.rules():
            stored = _stored(row)
            if stored is not None:
                found.append(stored)
        return found

    async def rule(self, rule_id: str) -> StoredRule:
        """The rule ``rule_id``.

        Raises:
            RuleNotFound: no such rule (or one no longer valid).
        """
        stored = _stored(await self.store.rule(rule_id))
        if stored is None:
            raise RuleNotFound(f"alarm rule {rule_id!r} is stored but no longer valid")
        return stored

    async def put_rule(
        self,
        raw: Mapping[str, Any],
        *,
        actor: str,
        source: str = "",
        rule_id: str | None = None,
        create: bool,
        loc: tuple[str, ...] = (),
    ) -> StoredRule:
        """Create (``create``) or replace a rule from its dict form (``loc``: where it sits in
        the request, for the errors).

        Raises:
            Invalid: a bad field (see ``rules.parse_rule``).
            Conflict: creating a rule whose id is taken.
            RuleNotFound: replacing a rule that does not exist.
        """
        if create and "id" not in raw:
            rule_id = f"r-{secrets.token_hex(4)}"
        rule = parse_rule(raw, rule_id=rule_id, loc=loc)
        definition = rule.to_dict()
        at = self._clock()

        def job(conn: Connection) -> bool:
            exists = conn.execute(
                select(alarm_rules.c.id).where(alarm_rules.c.id == rule.id)
            ).first()
            if create and exists is not None:
                raise Conflict(f"alarm rule {rule.id!r} exists already")
            if not create and exists is None:
                raise RuleNotFound(f"alarm rule {rule.id!r} does not exist")
            _check_escalation(conn, rule, loc)
            put_rule(conn, rule.id, definition, at, actor)
            delete_rule_states(conn, rule.id)  # a changed rule starts its timers over
            forget_rule(conn, rule.id)  # and its flapping counts
            action = "alarm_rule.created" if create else "alarm_rule.changed"
            conn.execute(
                insert(audit_log).values(
                    audit_row(actor, action, rule.id, source=source, detail=definition, ts=at)
                )
            )
            return True

        async with self.engine.lock:
            await self._writes.run(job, urgent=True)
            self.engine.rule_changed(rule, rule.id)
        return StoredRule(rule, at, at, actor)

    async def delete_rule(self, rule_id: str, *, actor: str, source: str = "") -> None:
        """Delete a rule; its open alarms are cleared ("rule deleted"), its history stays.

        Raises:
            RuleNotFound: no such rule.
        """
        row = await self.store.rule(rule_id)
        name = str(row.definition.get("name", rule_id))
        at = self._clock()
        hooks = list(self.engine.hooks)
        directory = self._directory
        rules = self.engine.index.rules

        def job(conn: Connection) -> list[AlarmChange]:
            open_rows = conn.execute(
                select(alarms).where((alarms.c.rule_id == rule_id) & (alarms.c.state != "cleared"))
            ).all()
            changes = []
            for alarm_row in open_rows:
                record = AlarmRecord.from_row(alarm_row)
                changes.append(_clear(conn, record, name, at, actor, "rule deleted", directory, ""))
            changes = mark(conn, changes, rules)
            delete_rule(conn, rule_id)
            forget_rule(conn, rule_id)
            conn.execute(
                insert(audit_log).values(
                    audit_row(actor, "alarm_rule.deleted", rule_id, source=source, ts=at)
                )
            )
            if changes:
                for hook in hooks:
                    hook(conn, changes)
            return changes

        async with self.engine.lock:
            changes = await self._writes.run(job, urgent=True)
            self.engine.rule_changed(None, rule_id)
        self.engine.published(changes)

    # -- alarms -----------------------------------------------------------------------------
    async def find(self, where: AlarmFilter) -> list[AlarmRecord]:
        """Alarms matching ``where``, newest first."""
        return await self.store.find(where)

    async def alarm(self, alarm_id: int) -> AlarmRecord:
        """The alarm ``alarm_id`` (raises ``AlarmNotFound``)."""
        return await self.store.alarm(alarm_id)

    async def history(self, alarm_id: int) -> list[AlarmChangeRecord]:
        """The alarm's changes, oldest first."""
        return await self.store.history(alarm_id)

    async def acknowledge(
        self, alarm_id: int, *, actor: str, comment: str = "", source: str = ""
    ) -> AlarmRecord:
        """Acknowledge an open alarm; a latched one (condition gone) is cleared with it.

        Raises:
            AlarmNotFound, AlarmCleared, AlreadyAcknowledged.
        """

        def change(conn: Connection, record: AlarmRecord, name: str, at: int) -> list[AlarmChange]:
            if record.state == "acknowledged":
                raise AlreadyAcknowledged(
                    f"alarm {alarm_id} was acknowledged by {record.acknowledged_by}"
                )
            update_alarm(
                conn,
                alarm_id,
                {
                    "state": "acknowledged",
                    "acknowledged_by": actor,
                    "acknowledged_at": at,
                    "ack_comment": comment,
                    "updated_at": at,
                },
            )
            add_change(
                conn,
                alarm_id,
                at=at,
                actor=actor,
                kind="acknowledged",
                from_state=record.state,
                to_state="acknowledged",
                comment=comment,
            )
            changes = [
                _change(
                    record,
                    name,
                    "acknowledged",
                    at,
                    actor,
                    comment,
                    self._directory,
                    "acknowledged",
                )
            ]
            if not record.condition_active:  # latched: its acknowledgement ends it
                acked = _replace(record, state="acknowledged")
                changes.append(
                    _clear(
                        conn,
                        acked,
                        name,
                        at,
                        actor,
                        "acknowledged after the condition was gone",
                        self._directory,
                        comment,
                    )
                )
            return changes

        return await self._change(alarm_id, "alarm.acknowledged", actor, source, comment, change)

    async def clear(
        self, alarm_id: int, *, actor: str, comment: str = "", source: str = ""
    ) -> AlarmRecord:
        """Clear an open alarm by hand, where its rule allows it (``clearable_by_user``).

        Raises:
            AlarmNotFound, AlarmCleared, NotClearable.
        """

        def change(conn: Connection, record: AlarmRecord, name: str, at: int) -> list[AlarmChange]:
            rule = self.engine.index.rules.get(record.rule_id)
            if rule is not None and not rule.clearable_by_user:
                raise NotClearable(
                    f"alarm {alarm_id}: rule {rule.id!r} clears by its condition, not by users"
                    " (clearable_by_user is false)"
                )
            return [
                _clear(conn, record, name, at, actor, "cleared by a user", self._directory, comment)
            ]

        return await self._change(alarm_id, "alarm.cleared", actor, source, comment, change)

    async def shelve(
        self, alarm_id: int, *, until: int, actor: str, comment: str = "", source: str = ""
    ) -> AlarmRecord:
        """Shelve an open alarm until ``until`` (epoch ms, within a month from now).

        Raises:
            Invalid: ``until`` in the past or more than a month ahead.
            AlarmNotFound, AlarmCleared.
        """
        now = self._clock()
        if not now < until <= now + MAX_SHELVE_MS:
            raise Invalid(
                f"until {until}: a time after now ({now}) and at most 30 days ahead",
                ("body", "until"),
            )

        def change(conn: Connection, record: AlarmRecord, name: str, at: int) -> list[AlarmChange]:
            update_alarm(conn, alarm_id, {"shelved_until": until, "updated_at": at})
            add_change(
                conn,
                alarm_id,
                at=at,
                actor=actor,
                kind="shelved",
                from_state=record.state,
                to_state=record.state,
                comment=comment,
            )
            return [
                _change(record, name, "shelved", at, actor, comment, self._directory, record.state)
            ]

        return await self._change(alarm_id, "alarm.shelved", actor, source, comment, change)

    async def unshelve(
        self, alarm_id: int, *, actor: str, comment: str = "", source: str = ""
    ) -> AlarmRecord:
        """Take a shelved alarm back before its time.

        Raises:
            AlarmNotFound, AlarmCleared, NotShelved.
        """

        def change(conn: Connection, record: AlarmRecord, name: str, at: int) -> list[AlarmChange]:
            if record.shelved_until is None:
                raise NotShelved(f"alarm {alarm_id} is not shelved")
            return [unshelve_row(conn, record, name, at, actor, comment, self._directory)]

        return await self._change(alarm_id, "alarm.unshelved", actor, source, comment, change)

    async def assign(
        self,
        alarm_id: int,
        *,
        assignee: str | None,
        actor: str,
        comment: str = "",
        source: str = "",
    ) -> AlarmRecord:
        """Give an open alarm to ``assignee`` (a user name the caller has checked), or to
        nobody (None). The history entry's comment names the assignee, so the history alone
        tells who had the alarm when.

        Raises:
            AlarmNotFound, AlarmCleared.
        """
        said = f"to {assignee}" if assignee is not None else "to nobody"
        noted = f"{said}: {comment}" if comment else said

        def change(conn: Connection, record: AlarmRecord, name: str, at: int) -> list[AlarmChange]:
            update_alarm(conn, alarm_id, {"assignee": assignee, "updated_at": at})
            add_change(
                conn,
                alarm_id,
                at=at,
                actor=actor,
                kind="assigned",
                from_state=record.state,
                to_state=record.state,
                comment=noted,
            )
            return [
                _change(record, name, "assigned", at, actor, noted, self._directory, record.state)
            ]

        return await self._change(
            alarm_id, "alarm.assigned", actor, source, comment, change, assignee=assignee
        )

    async def comment(
        self, alarm_id: int, *, actor: str, comment: str, source: str = ""
    ) -> AlarmRecord:
        """Add a comment to an open alarm's history (what was tried, who was called).

        Raises:
            AlarmNotFound, AlarmCleared.
        """

        def change(conn: Connection, record: AlarmRecord, name: str, at: int) -> list[AlarmChange]:
            update_alarm(conn, alarm_id, {"updated_at": at})
            add_change(
                conn,
                alarm_id,
                at=at,
                actor=actor,
                kind="commented",
                from_state=record.state,
                to_state=record.state,
                comment=comment,
            )
            return [
                _change(
                    record, name, "commented", at, actor, comment, self._directory, record.state
                )
            ]

        return await self._change(alarm_id, "alarm.commented", actor, source, comment, change)

    async def _change(
        self,
        alarm_id: int,
        action: str,
        actor: str,
        source: str,
        comment: str,
        change: Callable[[Connection, AlarmRecord, str, int], list[AlarmChange]],
        **audited: str | None,
    ) -> AlarmRecord:
        at = self._clock()
        hooks = list(self.engine.hooks)
        rules = self.engine.index.rules

        def job(conn: Connection) -> tuple[AlarmRecord, list[AlarmChange]]:
            row = conn.execute(select(alarms).where(alarms.c.id == alarm_id)).first()
            if row is None:
                raise AlarmNotFound(f"alarm {alarm_id} does not exist")
            record = AlarmRecord.from_row(row)
            if not record.open:
                raise AlarmCleared(f"alarm {alarm_id} is cleared ({record.clear_reason})")
            rule = rules.get(record.rule_id)
            changes = mark(
                conn, change(conn, record, rule.name if rule else record.rule_id, at), rules
            )
            detail = {
                "rule": record.rule_id,
                "device": record.device_id,
                "comment": comment,
                **audited,
            }
            conn.execute(
                insert(audit_log).values(
                    audit_row(
                        actor, action, f"alarm:{alarm_id}", source=source, detail=detail, ts=at
                    )
                )
            )
            for hook in hooks:
                hook(conn, changes)
            after = conn.execute(select(alarms).where(alarms.c.id == alarm_id)).one()
            return AlarmRecord.from_row(after), changes

        async with self.engine.lock:
            record, changes = await self._writes.run(job, urgent=True)
            pair = self.engine.pair_of(alarm_id)
            if record.state == "cleared":
                self.engine.forget_alarm(alarm_id)
            elif pair is not None and pair.alarm is not None:
                pair.alarm.state = record.state
        self.engine.published(changes)
        return record


def _check_escalation(conn: Connection, rule: Rule, loc: tuple[str, ...]) -> None:
    """A rule may name only an escalation policy that exists (``hub/notify/escalation.py``)."""
    if rule.escalation is None:
        return
    query = select(escalation_policies.c.id).where(escalation_policies.c.id == rule.escalation)
    if conn.execute(query).first() is None:
        raise Invalid(
            f"escalation {rule.escalation!r}: no such escalation policy", (*loc, "escalation")
        )


def _stored(row: RuleRow) -> StoredRule | None:
    try:
        rule = parse_rule(row.definition)
    except ValueError:
        return None
    return StoredRule(rule, row.created_at, row.updated_at, row.updated_by)


def _replace(record: AlarmRecord, **values: Any) -> AlarmRecord:
    return AlarmRecord(**{**{n: getattr(record, n) for n in AlarmRecord.__slots__}, **values})


def _change(
    record: AlarmRecord,
    rule_name: str,
    kind: ChangeKind,
    at: int,
    actor: str,
    comment: str,
    directory: DeviceDirectory,
    state: str,
) -> AlarmChange:
    entry = directory.get(record.device_id)
    return AlarmChange(
        alarm_id=record.id,
        rule_id=record.rule_id,
        rule_name=rule_name,
        device_id=record.device_id,
        severity=record.severity,
        kind=kind,
        at=at,
        actor=actor,
        message=record.message,
        value=record.value,
        device_labels=dict(entry.labels) if entry is not None else {},
        state=state,
        comment=comment,
    )


def _clear(
    conn: Connection,
    record: AlarmRecord,
    rule_name: str,
    at: int,
    actor: str,
    reason: str,
    directory: DeviceDirectory,
    comment: str,
) -> AlarmChange:
    update_alarm(
        conn,
        record.id,
        {
            "state": "cleared",
            "condition_active": False,
            "cleared_at": at,
            "cleared_by": actor,
            "clear_reason": reason,
            "updated_at": at,
        },
    )
    add_change(
        conn,
        record.id,
        at=at,
        actor=actor,
        kind="cleared",
        from_state=record.state,
        to_state="cleared",
        comment=comment or reason,
    )
    return _change(record, rule_name, "cleared", at, actor, comment or reason, directory, "cleared")
