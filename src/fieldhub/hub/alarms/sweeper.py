"""The alarms' clock for what ends by time alone: shelving, flapping, maintenance marks.

Once a second (in its own task, beside the engine's), one write job under the engine's lock:

- an open alarm whose ``shelved_until`` has passed is **unshelved** (history ``unshelved``,
  audit ``alarm.unshelved`` by the hub, a live change);
- a flapping (device, rule) quiet for its window **settles** (``flapping.py``): one
  ``settled`` change for its latest alarm, notified, saying its state now;
- an open alarm marked ``in_maintenance`` whose window no longer covers it loses the mark
  (history ``maintenance ended``, a ``maintenance`` change: live, like every other change):
  its held notifications go out at the window's end anyway.

Each is an ``UPDATE … WHERE`` on the condition itself, so two hubs sweeping the same database
write each change once (the second finds nothing left to do).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from fieldhub.clock import now_ms
from fieldhub.hub.alarms.changes import AlarmChange
from fieldhub.hub.alarms.engine import AlarmEngine
from fieldhub.hub.alarms.flapping import settled_pairs
from fieldhub.hub.alarms.marks import mark, window_end
from fieldhub.hub.alarms.transitions import HUB_ACTOR
from fieldhub.hub.alarms.windows import load_windows
from fieldhub.hub.devices.directory import DeviceDirectory
from fieldhub.hub.store.alarms import OPEN_STATES, AlarmRecord, add_change, update_alarm
from fieldhub.hub.store.audit import audit_row
from fieldhub.hub.store.schema import alarms, audit_log
from fieldhub.hub.store.writes import Writes

__all__ = ["AlarmSweeper", "unshelve_row"]

log = logging.getLogger(__name__)


def unshelve_row(
    conn: Connection,
    record: AlarmRecord,
    rule_name: str,
    at: int,
    actor: str,
    comment: str,
    directory: DeviceDirectory,
) -> AlarmChange:
    """Take a shelved alarm back (by a user, or by the hub when its time has passed)."""
    update_alarm(conn, record.id, {"shelved_until": None, "updated_at": at})
    add_change(
        conn,
        record.id,
        at=at,
        actor=actor,
        kind="unshelved",
        from_state=record.state,
        to_state=record.state,
        comment=comment,
    )
    entry = directory.get(record.device_id)
    return AlarmChange(
        alarm_id=record.id,
        rule_id=record.rule_id,
        rule_name=rule_name,
        device_id=record.device_id,
        severity=record.severity,
        kind="unshelved",
        at=at,
        actor=actor,
        message=record.message,
        value=record.value,
        device_labels=dict(entry.labels) if entry is not None else {},
        state=record.state,
        comment=comment,
    )


class AlarmSweeper:
    """Runs the time-only endings (see the module's text) every ``tick_s``."""

    def __init__(
        self,
        engine: AlarmEngine,
        writes: Writes,
        directory: DeviceDirectory,
        *,
        clock: Callable[[], int] = now_ms,
        tick_s: float = 1.0,
    ) -> None:
        self._engine = engine
        self._writes = writes
        self._directory = directory
        self._clock = clock
        self._tick_s = tick_s
        self.write_errors = 0  # sweeps the store refused (read by tests and metrics)

    async def run(self) -> None:
        """Sweep every ``tick_s`` until cancelled; a store that is down is tried again."""
        while True:
            await asyncio.sleep(self._tick_s)
            try:
                await self.sweep()
            except (SQLAlchemyError, OSError) as exc:  # the store is down: next tick
                self.write_errors += 1
                log.warning("alarm sweep could not reach the store: %s", exc)

    async def sweep(self) -> list[AlarmChange]:
        """One sweep; the changes it committed (already told to hooks and listeners)."""
        at = self._clock()
        engine = self._engine
        hooks = list(engine.hooks)
        rules = engine.index.rules
        directory = self._directory

        def name(rule_id: str) -> str:
            rule = rules.get(rule_id)
            return rule.name if rule is not None else rule_id

        def job(conn: Connection) -> list[AlarmChange]:
            changes = []
            expired = conn.execute(
                select(alarms).where(
                    alarms.c.state.in_(OPEN_STATES)
                    & alarms.c.shelved_until.is_not(None)
                    & (alarms.c.shelved_until <= at)
                )
            ).all()
            for row in expired:
                record = AlarmRecord.from_row(row)
                changes.append(
                    unshelve_row(
                        conn,
                        record,
                        name(record.rule_id),
                        at,
                        HUB_ACTOR,
                        "shelving ended",
                        directory,
                    )
                )
                detail = {"rule": record.rule_id, "device": record.device_id}
                conn.execute(
                    insert(audit_log).values(
                        audit_row(
                            HUB_ACTOR, "alarm.unshelved", f"alarm:{record.id}", detail=detail, ts=at
                        )
                    )
                )
            for device_id, rule_id in settled_pairs(conn, rules, at):
                settled = _settle(conn, device_id, rule_id, name(rule_id), at, directory)
                if settled is not None:
                    changes.append(settled)
            changes += _end_maintenance(conn, at, directory, name)
            if changes:
                changes = mark(conn, changes, rules)
                for hook in hooks:
                    hook(conn, changes)
            return changes

        async with engine.lock:
            changes = await self._writes.run(job)
        engine.published(changes)
        return changes


def _settle(
    conn: Connection,
    device_id: str,
    rule_id: str,
    rule_name: str,
    at: int,
    directory: DeviceDirectory,
) -> AlarmChange | None:
    """The ``settled`` change of the pair's latest alarm (None: it has none left)."""
    row = conn.execute(
        select(alarms)
        .where((alarms.c.device_id == device_id) & (alarms.c.rule_id == rule_id))
        .order_by(alarms.c.id.desc())
        .limit(1)
    ).first()
    if row is None:
        return None
    record = AlarmRecord.from_row(row)
    update_alarm(conn, record.id, {"flapping": False})
    comment = f"settled: {record.state}" + (" (condition holds)" if record.condition_active else "")
    add_change(
        conn,
        record.id,
        at=at,
        actor=HUB_ACTOR,
        kind="settled",
        from_state=record.state,
        to_state=record.state,
        comment=comment,
    )
    entry = directory.get(device_id)
    return AlarmChange(
        alarm_id=record.id,
        rule_id=rule_id,
        rule_name=rule_name,
        device_id=device_id,
        severity=record.severity,
        kind="settled",
        at=at,
        actor=HUB_ACTOR,
        message=record.message,
        value=record.value,
        device_labels=dict(entry.labels) if entry is not None else {},
        state=record.state,
        comment=comment,
    )


def _end_maintenance(
    conn: Connection, at: int, directory: DeviceDirectory, name: Callable[[str], str]
) -> list[AlarmChange]:
    """The marks whose window no longer covers their alarm, taken off: their changes."""
    marked = conn.execute(
        select(alarms).where(alarms.c.state.in_(OPEN_STATES) & alarms.c.in_maintenance)
    ).all()
    if not marked:
        return []
    windows = load_windows(conn)
    ended = []
    for row in marked:
        record = AlarmRecord.from_row(row)
        entry = directory.get(record.device_id)
        labels = dict(entry.labels) if entry is not None else {}
        if window_end(windows, record.device_id, labels, record.rule_id, at) is not None:
            continue
        conn.execute(update(alarms).where(alarms.c.id == record.id).values(in_maintenance=False))
        add_change(
            conn,
            record.id,
            at=at,
            actor=HUB_ACTOR,
            kind="maintenance",
            from_state=record.state,
            to_state=record.state,
            comment="maintenance ended",
        )
        ended.append(
            AlarmChange(
                alarm_id=record.id,
                rule_id=record.rule_id,
                rule_name=name(record.rule_id),
                device_id=record.device_id,
                severity=record.severity,
                kind="maintenance",
                at=at,
                actor=HUB_ACTOR,
                message=record.message,
                value=record.value,
                device_labels=labels,
                state=record.state,
                comment="maintenance ended",
            )
        )
    return ended
