"""Rules indexed by what they listen to, so a committed batch touches only its rules.

With a thousand rules, looking at each for each message would cost ingest's loop its
throughput; here a telemetry value costs one dict look-up for its key and device, an event
one for its type and device: which rules cover a device is worked out once per (key, device)
and remembered until a rule or a device's labels change (:meth:`RuleIndex.forget_devices`).
Globs are matched once per distinct event type.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
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

_MAX_EVENT_TYPES: Final = 10_000
"""Distinct event types whose matching rules are remembered (then the memo starts over)."""
_MAX_COVERING: Final = 200_000
"""(what, key, device) triples whose covering rules are remembered (then it starts over)."""


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
        self._covering: dict[tuple[str, str, str], list[Rule]] = {}
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
            found = [r for r in self._events if _event(r).matches(event_type)]
            self._by_event_type[event_type] = found
        return found

    def threshold_for(self, key: str, device_id: str, labels: Mapping[str, str]) -> list[Rule]:
        """Enabled threshold rules on ``key`` that cover the device."""
        return self._cover("t", self.threshold, key, device_id, labels)

    def absence_for(self, key: str, device_id: str, labels: Mapping[str, str]) -> list[Rule]:
        """Enabled absence rules on ``key`` that cover the device."""
        return self._cover("a", self.absence, key, device_id, labels)

    def state_for(self, key: str, device_id: str, labels: Mapping[str, str]) -> list[Rule]:
        """Enabled state rules on ``key`` that cover the device."""
        return self._cover("s", self.state, key, device_id, labels)

    def event_for(self, event_type: str, device_id: str, labels: Mapping[str, str]) -> list[Rule]:
        """Enabled event rules matching ``event_type`` that cover the device."""
        cache_key = ("e", event_type, device_id)
        found = self._covering.get(cache_key)
        if found is None:
            found = [r for r in self.for_event(event_type) if r.target.covers(device_id, labels)]
            self._remember(cache_key, found)
        return found

    def forget_devices(self) -> None:
        """A device was added, changed or deleted: which rules cover whom is worked out anew."""
        self._covering = {}

    def _cover(
        self,
        what: str,
        table: dict[str, list[Rule]],
        key: str,
        device_id: str,
        labels: Mapping[str, str],
    ) -> list[Rule]:
        cache_key = (what, key, device_id)
        found = self._covering.get(cache_key)
        if found is None:
            found = [r for r in table.get(key, ()) if r.target.covers(device_id, labels)]
            self._remember(cache_key, found)
        return found

    def _remember(self, cache_key: tuple[str, str, str], rules: list[Rule]) -> None:
        if len(self._covering) >= _MAX_COVERING:
            self._covering = {}
        self._covering[cache_key] = rules

    def _build(self) -> None:
        self.threshold, self.absence, self.state = {}, {}, {}
        self.presence, self._events, self._by_event_type = [], [], {}
        self._covering = {}
        for rule in self.rules.values():
            if not rule.enabled:
                continue
            condition = rule.condition
            if isinstance(condition, ThresholdCondition):
                self.threshold.setdefault(condition.key, []).append(rule)
            elif isinstance(condition, AbsenceCondition):
                self.absence.setdefault(condition.key, []).append(rule)
            elif isinstance(condition, StateCondition):
                self.state.setdefault(condition.key, []).append(rule)
            elif isinstance(condition, PresenceCondition):
                self.presence.append(rule)
            else:
                self._events.append(rule)


def _event(rule: Rule) -> EventCondition:
    condition = rule.condition
    if not isinstance(condition, EventCondition):
        raise TypeError(f"rule {rule.id!r} is not an event rule")
    return condition
