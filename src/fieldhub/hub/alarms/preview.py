"""Rule preview: the alarms a rule would have raised over stored history, stored nowhere.

Why a replay of the engine and not a query: a rule's meaning (hysteresis, ``for_s``,
``keep_firing_for_s``, N-of-M counts, ``auto_clear_s``) lives in one place, the alarm engine
(``engine.py``). The preview hands a private :class:`~fieldhub.hub.alarms.engine.AlarmEngine`
the stored values and events in time order, as committed batches, with its clock set to each
row's time and moved to each timer when it falls due; only the writing is replaced, by a
record of what would have been written. So a preview answers what the live engine did on the
same data (tests/test_alarm_preview.py checks it), and a change of the engine changes both.

What differs from live, on purpose:

- Times are the devices' own timestamps (a sample has no other), the hub's for presence.
- Every alarm is taken as acknowledged the moment it is raised, so each episode of the
  condition is one alarm with its own clear (live, an unacknowledged alarm latches and a
  return of the condition continues it). Event alarms without ``auto_clear_s`` stay open:
  only a user clears them.
- The rule is previewed as enabled, whatever its ``enabled`` says.
- The hub keeps no history of reported state: a state rule previews nothing, and says so.

The work is bounded (devices, rows, alarms, wall time); an answer that hit a bound says which
(``cut``) and covers the span up to where it stopped (``until``).
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from sqlalchemy.ext.asyncio import AsyncEngine

from fieldhub.hub.alarms.engine import AlarmEngine
from fieldhub.hub.alarms.rules import (
    AbsenceCondition,
    EventCondition,
    PresenceCondition,
    Rule,
    StateCondition,
)
from fieldhub.hub.alarms.transitions import Gone, Raise, Round
from fieldhub.hub.devices.directory import DeviceDirectory
from fieldhub.hub.ingest.batch import Batch, PresenceChange
from fieldhub.hub.store.alarm_history import EventRow, HistoryReader, ValueRow
from fieldhub.hub.store.alarms import AlarmStore
from fieldhub.hub.store.devices import DeviceRecord
from fieldhub.hub.store.writes import EngineWrites
from fieldhub.protocol import Event, Telemetry

__all__ = [
    "MAX_ALARMS",
    "MAX_DEVICES",
    "MAX_HOURS",
    "MAX_ROWS",
    "MAX_WORK_S",
    "Preview",
    "PreviewAlarm",
    "preview_rule",
]

MAX_HOURS: Final = 7 * 24
"""Longest span a preview looks back."""
MAX_DEVICES: Final = 1000
"""Devices one preview replays (the first by id; the answer says when there were more)."""
MAX_ROWS: Final = 200_000
"""Stored values or events one preview reads."""
MAX_ALARMS: Final = 1000
"""Alarms one answer lists (the replay stops there)."""
MAX_WORK_S: Final = 10.0
"""Wall time one preview may take."""
ABSENCE_STEP_MS: Final = 60_000
"""How often the replay's clock looks at absence rules (live: every second)."""
PRESENCE: Final = "presence."
"""The type prefix of the events the hub records for presence changes (``ingest/writer.py``)."""


@dataclass(slots=True)
class PreviewAlarm:
    """One alarm the rule would have raised."""

    device_id: str
    raised_at: int
    value: Any
    message: str
    cleared_at: int | None = None


@dataclass(slots=True)
class Preview:
    """What a rule would have done over ``[since, until)``."""

    rule_id: str
    since: int
    until: int
    devices: int = 0
    rows: int = 0
    alarms: list[PreviewAlarm] = field(default_factory=list)
    cut: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def open(self) -> int:
        """Alarms still open at the end of the span."""
        return sum(1 for alarm in self.alarms if alarm.cleared_at is None)


class _Replay(AlarmEngine):
    """The live engine on a clock the history sets; it records instead of writing."""

    def __init__(
        self, rule: Rule, directory: DeviceDirectory, source: PreviewSource, since: int
    ) -> None:
        self.now = since  # the engine's start: absence is counted from it
        self.absence = isinstance(rule.condition, AbsenceCondition)
        self.found: list[PreviewAlarm] = []
        self._open: dict[int, PreviewAlarm] = {}
        super().__init__(source.store, source.writes, directory, clock=lambda: self.now)
        self.index.put(rule)

    async def at(self, now: int, batch: Batch | None, deadline: float) -> bool:
        """Evaluate ``batch`` (committed at ``now``; None: the clock alone), after the timers
        due until then; False, with ``now`` not reached, when ``deadline`` (monotonic) passed."""
        looked: int | None = None
        while True:
            if time.monotonic() > deadline:
                return False
            due = self._due()
            if due is None or due > now or due == looked:
                break
            self.now = looked = due
            await self.evaluate(tick=True)
        self.now = now
        if batch is not None:
            self.committed(batch)
        await self.evaluate(tick=batch is None)
        return True

    def _due(self) -> int | None:
        due = self.next_due()
        if self.absence:  # absence is looked at on a step of the clock, not by a timer
            step = self.now + ABSENCE_STEP_MS
            due = step if due is None else min(due, step)
        return due

    async def _write(self, work: Round) -> None:
        self.counts.take_changed()  # nothing is stored
        for op in work.ops:
            if isinstance(op, Raise):
                op.alarm.id = len(self.found) + 1
                op.alarm.state = "acknowledged"  # taken at once: each episode clears itself
                self._open[op.alarm.id] = PreviewAlarm(op.key[0], work.at, op.value, op.message)
                self.found.append(self._open[op.alarm.id])
            elif isinstance(op, Gone) and op.clear and op.alarm.id is not None:
                self._open.pop(op.alarm.id).cleared_at = op.at


@dataclass(frozen=True, slots=True)
class PreviewSource:
    """Where a preview reads: the stored history, and the engine's (unused) store and writes
    that an :class:`AlarmEngine` is built with."""

    reader: HistoryReader
    store: AlarmStore
    writes: EngineWrites

    @classmethod
    def of(cls, engine: AsyncEngine) -> PreviewSource:
        """Reads of the database of ``engine``."""
        return cls(HistoryReader(engine), AlarmStore(engine), EngineWrites(engine))


async def preview_rule(
    rule: Rule,
    devices: Sequence[DeviceRecord],
    source: PreviewSource,
    *,
    since: int,
    until: int,
) -> Preview:
    """The alarms ``rule`` would have raised on ``devices`` (those it covers) over
    ``[since, until)``, by the engine itself (see the module's text)."""
    rule = dataclasses.replace(rule, enabled=True)
    answer = Preview(rule.id, since, until)
    covered = [d for d in sorted(devices, key=lambda d: d.id) if rule.target.covers(d.id, d.labels)]
    if len(covered) > MAX_DEVICES:
        covered, answer.cut = covered[:MAX_DEVICES], f"more than {MAX_DEVICES} devices"
    answer.devices = len(covered)
    directory = DeviceDirectory()
    for record in covered:
        directory.put(record)
    replay = _Replay(rule, directory, source, since)
    batches = await _batches(rule, [d.id for d in covered], source.reader, since, until, answer)
    deadline = time.monotonic() + MAX_WORK_S
    for at, batch in [*batches, (answer.until, None)]:
        if not await replay.at(at, batch, deadline):
            answer.until, answer.cut = replay.now + 1, f"longer than {MAX_WORK_S:g} s of work"
            break
        if len(replay.found) >= MAX_ALARMS:
            answer.until, answer.cut = at + 1, f"more than {MAX_ALARMS} alarms"
            break
    answer.alarms = replay.found[:MAX_ALARMS]
    return answer


async def _batches(
    rule: Rule,
    ids: list[str],
    reader: HistoryReader,
    since: int,
    until: int,
    answer: Preview,
) -> list[tuple[int, Batch]]:
    """The history the rule listens to, as one committed batch per instant."""
    condition = rule.condition
    if not ids:
        return []
    if isinstance(condition, StateCondition):
        answer.notes.append(
            "the hub keeps only the latest reported state, no history of it:"
            " a state rule cannot be previewed"
        )
        return []
    if isinstance(condition, PresenceCondition):
        answer.notes.append(
            "presence is previewed from the presence changes the hub recorded as events"
            f" ({PRESENCE}*); a device never seen in the span has no presence to look at"
        )
    rows: Sequence[ValueRow | EventRow]
    key = ""
    if isinstance(condition, EventCondition | PresenceCondition):
        prefix = PRESENCE if isinstance(condition, PresenceCondition) else _prefix(condition)
        rows = await reader.events(ids, prefix, since, until, MAX_ROWS + 1)
    else:
        key = condition.key
        rows = await reader.values(ids, key, since, until, MAX_ROWS + 1)
    if len(rows) > MAX_ROWS:
        rows = rows[:MAX_ROWS]
        answer.until = rows[-1].at + 1
        answer.cut = f"more than {MAX_ROWS} rows"
    answer.rows = len(rows)
    return [(at, _batch(group, key)) for at, group in itertools.groupby(rows, key=_time)]


def _time(row: ValueRow | EventRow) -> int:
    return row.at


def _prefix(condition: EventCondition) -> str:
    """The literal start of the glob: the store's filter; the engine matches the rest."""
    return "".join(itertools.takewhile(lambda c: c not in "*?[", condition.match))


def _batch(rows: Iterable[ValueRow | EventRow], key: str) -> Batch:
    """Rows of one instant as ingest would have committed them: values of ``key`` as
    telemetry, presence changes as presence (live, they are not events to the engine), other
    events as events."""
    batch = Batch()
    for row in rows:
        if isinstance(row, ValueRow):
            if row.value is not None:
                message = Telemetry(seq=1, ts=row.at, values={key: row.value})
                batch.telemetry.append((row.device_id, message))
        elif row.type.startswith(PRESENCE):
            presence = row.type.removeprefix(PRESENCE)
            batch.presence.append(
                PresenceChange(row.device_id, presence, row.at, row.message, None)
            )
        else:
            event = Event(seq=1, ts=row.at, type=row.type, message=row.message)
            batch.events.append((row.device_id, row.at, event))
    return batch
