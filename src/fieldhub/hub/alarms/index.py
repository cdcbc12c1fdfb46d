"""Rules indexed by what they listen to, so a committed batch touches only its rules.

With a thousand rules, looking at each for each message would cost ingest's loop its
throughput; here a telemetry value costs one dict look-up for its key and device, an event
one for its type and device: which rules cover a device is worked out once per (key, device)
and remembered until a rule or a device's labels change (:meth:`RuleIndex.forget_devices`).
Globs are matched once per distinct event type.

Working it out must not cost the rules' number either: a fleet where each device has its own
rule (1,000 rules on one key, each naming one device) would otherwise test every rule of the
key for every device, a million tests after each device added or changed (which empties the
memo), paid on the alarm task between ingest's commits. So the rules of a key that name their
devices are filed by device (:class:`_KeyRules`), and only the rules by labels or for all
devices are tested.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from fieldhub.hub.alarms.rules import (
    AbsenceCondition,
    EventCondition,
    PresenceCondition,
    Rule,
    StateCondition,
    ThresholdCondition,
)

__all__ = ["RuleIndex"]

_NONE: Final[list[Rule]] = []

_MAX_EVENT_TYPES: Final = 10_000
"""Distinct event types whose matching rules are remembered (then the memo starts over)."""
_MAX_COVERING: Final = 200_000
"""Devices whose covering rules one key (or event type) remembers (then it starts over)."""

LabelsOf = Callable[[str], Mapping[str, str] | None]
"""A device's labels, None for a device the hub does not know (it is watched by no rule)."""


class RuleIndex:
    """The enabled rules, by the telemetry key, event type, state key or presence they need."""

    def __init__(self, rules: Iterable[Rule] = ()) -> None:
        self.rules: dict[str, Rule] = {}
        self.threshold: dict[str, list[Rule]] = {}
        self.absence: dict[str, list[Rule]] = {}
        self.state: dict[str, list[Rule]] = {}
        self.presence: list[Rule] = []
        self._events: list[Rule] = []
        self._by_event_type: dict[str, list[Rule]] = {}
        self._filed: dict[str, dict[str, _KeyRules]] = {}  # kind → key (event type) → rules
        for rule in rules:
            self.rules[rule.id] = rule
        self._build()

    def put(self, rule: Rule) -> None:
        """Add or replace a rule."""
        self.rules[rule.id] = rule
        self._build()

    def remove(self, rule_id: str) -> None:
        """Forget a rule."""
        self.rules.pop(rule_id, None)
        self._build()

    def for_event(self, event_type: str) -> list[Rule]:
        """Enabled event rules whose glob matches ``event_type``."""
        found = self._by_event_type.get(event_type)
        if found is None:
            if len(self._by_event_type) >= _MAX_EVENT_TYPES:
                self._by_event_type.clear()
                self._filed["e"] = {}
            found = [r for r in self._events if _event(r).matches(event_type)]
            self._by_event_type[event_type] = found
        return found

    def threshold_for(self, key: str, device_id: str, labels_of: LabelsOf) -> list[Rule]:
        """Enabled threshold rules on ``key`` that cover the device."""
        filed = self._filed["t"].get(key)
        return _NONE if filed is None else filed.covering(device_id, labels_of)

    def absence_for(self, key: str, device_id: str, labels_of: LabelsOf) -> list[Rule]:
        """Enabled absence rules on ``key`` that cover the device."""
        filed = self._filed["a"].get(key)
        return _NONE if filed is None else filed.covering(device_id, labels_of)

    def state_for(self, key: str, device_id: str, labels_of: LabelsOf) -> list[Rule]:
        """Enabled state rules on ``key`` that cover the device."""
        filed = self._filed["s"].get(key)
        return _NONE if filed is None else filed.covering(device_id, labels_of)

    def event_for(self, event_type: str, device_id: str, labels_of: LabelsOf) -> list[Rule]:
        """Enabled event rules matching ``event_type`` that cover the device."""
        events = self._filed["e"]
        filed = events.get(event_type)
        if filed is None:
            filed = events[event_type] = _KeyRules()
            for rule in self.for_event(event_type):
                filed.add(rule)
        return filed.covering(device_id, labels_of)

    def forget_devices(self) -> None:
        """A device was added, changed or deleted: which rules cover whom is worked out anew."""
        for table in self._filed.values():
            for filed in table.values():
                filed.memo = {}

    def _build(self) -> None:
        self.threshold, self.absence, self.state = {}, {}, {}
        self.presence, self._events, self._by_event_type = [], [], {}
        self._filed = {"t": {}, "a": {}, "s": {}, "e": {}}
        for rule in self.rules.values():
            if not rule.enabled:
                continue
            condition = rule.condition
            if isinstance(condition, ThresholdCondition):
                self._file("t", self.threshold, condition.key, rule)
            elif isinstance(condition, AbsenceCondition):
                self._file("a", self.absence, condition.key, rule)
            elif isinstance(condition, StateCondition):
                self._file("s", self.state, condition.key, rule)
            elif isinstance(condition, PresenceCondition):
                self.presence.append(rule)
            else:
                self._events.append(rule)

    def _file(self, what: str, table: dict[str, list[Rule]], key: str, rule: Rule) -> None:
        table.setdefault(key, []).append(rule)
        self._filed[what].setdefault(key, _KeyRules()).add(rule)


@dataclass(slots=True)
class _KeyRules:
    """The enabled rules of one kind on one key (or event type): those naming devices filed by
    device, the others (labels, all devices) tested per device; what covers a device is
    remembered in ``memo`` until devices change."""

    by_device: dict[str, list[Rule]] = field(default_factory=dict)
    wide: list[Rule] = field(default_factory=list)
    memo: dict[str, list[Rule]] = field(default_factory=dict)

    def add(self, rule: Rule) -> None:
        devices = rule.target.devices
        if devices is None:
            self.wide.append(rule)
            return
        for device_id in devices:
            self.by_device.setdefault(device_id, []).append(rule)

    def covering(self, device_id: str, labels_of: LabelsOf) -> list[Rule]:
        """The rules that watch the device (a list the caller must not change)."""
        found = self.memo.get(device_id)
        if found is not None:
            return found
        labels = labels_of(device_id)
        if labels is None:
            return _NONE
        found = self.by_device.get(device_id, _NONE)
        if self.wide:
            found = found + [r for r in self.wide if r.target.covers(device_id, labels)]
        if len(self.memo) >= _MAX_COVERING:
            self.memo = {}
        self.memo[device_id] = found
        return found


def _event(rule: Rule) -> EventCondition:
    condition = rule.condition
    if not isinstance(condition, EventCondition):
        raise TypeError(f"rule {rule.id!r} is not an event rule")
    return condition
