"""The alarm engine: committed batches and a 1-s clock in, alarm transitions out.

Why this shape:

- Alarms are derived from committed data only. Ingest calls :meth:`AlarmEngine.committed`
  after each commit; the callback only queues the batch (ingest's loop must not pay for
  rules), and :meth:`AlarmEngine.run` evaluates in its own task.
- Evaluation state lives in memory per (device, rule) (:class:`Pair`), and the index
  (``index.py``) hands a value only to the rules that name its key or event type.
- Every transition (raise, condition gone, condition back, clear) and every timer change
  (``pending_since`` for ``for_s``, ``gone_since`` for ``keep_firing_for_s`` and
  ``auto_clear_s``) is written through one write job per round, together with the hooks of
  :meth:`on_change` (``changes.py``). Timers live in ``alarm_rule_state``, the windows of
  N-of-M counts (``counting.py``) in ``alarm_count_windows``, open alarms in ``alarms``:
  :meth:`load` rebuilds the memory from them, so a restart changes nothing.
- One open alarm per (device, rule) is the database's partial unique index; a raise that
  loses a race adopts the alarm already open (``store/alarms.py`` ``insert_alarm``).

Alarm life (condition side): raised ``active``; condition gone → cleared if acknowledged,
else *latched* (``condition_active`` false, cleared by its acknowledgement); condition back
while latched → ``condition_active`` true again, same alarm. Event rules clear
``auto_clear_s`` after their last event, whatever the acknowledgement.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from fieldhub.clock import now_ms
from fieldhub.hub.alarms.changes import AlarmChange, AlarmHook, AlarmListener
from fieldhub.hub.alarms.counting import CountWindows
from fieldhub.hub.alarms.index import RuleIndex
from fieldhub.hub.alarms.marks import mark
from fieldhub.hub.alarms.outages import AWAY, UNREACHABLE, Outages
from fieldhub.hub.alarms.rules import (
    AbsenceCondition,
    EventCondition,
    PresenceCondition,
    Rule,
    StateCondition,
    ThresholdCondition,
    parse_rule,
)
from fieldhub.hub.alarms.transitions import (
    Back,
    Gone,
    OpenAlarm,
    Pair,
    PairKey,
    Raise,
    Round,
    apply,
)
from fieldhub.hub.devices.directory import DeviceDirectory
from fieldhub.hub.devices.events import DeviceEvent, DeviceRemoved
from fieldhub.hub.ingest.batch import Batch
from fieldhub.hub.store.alarms import (
    AlarmStore,
    RuleStateRow,
    put_count_windows,
    put_rule_states,
)
from fieldhub.hub.store.writes import Writes
from fieldhub.protocol.media import MediaRef
from fieldhub.protocol.messages import Event

__all__ = ["AlarmEngine", "EngineStats"]

log = logging.getLogger(__name__)

MAX_QUEUED_BATCHES: Final = 10_000
"""Committed batches waiting for evaluation; past this the oldest is dropped, and counted."""
RULES_POLL_S: Final = 2.0
"""How often the engine looks whether another process (the CLI, a second hub) changed rules."""


@dataclass(slots=True)
class EngineStats:
    """Counters, read by tests and (later) metrics."""

    batches: int = 0
    dropped_batches: int = 0
    raised: int = 0
    cleared: int = 0
    write_errors: int = 0


class AlarmEngine:
    """Evaluates the rules on committed data and on the clock; persists what changes.

    Args:
        store: reads of rules, open alarms and timers (for :meth:`load`).
        writes: where the write jobs run (the hub's writer).
        directory: device labels in memory (which rules cover which device).
        clock: epoch ms (tests may pass their own).
        tick_s: how often the timers are looked at.
    """

    def __init__(
        self,
        store: AlarmStore,
        writes: Writes,
        directory: DeviceDirectory,
        *,
        clock: Callable[[], int] = now_ms,
        tick_s: float = 1.0,
    ) -> None:
        self.store = store
        self._writes = writes
        self._directory = directory
        self._clock = clock
        self._tick_s = tick_s
        self.index = RuleIndex()
        self.pairs: dict[PairKey, Pair] = {}
        self.counts = CountWindows()
        self._by_alarm: dict[int, PairKey] = {}
        self._last_seen: dict[tuple[str, str], int] = {}  # (device, key) → hub ms, absence
        self.outages = Outages()  # devices away: their data rules raise nothing (outages.py)
        self._started_at = clock()
        self._rules_stamp = (0, 0)
        self._queue: collections.deque[Batch] = collections.deque()
        self._removed: set[str] = set()  # devices deleted since the last round
        self._wake = asyncio.Event()
        self._hooks: list[AlarmHook] = []
        self._listeners: list[AlarmListener] = []
        self.stats = EngineStats()
        self.lock = asyncio.Lock()
        """Held while memory and store change together (a round; a user's change)."""

    # -- wiring ---------------------------------------------------------------------------
    def on_change(self, hook: AlarmHook) -> None:
        """Run ``hook`` in the write transaction of every alarm change (``changes.py``)."""
        self._hooks.append(hook)

    def on_changed(self, listener: AlarmListener) -> None:
        """Call ``listener`` after every committed round of changes."""
        self._listeners.append(listener)

    @property
    def hooks(self) -> list[AlarmHook]:
        """The hooks of :meth:`on_change` (the lifecycle service runs them too)."""
        return self._hooks

    def published(self, changes: list[AlarmChange]) -> None:
        """Tell the listeners of committed ``changes``; one failing listener is logged."""
        if not changes:
            return
        for listener in self._listeners:
            try:
                listener(changes)
            except Exception:  # a listener's bug must not stop alarms
                log.exception("alarm listener %r failed", listener)

    async def load(self) -> None:
        """Rules, open alarms and timers from the store: the engine as the last one left it."""
        self.index = RuleIndex(await self._stored_rules())
        self.pairs.clear()
        self._by_alarm.clear()
        for alarm in await self.store.open_alarms():
            key = (alarm.device_id, alarm.rule_id)
            self.pairs[key] = Pair(
                active=alarm.condition_active,
                alarm=OpenAlarm(alarm.id, alarm.state, alarm.condition_active, alarm.raised_at),
            )
            self._by_alarm[alarm.id] = key
        for state in await self.store.rule_states():
            pair = self.pairs.setdefault((state.device_id, state.rule_id), Pair())
            pair.pending_since = state.pending_since
            pair.gone_since = state.gone_since
            pair.pending_value = (state.value, state.message)
            if state.pending_since is not None:
                pair.active = True
        self.counts.load(await self.store.count_windows())
        self.outages.load(await self.store.devices_with_presence(AWAY))
        self._started_at = self._clock()

    async def _stored_rules(self) -> list[Rule]:
        self._rules_stamp = await self.store.rules_stamp()
        rules = []
        for row in await self.store.rules():
            try:
                rules.append(parse_rule(row.definition))
            except ValueError as exc:  # stored by an older hub with other rules of validity
                log.error("alarm rule %r is not valid and stays off: %s", row.id, exc)
        return rules

    async def refresh_rules(self) -> None:
        """Take the rules another process changed (the CLI, a second hub); rules this engine
        already holds as stored are left alone, with their timers."""
        async with self.lock:
            if await self.store.rules_stamp() == self._rules_stamp:
                return
            stored = {rule.id: rule for rule in await self._stored_rules()}
            for rule_id in set(self.index.rules) - set(stored):
                self.rule_changed(None, rule_id)
            for rule in stored.values():
                if self.index.rules.get(rule.id) != rule:
                    self.rule_changed(rule, rule.id)

    def on_device(self, event: DeviceEvent) -> None:
        """A deleted device's open alarms are cleared ("device deleted") in the next round;
        any change of devices changes which rules cover whom."""
        self.index.forget_devices()
        if isinstance(event, DeviceRemoved):
            self._removed.add(event.device_id)
            self._wake.set()

    def committed(self, batch: Batch) -> None:
        """Ingest committed ``batch``: queue it (this runs on ingest's path: nothing more)."""
        if len(self._queue) >= MAX_QUEUED_BATCHES:
            self._queue.popleft()
            self.stats.dropped_batches += 1
        self._queue.append(batch)
        self._wake.set()

    async def run(self) -> None:
        """Evaluate queued batches as they come, and the timers every ``tick_s``."""
        loop = asyncio.get_running_loop()
        next_tick = loop.time() + self._tick_s
        next_poll = loop.time() + RULES_POLL_S
        while True:
            # asyncio.timeout, not wait_for: in 3.11 wait_for drops a cancellation that lands
            # as the wake-up comes; the task then waited for the lock of the hub's stop, which
            # holds it while it cancels this task and waits for it (Ctrl-C hung).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, next_tick - loop.time())):
                    await self._wake.wait()
            self._wake.clear()
            tick = loop.time() >= next_tick
            if tick:
                next_tick = loop.time() + self._tick_s
            try:
                await self.evaluate(tick=tick)
                if loop.time() >= next_poll:
                    next_poll = loop.time() + RULES_POLL_S
                    await self.refresh_rules()
            except (SQLAlchemyError, OSError) as exc:  # the store is down: try next round
                self.stats.write_errors += 1
                log.warning("alarm evaluation could not reach the store: %s", exc)

    async def evaluate(self, *, tick: bool = True) -> None:
        """One round: the queued batches, then (``tick``) the timers; written at once."""
        async with self.lock:
            work = Round(self._clock())
            while self._queue:
                self._batch(self._queue.popleft(), work)
                self.stats.batches += 1
            if self._removed:
                self._forget_devices(work)
            if tick:
                self._timers(work)
            if work or self.counts.changed():
                await self._write(work)

    # -- evaluation -------------------------------------------------------------------------
    def _labels(self, device_id: str) -> Mapping[str, str] | None:
        entry = self._directory.get(device_id)
        return None if entry is None else entry.labels

    def _batch(self, batch: Batch, work: Round) -> None:
        index = self.index
        at = work.at
        labels_of = self._labels  # asked only when the index has not yet seen the device
        if index.threshold or index.absence:
            # The hot loop of rules on ingest (every value of every committed message): a
            # key no rule names costs two dict look-ups, a named one two more (its rules).
            threshold, absence = index.threshold, index.absence
            for device_id, telemetry in batch.telemetry:
                for _ts, values in telemetry.instants():
                    for key, value in values.items():
                        if key in threshold:
                            for rule in index.threshold_for(key, device_id, labels_of):
                                self._threshold(rule, device_id, value, work)
                        if key in absence:
                            absent = index.absence_for(key, device_id, labels_of)
                            if absent:
                                self._last_seen[(device_id, key)] = at
                                for rule in absent:
                                    self._set(rule, device_id, False, work)
        for device_id, _received, event in batch.events:
            if not index.for_event(event.type):
                continue
            for rule in index.event_for(event.type, device_id, labels_of):
                self._event(rule, device_id, event, work)
        if index.state:
            for device_id, state in batch.states:
                for key, value in state.state.items():
                    for rule in index.state_for(key, device_id, labels_of):
                        condition = rule.condition
                        if not isinstance(condition, StateCondition):
                            continue
                        holds = condition.holds(value)
                        self._set(rule, device_id, holds, work, value, f"state {key} = {value!r}")
        for device_id in self.outages.update(batch.presence, at):
            self._drop_pending(device_id, work)
        if index.presence:
            for change in batch.presence:
                if change.presence == UNREACHABLE:
                    continue  # behind an absent gateway: its outage is the gateway's alarm
                labels = self._labels(change.device_id)
                if labels is None:
                    continue
                for rule in index.presence:
                    if not rule.target.covers(change.device_id, labels):
                        continue
                    condition = rule.condition
                    if not isinstance(condition, PresenceCondition):
                        continue
                    holds = change.presence == condition.presence
                    message = f"device {change.presence}: {change.reason}".rstrip(": ")
                    self._set(rule, change.device_id, holds, work, change.presence, message)

    def _threshold(self, rule: Rule, device_id: str, value: Any, work: Round) -> None:
        condition = rule.condition
        if not isinstance(condition, ThresholdCondition) or isinstance(value, str):
            return  # text values never cross a threshold
        number = float(value)
        key = (device_id, rule.id)
        pair = self.pairs.get(key)
        was = pair.active if pair is not None else False
        count = condition.count
        if count is None:
            holds = condition.next_state(was, number)
        else:
            beyond, safe = condition.beyond(number), condition.safe(number)
            holds = self.counts.threshold(key, count, beyond, safe, was)
        if holds == was:
            return
        sign = "≥" if condition.direction == "above" else "≤"
        message = f"{condition.key} = {value:g} {sign} {condition.raise_at:g}"
        if count is not None:
            message += f" ({count.n} of the last {count.of})"
        self._set(rule, device_id, holds, work, value, message)

    def _set(
        self,
        rule: Rule,
        device_id: str,
        holds: bool,
        work: Round,
        value: Any = None,
        message: str = "",
    ) -> None:
        """The condition of ``rule`` on ``device_id`` holds (or not) as of ``work.at``."""
        key = (device_id, rule.id)
        pair = self.pairs.get(key)
        if pair is None:
            if not holds:
                return
            pair = self.pairs[key] = Pair()
        at = work.at
        if holds and pair.alarm is None and self.outages.suppresses(rule, device_id):
            holds = False  # the device is away: its outage is the presence rule's business
        if holds:
            if pair.gone_since is not None:
                pair.gone_since = None
                work.timers.add(key)
            alarm = pair.alarm
            if alarm is not None:
                if not alarm.condition_active:
                    alarm.condition_active = True
                    work.ops.append(Back(key, rule, alarm))
            elif rule.for_s == 0:
                self._raise(key, rule, pair, value, message, work)
            elif pair.pending_since is None:
                pair.pending_since = at
                work.timers.add(key)
                pair.pending_value = (value, message)
            pair.active = True
            return
        pair.active = False
        if pair.pending_since is not None:
            pair.pending_since = None
            work.timers.add(key)
        alarm = pair.alarm
        if alarm is not None and alarm.condition_active and pair.gone_since is None:
            if rule.keep_firing_for_s == 0:
                self._gone(key, rule, pair, at, work)
            else:
                pair.gone_since = at
                work.timers.add(key)
        if pair.alarm is None and pair.pending_since is None and pair.gone_since is None:
            del self.pairs[key]

    def _event(self, rule: Rule, device_id: str, event: Event, work: Round) -> None:
        message = event.message or f"event {event.type}"
        key = (device_id, rule.id)
        pair = self.pairs.get(key)
        if pair is None or pair.alarm is None:
            count = rule.condition.count if isinstance(rule.condition, EventCondition) else None
            if count is not None:
                if not self.counts.event(key, count, work.at):
                    return
                message += f" ({count.n} within {count.within_s} s)"
            pair = self.pairs.setdefault(key, Pair())
            self._raise(key, rule, pair, event.type, message, work, tuple(event.media))
        if rule.auto_clear_s is not None:
            pair.gone_since = work.at  # cleared auto_clear_s after the last such event
            work.timers.add(key)

    def _raise(
        self,
        key: PairKey,
        rule: Rule,
        pair: Pair,
        value: Any,
        message: str,
        work: Round,
        media: tuple[MediaRef, ...] = (),
    ) -> None:
        alarm = OpenAlarm(None, "active", True, work.at)
        pair.alarm, pair.active = alarm, True
        if pair.pending_since is not None:
            pair.pending_since = None
            work.timers.add(key)
        work.ops.append(Raise(key, rule, alarm, value, message or rule.name, media))

    def _gone(self, key: PairKey, rule: Rule, pair: Pair, at: int, work: Round) -> None:
        """The condition is gone for good (after keep_firing_for_s / auto_clear_s)."""
        alarm = pair.alarm
        if alarm is None:
            return
        if pair.gone_since is not None:
            pair.gone_since = None
            work.timers.add(key)
        if isinstance(rule.condition, EventCondition):
            clear, reason = True, f"no {rule.condition.match} event for {rule.auto_clear_s} s"
        else:
            clear, reason = alarm.state == "acknowledged", "condition gone"
        alarm.condition_active = False
        if clear:
            pair.alarm = None
        work.ops.append(Gone(key, rule, alarm, at, clear, reason))

    def _drop_pending(self, device_id: str, work: Round) -> None:
        """``device_id`` went away: the pending timers its outage would run out are dropped
        (its open alarms stay as they are)."""
        rules = self.index.rules
        for key in [k for k in self.pairs if k[0] == device_id and self.pairs[k].alarm is None]:
            rule = rules.get(key[1])
            if rule is not None and self.outages.suppresses(rule, device_id):
                self._set(rule, device_id, False, work)

    def _forget_devices(self, work: Round) -> None:
        removed, self._removed = self._removed, set()
        self.outages.forget(removed)
        self._last_seen = {k: v for k, v in self._last_seen.items() if k[0] not in removed}
        self.counts.forget(lambda key: key[0] in removed)
        for key in [k for k in self.pairs if k[0] in removed]:
            pair = self.pairs.pop(key)
            work.timers.add(key)
            rule = self.index.rules.get(key[1])
            if pair.alarm is not None and rule is not None:
                work.ops.append(Gone(key, rule, pair.alarm, work.at, True, "device deleted"))

    def _timers(self, work: Round) -> None:
        now = work.at
        rules = self.index.rules
        for key, pair in list(self.pairs.items()):
            rule = rules.get(key[1])
            if rule is None or not rule.enabled:
                continue
            if pair.pending_since is not None and now - pair.pending_since >= rule.for_s * 1000:
                value, message = pair.pending_value
                self._raise(key, rule, pair, value, message, work)
            if pair.gone_since is not None and now - pair.gone_since >= rule.clear_wait_ms:
                self._gone(key, rule, pair, now, work)
        for key_name, absent_rules in self.index.absence.items():
            for entry in self._directory.matching({}):
                for rule in absent_rules:
                    condition = rule.condition
                    if not isinstance(condition, AbsenceCondition):
                        continue
                    if not rule.target.covers(entry.id, entry.labels):
                        continue
                    held = self.pairs.get((entry.id, rule.id))
                    if held is not None and held.active:
                        continue
                    if self.outages.suppresses(rule, entry.id):
                        continue
                    seen = max(
                        self._last_seen.get((entry.id, key_name), self._started_at),
                        self.outages.back_at(entry.id),
                    )
                    if now - seen >= condition.seconds * 1000:
                        message = f"no {key_name} for {condition.seconds} s"
                        self._set(rule, entry.id, True, work, None, message)

    def next_due(self) -> int | None:
        """When (epoch ms) the clock's look at the timers (:meth:`_timers`) would next find a
        pending raise or a clear due, None when none runs: a replay of history
        (``preview.py``) looks then instead of every second (absence rules aside)."""
        dues: list[int] = []
        rules = self.index.rules
        for (_device_id, rule_id), pair in self.pairs.items():
            rule = rules.get(rule_id)
            if rule is None or not rule.enabled:
                continue
            if pair.pending_since is not None:
                dues.append(pair.pending_since + rule.for_s * 1000)
            if pair.gone_since is not None:
                dues.append(pair.gone_since + rule.clear_wait_ms)
        return min(dues, default=None)

    # -- persistence ------------------------------------------------------------------------
    async def _write(self, work: Round) -> None:
        states = [self._state_row(key) for key in work.timers]
        windows = self.counts.take_changed()
        hooks = list(self._hooks)
        directory = self._directory
        rules = self.index.rules

        def job(conn: Connection) -> list[AlarmChange]:
            changes: list[AlarmChange] = []
            for op in work.ops:
                change = apply(conn, op, work.at, directory)
                if change is not None:
                    changes.append(change)
            put_rule_states(conn, states)
            put_count_windows(conn, windows)
            if changes:
                changes = mark(conn, changes, rules)
                for hook in hooks:
                    hook(conn, changes)
            return changes

        try:
            # A transition is what someone waits for (its notification): it commits in a
            # transaction of its own ahead of the ingest batches queued with it (on SQLite's
            # one writer a bulk batch of thousands of samples takes tens of milliseconds);
            # timers alone ride with the batches.
            changes = await self._writes.run(job, urgent=bool(work.ops))
        except Exception:
            self.stats.write_errors += 1
            log.exception("alarm changes could not be written; the engine reloads its state")
            await self.load()
            return
        for op in work.ops:
            if op.alarm.id is not None:
                if isinstance(op, Raise):
                    self._by_alarm[op.alarm.id] = op.key
                    self.stats.raised += 1
                elif isinstance(op, Gone) and op.clear:
                    self._by_alarm.pop(op.alarm.id, None)
                    self.stats.cleared += 1
        self.published(changes)

    def _state_row(self, key: PairKey) -> RuleStateRow:
        pair = self.pairs.get(key)
        if pair is None:
            return RuleStateRow(key[0], key[1], None, None)
        value, message = pair.pending_value if pair.pending_since is not None else (None, "")
        return RuleStateRow(key[0], key[1], pair.pending_since, pair.gone_since, value, message)

    # -- for the lifecycle service (under :attr:`lock`) -------------------------------------
    def pair_of(self, alarm_id: int) -> Pair | None:
        """The evaluation state holding the open alarm ``alarm_id``."""
        key = self._by_alarm.get(alarm_id)
        return None if key is None else self.pairs.get(key)

    def forget_alarm(self, alarm_id: int) -> None:
        """A user cleared ``alarm_id``: its condition must be seen anew to raise again."""
        key = self._by_alarm.pop(alarm_id, None)
        if key is not None:
            self.pairs.pop(key, None)

    def rule_changed(self, rule: Rule | None, rule_id: str) -> None:
        """A rule was put (``rule``) or deleted (None): index it; its pending timers and count
        windows start over (the clear timers of its open alarms run on); a deleted rule's
        state is forgotten."""
        if rule is None:
            self.index.remove(rule_id)
        else:
            self.index.put(rule)
        self.counts.forget(lambda key: key[1] == rule_id)
        for key in [k for k in self.pairs if k[1] == rule_id]:
            pair = self.pairs[key]
            pair.pending_since = None
            if pair.alarm is None or rule is None:
                del self.pairs[key]
                if pair.alarm is not None and pair.alarm.id is not None:
                    self._by_alarm.pop(pair.alarm.id, None)
            elif not pair.alarm.condition_active:
                pair.active = False
