"""Rules indexed by what they listen to, so a committed batch touches only its rules.

With a thousand rules, looking at each for each message would cost ingest's loop its
throughput; here a telemetry value costs one dict look-up for its key, an event one look-up
of its type (globs are matched once per distinct type, then remembered).
"""

from __future__ import annotations

from collections.abc import Iterable
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

    @property
    def telemetry_keys(self) -> set[str]:
        """Keys some threshold or absence rule reads."""
        return set(self.threshold) | set(self.absence)

    def _build(self) -> None:
        self.threshold, self.absence, self.state = {}, {}, {}
        self.presence, self._events, self._by_event_type = [], [], {}
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
