"""N-of-M counts: a condition that must be seen several times before it holds.

One noisy reading should not raise an alarm, and a PIN typed wrong once is a person, five
times in five minutes is an attack. Two counts, both a field of their condition:

- threshold ``count: {"n": 3, "of": 5}``: each value of the key is marked *beyond* (past
  ``raise``), *safe* (past ``clear``, on the safe side) or *between*. The condition starts to
  hold when at least ``n`` of the device's last ``of`` values are beyond, and stops holding
  when at least ``n`` of the last ``of`` are safe. Hysteresis stays: values between the two
  thresholds count for neither side.
- event ``count: {"n": 5, "within_s": 300}``: an alarm is raised when ``n`` matching events
  arrive within ``within_s`` seconds (of the hub's clock). The events that raised it are used
  up: after the alarm clears, ``n`` new ones are needed.

The windows are rule state: :class:`CountWindows` keeps them per (device, rule), bounded by
``of`` marks or ``n`` times, and hands the changed ones to the engine's write job
(``alarm_count_windows``), so a restart (or a second hub) continues where they were.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from fieldhub.hub.errors import Invalid
from fieldhub.hub.store.alarms import WindowRow

__all__ = [
    "MAX_COUNT",
    "MAX_WITHIN_S",
    "CountWindows",
    "EventCount",
    "ThresholdCount",
    "parse_event_count",
    "parse_threshold_count",
]

MAX_COUNT: Final = 100
"""Largest ``of`` (threshold) or ``n`` (event): the bound of a window's size in memory and
in the store."""
MAX_WITHIN_S: Final = 7 * 24 * 3600
"""Longest window of an event count (a week)."""
PairKey = tuple[str, str]  # (device id, rule id), as the engine's
BEYOND: Final = 1
SAFE: Final = -1
BETWEEN: Final = 0


@dataclass(frozen=True, slots=True)
class ThresholdCount:
    """At least ``n`` of the last ``of`` values decide (see the module's text)."""

    n: int
    of: int

    def to_dict(self) -> dict[str, Any]:
        """The form :func:`parse_threshold_count` reads."""
        return {"n": self.n, "of": self.of}


@dataclass(frozen=True, slots=True)
class EventCount:
    """``n`` matching events within ``within_s`` seconds raise."""

    n: int
    within_s: int

    def to_dict(self) -> dict[str, Any]:
        """The form :func:`parse_event_count` reads."""
        return {"n": self.n, "within_s": self.within_s}


def parse_threshold_count(raw: Any) -> ThresholdCount:
    """``condition.count`` of a threshold rule, checked.

    Raises:
        Invalid: naming ``("condition", "count", field)``.
    """
    fields = _fields(raw, {"n", "of"}, '{"n": 3, "of": 5}')
    of = _whole(fields, "of", 1, MAX_COUNT)
    n = _whole(fields, "n", 1, of)
    return ThresholdCount(n, of)


def parse_event_count(raw: Any) -> EventCount:
    """``condition.count`` of an event rule, checked.

    Raises:
        Invalid: naming ``("condition", "count", field)``.
    """
    fields = _fields(raw, {"n", "within_s"}, '{"n": 5, "within_s": 300}')
    n = _whole(fields, "n", 1, MAX_COUNT)
    within_s = _whole(fields, "within_s", 1, MAX_WITHIN_S)
    return EventCount(n, within_s)


def _fields(raw: Any, names: set[str], example: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise Invalid(f"condition.count: an object like {example}", ("condition", "count"))
    unknown = sorted(set(raw) - names)
    if unknown:
        raise Invalid(
            f"condition.count.{unknown[0]}: not a field of this count ({example})",
            ("condition", "count", str(unknown[0])),
        )
    return raw


def _whole(raw: Mapping[str, Any], field: str, low: int, high: int) -> int:
    value = raw.get(field)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise Invalid(
            f"condition.count.{field} {value!r}: a whole number from {low} to {high}",
            ("condition", "count", field),
        )
    return value


class CountWindows:
    """The windows of every (device, rule) whose rule has a count, and which ones changed."""

    def __init__(self) -> None:
        self._windows: dict[PairKey, collections.deque[int]] = {}
        self._changed: set[PairKey] = set()

    def threshold(
        self, key: PairKey, count: ThresholdCount, beyond: bool, safe: bool, active: bool
    ) -> bool:
        """Add one value (past ``raise``: ``beyond``; past ``clear``: ``safe``) and answer
        whether the condition holds after it, given whether it held (``active``)."""
        window = self._window(key, count.of)
        window.append(BEYOND if beyond else SAFE if safe else BETWEEN)
        self._changed.add(key)
        side = SAFE if active else BEYOND
        seen = sum(1 for mark in window if mark == side)
        return not active if seen >= count.n else active

    def event(self, key: PairKey, count: EventCount, at: int) -> bool:
        """Add one event at ``at`` (ms); True when it makes ``n`` within ``within_s``: the
        window is then used up."""
        window = self._window(key, count.n)
        window.append(at)
        self._changed.add(key)
        if len(window) == count.n and at - window[0] <= count.within_s * 1000:
            window.clear()
            return True
        return False

    def _window(self, key: PairKey, size: int) -> collections.deque[int]:
        window = self._windows.get(key)
        if window is None or window.maxlen != size:  # new, or the rule's count changed
            window = self._windows[key] = collections.deque(window or (), maxlen=size)
        return window

    def forget(self, which: Callable[[PairKey], bool]) -> None:
        """The windows ``which`` picks start over (their rule changed, their device went)."""
        for key in [k for k in self._windows if which(k)]:
            del self._windows[key]
            self._changed.add(key)

    def load(self, rows: Iterable[WindowRow]) -> None:
        """The windows as stored (sizes are fixed again at their next value)."""
        self._windows = {
            (row.device_id, row.rule_id): collections.deque(row.window or (), maxlen=MAX_COUNT)
            for row in rows
        }
        self._changed = set()

    def changed(self) -> bool:
        """Whether a window changed since :meth:`take_changed`."""
        return bool(self._changed)

    def take_changed(self) -> list[WindowRow]:
        """The windows changed since the last call, to be written."""
        changed, self._changed = self._changed, set()
        rows = []
        for key in changed:
            window = self._windows.get(key)
            rows.append(WindowRow(key[0], key[1], None if not window else list(window)))
        return rows
