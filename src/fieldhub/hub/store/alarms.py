"""Alarm rules, alarms, their history and the rules' timers: the SQL of ``hub/alarms/``.

Reads are coroutines on the engine; writes are plain functions of a ``Connection`` so that the
alarm wing composes them into one write job (``store/writes.py``) together with the hooks that
must commit with them (a notification enqueued in the very transaction of its alarm change).

The store knows rules only as dicts: what makes a rule valid is ``hub/alarms/rules.py``'s.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Row
from sqlalchemy.ext.asyncio import AsyncEngine

from fieldhub.hub.errors import NotFound
from fieldhub.hub.store.schema import (
    alarm_changes,
    alarm_count_windows,
    alarm_rule_state,
    alarm_rules,
    alarms,
    devices,
)

__all__ = [
    "AlarmChangeRecord",
    "AlarmFilter",
    "AlarmNotFound",
    "AlarmRecord",
    "AlarmStore",
    "RuleNotFound",
    "RuleRow",
    "RuleStateRow",
    "WindowRow",
    "add_change",
    "delete_rule",
    "delete_rule_states",
    "insert_alarm",
    "put_count_windows",
    "put_rule",
    "put_rule_states",
    "update_alarm",
]

OPEN_STATES: Final = ("active", "acknowledged")
MAX_PAGE: Final = 1000


class AlarmNotFound(NotFound):
    """No alarm with this id (or none the caller may see)."""


class RuleNotFound(NotFound):
    """No alarm rule with this id."""


@dataclass(frozen=True, slots=True)
class RuleRow:
    """A stored rule: its dict form and who changed it last."""

    id: str
    definition: dict[str, Any]
    created_at: int
    updated_at: int
    updated_by: str


@dataclass(frozen=True, slots=True)
class WindowRow:
    """The window of an N-of-M count (``hub/alarms/counting.py``) for one device: marks
    (threshold) or event times in ms (event), oldest first; ``None`` deletes it."""

    device_id: str
    rule_id: str
    window: list[int] | None


@dataclass(frozen=True, slots=True)
class RuleStateRow:
    """A rule's timers for one device."""

    device_id: str
    rule_id: str
    pending_since: int | None
    gone_since: int | None
    value: Any = None
    message: str = ""


@dataclass(frozen=True, slots=True)
class AlarmRecord:
    """One alarm as stored."""

    id: int
    rule_id: str
    device_id: str
    severity: str
    state: str
    condition_active: bool
    raised_at: int
    value: Any
    message: str
    acknowledged_by: str | None
    acknowledged_at: int | None
    ack_comment: str | None
    cleared_at: int | None
    cleared_by: str | None
    clear_reason: str | None
    shelved_until: int | None
    assignee: str | None
    updated_at: int
    in_maintenance: bool
    flapping: bool

    @classmethod
    def from_row(cls, row: Row[Any]) -> AlarmRecord:
        """The record of a row of ``alarms``."""
        return cls(**{name: getattr(row, name) for name in cls.__slots__})

    @property
    def open(self) -> bool:
        """Not cleared."""
        return self.state != "cleared"


@dataclass(frozen=True, slots=True)
class AlarmChangeRecord:
    """One entry of an alarm's history."""

    at: int
    actor: str
    kind: str
    from_state: str | None
    to_state: str
    comment: str


@dataclass(frozen=True, slots=True)
class AlarmFilter:
    """What ``GET /api/alarms`` asks for; ``devices`` None: every device."""

    states: Sequence[str] = ()
    severities: Sequence[str] = ()
    device: str | None = None
    rule: str | None = None
    assignee: str | None = None
    devices: frozenset[str] | None = None
    before_id: int | None = None
    limit: int = 100


# -- writes (functions of a Connection, composed into write jobs) ----------------------------
def put_rule(conn: Connection, rule_id: str, definition: dict[str, Any], at: int, by: str) -> bool:
    """Insert or replace a rule; True when it was new."""
    values = {
        "name": definition["name"],
        "enabled": definition["enabled"],
        "definition": definition,
        "updated_at": at,
        "updated_by": by,
    }
    changed = conn.execute(update(alarm_rules).where(alarm_rules.c.id == rule_id).values(values))
    if changed.rowcount:
        return False
    conn.execute(insert(alarm_rules).values(id=rule_id, created_at=at, **values))
    return True


def delete_rule(conn: Connection, rule_id: str) -> None:
    """Delete a rule and its timers (its alarms stay, as history)."""
    conn.execute(delete(alarm_rule_state).where(alarm_rule_state.c.rule_id == rule_id))
    conn.execute(delete(alarm_rules).where(alarm_rules.c.id == rule_id))


def insert_alarm(conn: Connection, row: dict[str, Any]) -> int | None:
    """Insert an open alarm; its id, or None when (device, rule) already has one open.

    The partial unique index decides, in the database, so two racing raises (two hubs, or a
    raise racing a restart) leave exactly one open alarm: the loser's insert does nothing.
    """
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = (
        dialect.insert(alarms)
        .values(row)
        .on_conflict_do_nothing(
            index_elements=[alarms.c.device_id, alarms.c.rule_id],
            # The index's own predicate, as text: a bound parameter here lets PostgreSQL infer
            # the partial index for a custom plan only, and asyncpg's prepared statement gets a
            # generic plan from the sixth insert on ("no unique constraint matching").
            index_where=text("state != 'cleared'"),
        )
        .returning(alarms.c.id)
    )
    return conn.execute(statement).scalar()


def update_alarm(conn: Connection, alarm_id: int, values: dict[str, Any]) -> None:
    """Write ``values`` into the alarm ``alarm_id``."""
    conn.execute(update(alarms).where(alarms.c.id == alarm_id).values(values))


def add_change(
    conn: Connection,
    alarm_id: int,
    *,
    at: int,
    actor: str,
    kind: str,
    from_state: str | None,
    to_state: str,
    comment: str = "",
) -> None:
    """Append one entry to an alarm's history."""
    conn.execute(
        insert(alarm_changes).values(
            alarm_id=alarm_id,
            at=at,
            actor=actor,
            kind=kind,
            from_state=from_state,
            to_state=to_state,
            comment=comment,
        )
    )


def put_rule_states(conn: Connection, rows: Iterable[RuleStateRow]) -> None:
    """Write the timers of (device, rule) pairs; a pair with no timer left is deleted."""
    for row in rows:
        where = (alarm_rule_state.c.device_id == row.device_id) & (
            alarm_rule_state.c.rule_id == row.rule_id
        )
        conn.execute(delete(alarm_rule_state).where(where))
        if row.pending_since is not None or row.gone_since is not None:
            conn.execute(
                insert(alarm_rule_state).values(
                    device_id=row.device_id,
                    rule_id=row.rule_id,
                    pending_since=row.pending_since,
                    gone_since=row.gone_since,
                    value=row.value,
                    message=row.message[:1024],
                )
            )


def put_count_windows(conn: Connection, rows: Iterable[WindowRow]) -> None:
    """Write the windows of N-of-M counts; a row without a window deletes the stored one."""
    for row in rows:
        conn.execute(
            delete(alarm_count_windows).where(
                (alarm_count_windows.c.device_id == row.device_id)
                & (alarm_count_windows.c.rule_id == row.rule_id)
            )
        )
        if row.window:
            conn.execute(
                insert(alarm_count_windows).values(
                    device_id=row.device_id, rule_id=row.rule_id, window=row.window
                )
            )


def delete_rule_states(conn: Connection, rule_id: str) -> None:
    """Forget the pending timers of ``rule_id`` (the rule changed: raising starts over); the
    clear timers of its open alarms stay."""
    of_rule = alarm_rule_state.c.rule_id == rule_id
    conn.execute(update(alarm_rule_state).where(of_rule).values(pending_since=None))
    conn.execute(delete(alarm_rule_state).where(of_rule & alarm_rule_state.c.gone_since.is_(None)))


# -- reads -------------------------------------------------------------------------------------
class AlarmStore:
    """Reads of rules, alarms, history and timers."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def rules(self) -> list[RuleRow]:
        """Every stored rule, by id."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(select(alarm_rules).order_by(alarm_rules.c.id))
        return [_rule(row) for row in rows]

    async def rules_stamp(self) -> tuple[int, int]:
        """How many rules there are and when the last one changed: a cheap look for whether
        another process (the CLI, a second hub) changed them."""
        query = select(func.count(), func.coalesce(func.max(alarm_rules.c.updated_at), 0))
        async with self._engine.connect() as conn:
            count, latest = (await conn.execute(query)).one()
        return int(count), int(latest)

    async def rule(self, rule_id: str) -> RuleRow:
        """The rule ``rule_id``.

        Raises:
            RuleNotFound: no such rule.
        """
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(select(alarm_rules).where(alarm_rules.c.id == rule_id))
            ).first()
        if row is None:
            raise RuleNotFound(f"alarm rule {rule_id!r} does not exist")
        return _rule(row)

    async def open_alarms(self) -> list[AlarmRecord]:
        """Every alarm not cleared."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(select(alarms).where(alarms.c.state.in_(OPEN_STATES)))
        return [AlarmRecord.from_row(row) for row in rows]

    async def rule_states(self) -> list[RuleStateRow]:
        """Every pending timer."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(select(alarm_rule_state))
        return [
            RuleStateRow(r.device_id, r.rule_id, r.pending_since, r.gone_since, r.value, r.message)
            for r in rows
        ]

    async def devices_with_presence(self, presences: Collection[str]) -> list[str]:
        """The devices whose stored presence is one of ``presences``: the engine's outages
        as they stood when the last hub stopped."""
        query = select(devices.c.id).where(devices.c.presence.in_(list(presences)))
        async with self._engine.connect() as conn:
            return list((await conn.execute(query)).scalars())

    async def count_windows(self) -> list[WindowRow]:
        """Every window of an N-of-M count."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(select(alarm_count_windows))
        return [WindowRow(r.device_id, r.rule_id, list(r.window)) for r in rows]

    async def alarm(self, alarm_id: int) -> AlarmRecord:
        """The alarm ``alarm_id``.

        Raises:
            AlarmNotFound: no such alarm.
        """
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(alarms).where(alarms.c.id == alarm_id))).first()
        if row is None:
            raise AlarmNotFound(f"alarm {alarm_id} does not exist")
        return AlarmRecord.from_row(row)

    async def history(self, alarm_id: int) -> list[AlarmChangeRecord]:
        """The changes of an alarm, oldest first."""
        query = (
            select(alarm_changes)
            .where(alarm_changes.c.alarm_id == alarm_id)
            .order_by(alarm_changes.c.id)
        )
        async with self._engine.connect() as conn:
            rows = await conn.execute(query)
        return [
            AlarmChangeRecord(r.at, r.actor, r.kind, r.from_state, r.to_state, r.comment)
            for r in rows
        ]

    async def find(self, where: AlarmFilter) -> list[AlarmRecord]:
        """Alarms matching ``where``, newest first (by id), at most ``where.limit``."""
        query = select(alarms).order_by(alarms.c.id.desc()).limit(min(where.limit, MAX_PAGE))
        if where.states:
            query = query.where(alarms.c.state.in_(list(where.states)))
        if where.severities:
            query = query.where(alarms.c.severity.in_(list(where.severities)))
        if where.device is not None:
            query = query.where(alarms.c.device_id == where.device)
        if where.rule is not None:
            query = query.where(alarms.c.rule_id == where.rule)
        if where.assignee is not None:
            query = query.where(alarms.c.assignee == where.assignee)
        if where.devices is not None:
            query = query.where(alarms.c.device_id.in_(sorted(where.devices)))
        if where.before_id is not None:
            query = query.where(alarms.c.id < where.before_id)
        async with self._engine.connect() as conn:
            rows = await conn.execute(query)
        return [AlarmRecord.from_row(row) for row in rows]


def _rule(row: Row[Any]) -> RuleRow:
    return RuleRow(row.id, dict(row.definition), row.created_at, row.updated_at, row.updated_by)
