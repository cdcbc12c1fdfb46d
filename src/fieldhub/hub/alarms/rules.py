"""Alarm rules: what a rule is, and the one place that says which rules are valid.

A rule is a frozen value built only by :func:`parse_rule`, which checks every field and
raises :class:`~fieldhub.hub.errors.Invalid` naming the field and the bad value (its ``loc``
is the path inside the rule, e.g. ``("condition", "clear")``). The REST API and the YAML file
of ``fieldhub rules apply`` both hand their raw dict to it, so a rule is valid or not in one
place, whatever door it came through.

Conditions (``condition.kind``):

- ``threshold``: a telemetry ``key`` ``above`` or ``below`` with hysteresis: it becomes true
  when the value reaches ``raise`` and false only once it is back past ``clear`` (above:
  ``clear < raise``; below: ``clear > raise``), so values wandering in between change nothing.
- ``event``: an event type matching a glob (``door.*``); true at the moment of the event.
  Event alarms have no clear condition: a user clears them (``clearable_by_user``) or they
  clear ``auto_clear_s`` after the last matching event.
- ``presence``: the device is ``offline`` (or ``stale``).
- ``state``: a reported-state ``key`` equals ``equals``.
- ``absence``: telemetry ``key`` not received for ``seconds``.

Threshold and event conditions may carry a ``count`` (N of M values, N events within a time):
``counting.py`` says what it means and checks it.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from fieldhub.hub.alarms.counting import (
    EventCount,
    ThresholdCount,
    parse_event_count,
    parse_threshold_count,
)
from fieldhub.hub.errors import Invalid

__all__ = [
    "SEVERITIES",
    "AbsenceCondition",
    "Condition",
    "EventCondition",
    "Flapping",
    "PresenceCondition",
    "Rule",
    "StateCondition",
    "Target",
    "ThresholdCondition",
    "parse_rule",
]

Severity = Literal["critical", "major", "minor", "warning", "info"]
SEVERITIES: Final[tuple[Severity, ...]] = ("critical", "major", "minor", "warning", "info")
RULE_ID_PATTERN: Final = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
_RULE_ID = re.compile(RULE_ID_PATTERN)
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
_EVENT_GLOB = re.compile(r"^[a-z0-9_.*?\[\]!-]{1,64}$")
MAX_SECONDS: Final = 366 * 24 * 3600
"""Longest duration a rule may name (a year): every timer fits in a 64-bit millisecond count."""
MAX_TARGET_DEVICES: Final = 10_000
MAX_TARGET_LABELS: Final = 16
MAX_NAME: Final = 128


@dataclass(frozen=True, slots=True)
class Target:
    """Which devices a rule watches: ``devices`` (ids), or ``labels`` (all must match), or
    every device (both None)."""

    devices: frozenset[str] | None = None
    labels: Mapping[str, str] | None = None

    def covers(self, device_id: str, labels: Mapping[str, str]) -> bool:
        """True when the device ``device_id`` with ``labels`` is watched by the rule."""
        if self.devices is not None:
            return device_id in self.devices
        if self.labels is not None:
            return all(labels.get(k) == v for k, v in self.labels.items())
        return True

    def to_dict(self) -> dict[str, Any]:
        """The form :func:`parse_rule` reads."""
        if self.devices is not None:
            return {"devices": sorted(self.devices)}
        if self.labels is not None:
            return {"labels": dict(self.labels)}
        return {"all": True}


@dataclass(frozen=True, slots=True)
class ThresholdCondition:
    """A numeric telemetry value past ``raise``, until back past ``clear``."""

    key: str
    direction: Literal["above", "below"]
    raise_at: float
    clear_at: float
    kind: Literal["threshold"] = "threshold"
    count: ThresholdCount | None = None  # N of the last M values decide (counting.py)

    def next_state(self, active: bool, value: float) -> bool:
        """Whether the condition holds after ``value``, given whether it held before: not
        :meth:`safe` once active, else :meth:`beyond`, spelled out without the two calls
        (every value of a key with a rule comes here: benchmarks/alarm_engine.py)."""
        if self.direction == "above":
            return value > self.clear_at if active else value >= self.raise_at
        return value < self.clear_at if active else value <= self.raise_at

    def beyond(self, value: float) -> bool:
        """Whether ``value`` is past ``raise`` (the side that raises)."""
        return value >= self.raise_at if self.direction == "above" else value <= self.raise_at

    def safe(self, value: float) -> bool:
        """Whether ``value`` is past ``clear`` (the side that clears)."""
        return value <= self.clear_at if self.direction == "above" else value >= self.clear_at

    def to_dict(self) -> dict[str, Any]:
        """The form :func:`parse_rule` reads."""
        form: dict[str, Any] = {
            "kind": self.kind,
            "key": self.key,
            "direction": self.direction,
            "raise": self.raise_at,
            "clear": self.clear_at,
        }
        if self.count is not None:
            form["count"] = self.count.to_dict()
        return form


@dataclass(frozen=True, slots=True)
class EventCondition:
    """An event whose type matches the glob ``match``."""

    match: str
    kind: Literal["event"] = "event"
    count: EventCount | None = None  # N events within a time raise (counting.py)

    def matches(self, event_type: str) -> bool:
        """True when ``event_type`` matches the glob (case-sensitive)."""
        return fnmatch.fnmatchcase(event_type, self.match)

    def to_dict(self) -> dict[str, Any]:
        """The form :func:`parse_rule` reads."""
        form: dict[str, Any] = {"kind": self.kind, "match": self.match}
        if self.count is not None:
            form["count"] = self.count.to_dict()
        return form


@dataclass(frozen=True, slots=True)
class PresenceCondition:
    """The device's presence is ``presence``."""

    presence: Literal["offline", "stale"]
    kind: Literal["presence"] = "presence"

    def to_dict(self) -> dict[str, Any]:
        """The form :func:`parse_rule` reads."""
        return {"kind": self.kind, "presence": self.presence}


@dataclass(frozen=True, slots=True)
class StateCondition:
    """Reported state ``key`` equals ``equals``."""

    key: str
    equals: Any
    kind: Literal["state"] = "state"

    def to_dict(self) -> dict[str, Any]:
        """The form :func:`parse_rule` reads."""
        return {"kind": self.kind, "key": self.key, "equals": self.equals}

    def holds(self, value: Any) -> bool:
        """Whether a reported ``value`` is the one watched for: equal and of the same kind
        (``true`` is not ``1``)."""
        if value is None:
            return False
        if isinstance(value, bool) or isinstance(self.equals, bool):
            return (
                isinstance(value, bool) and isinstance(self.equals, bool) and value == self.equals
            )
        return bool(value == self.equals)


@dataclass(frozen=True, slots=True)
class AbsenceCondition:
    """Telemetry ``key`` not received for ``seconds``."""

    key: str
    seconds: int
    kind: Literal["absence"] = "absence"

    def to_dict(self) -> dict[str, Any]:
        """The form :func:`parse_rule` reads."""
        return {"kind": self.kind, "key": self.key, "seconds": self.seconds}


Condition = (
    ThresholdCondition | EventCondition | PresenceCondition | StateCondition | AbsenceCondition
)


@dataclass(frozen=True, slots=True)
class Flapping:
    """More than ``changes`` raises and clears within ``window_s`` make (device, rule) flap:
    notifications wait until it has been quiet for ``window_s`` (``flapping.py``)."""

    changes: int = 6
    window_s: int = 600

    def to_dict(self) -> dict[str, Any]:
        """The form :func:`parse_rule` reads."""
        return {"changes": self.changes, "window_s": self.window_s}


DEFAULT_FLAPPING: Final = Flapping()
"""Six raises and clears in ten minutes: three alarms come and gone, not a real problem's
shape (a real one stays raised)."""


@dataclass(frozen=True, slots=True)
class Rule:
    """A validated alarm rule (build it with :func:`parse_rule`)."""

    id: str
    name: str
    enabled: bool
    severity: Severity
    target: Target
    condition: Condition
    for_s: int = 0
    keep_firing_for_s: int = 0
    clearable_by_user: bool = False
    auto_clear_s: int | None = None
    escalation: str | None = None
    """The id of the escalation policy for its alarms (whether it exists: ``AlarmService``)."""
    flapping: Flapping = DEFAULT_FLAPPING

    @property
    def clear_wait_ms(self) -> int:
        """How long a gone condition (or an event rule's last event) waits before it clears."""
        wait_s = self.auto_clear_s if self.auto_clear_s is not None else self.keep_firing_for_s
        return wait_s * 1000

    @property
    def user_clearable(self) -> bool:
        """Event rules have no clear condition: a user may clear them where the rule says so."""
        return self.clearable_by_user

    def to_dict(self) -> dict[str, Any]:
        """The form :func:`parse_rule` reads (and the API answers with)."""
        return {
            "id": self.id,
            "name": self.name,
            "enabled": self.enabled,
            "severity": self.severity,
            "target": self.target.to_dict(),
            "condition": self.condition.to_dict(),
            "for_s": self.for_s,
            "keep_firing_for_s": self.keep_firing_for_s,
            "clearable_by_user": self.clearable_by_user,
            "auto_clear_s": self.auto_clear_s,
            "escalation": self.escalation,
            "flapping": self.flapping.to_dict(),
        }


_RULE_FIELDS: Final = frozenset(Rule.__slots__)


def parse_rule(
    raw: Mapping[str, Any], *, rule_id: str | None = None, loc: tuple[str, ...] = ()
) -> Rule:
    """A :class:`Rule` from its dict form, every field checked.

    Args:
        raw: the rule as sent (JSON or YAML).
        rule_id: the id to use when ``raw`` has none (a new rule), or the id of the rule being
            replaced (which ``raw`` may repeat but not contradict).

        loc: where the rule sits in the request (``("body",)``), put before each error's
            ``loc``.

    Raises:
        Invalid: the first bad field, named in the message and in ``loc``.
    """
    try:
        return _parse(raw, rule_id)
    except Invalid as exc:
        if not loc:
            raise
        raise Invalid(str(exc), (*loc, *exc.loc)) from None


def _parse(raw: Mapping[str, Any], rule_id: str | None) -> Rule:
    if not isinstance(raw, Mapping):
        raise Invalid(f"a rule is an object, not {type(raw).__name__}", ())
    unknown = sorted(set(raw) - _RULE_FIELDS)
    if unknown:
        raise Invalid(f"unknown field {unknown[0]!r}", (unknown[0],))
    the_id = raw.get("id", rule_id)
    if rule_id is not None and the_id != rule_id:
        raise Invalid(f"id {the_id!r} differs from the rule's id {rule_id!r}", ("id",))
    if not isinstance(the_id, str) or not _RULE_ID.fullmatch(the_id):
        raise Invalid(
            f"id {the_id!r}: 1-64 of a-z 0-9 _ . - starting with a letter or digit", ("id",)
        )
    name = raw.get("name", the_id)
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME:
        raise Invalid(f"name {name!r}: a text of 1-{MAX_NAME} characters", ("name",))
    enabled = _bool(raw, "enabled", True)
    severity = raw.get("severity", "warning")
    if severity not in SEVERITIES:
        raise Invalid(f"severity {severity!r}: one of {', '.join(SEVERITIES)}", ("severity",))
    target = _target(raw.get("target", {"all": True}))
    condition = _condition(raw.get("condition"))
    for_s = _seconds(raw, "for_s", 0)
    keep_firing_for_s = _seconds(raw, "keep_firing_for_s", 0)
    clearable = _bool(raw, "clearable_by_user", isinstance(condition, EventCondition))
    auto_clear_s = raw.get("auto_clear_s")
    if auto_clear_s is not None:
        auto_clear_s = _seconds(raw, "auto_clear_s", 0)
        if auto_clear_s < 1:
            raise Invalid(f"auto_clear_s {auto_clear_s!r}: at least 1 s", ("auto_clear_s",))
    if isinstance(condition, EventCondition):
        if not clearable and auto_clear_s is None:
            raise Invalid(
                "an event rule has no clear condition: set clearable_by_user or auto_clear_s",
                ("clearable_by_user",),
            )
        if keep_firing_for_s:
            raise Invalid(
                "keep_firing_for_s: an event rule clears by user or by auto_clear_s",
                ("keep_firing_for_s",),
            )
        if for_s:
            raise Invalid(
                f"for_s {for_s}: an event rule raises at the event, it has no duration",
                ("for_s",),
            )
    elif auto_clear_s is not None:
        raise Invalid(
            f"auto_clear_s: only event rules clear by time, this is a {condition.kind} rule",
            ("auto_clear_s",),
        )
    escalation = raw.get("escalation")
    if escalation is not None and (
        not isinstance(escalation, str) or not _RULE_ID.fullmatch(escalation)
    ):
        raise Invalid(f"escalation {escalation!r}: the id of an escalation policy", ("escalation",))
    return Rule(
        id=the_id,
        name=name,
        enabled=enabled,
        severity=severity,
        target=target,
        condition=condition,
        for_s=for_s,
        keep_firing_for_s=keep_firing_for_s,
        clearable_by_user=clearable,
        auto_clear_s=auto_clear_s,
        escalation=escalation,
        flapping=_flapping(raw.get("flapping")),
    )


def _flapping(raw: Any) -> Flapping:
    if raw is None:
        return DEFAULT_FLAPPING
    if not isinstance(raw, Mapping) or set(raw) - {"changes", "window_s"}:
        raise Invalid('flapping: {"changes": K, "window_s": W}', ("flapping",))
    changes = raw.get("changes", DEFAULT_FLAPPING.changes)
    if isinstance(changes, bool) or not isinstance(changes, int) or not 2 <= changes <= 1000:
        raise Invalid(
            f"flapping.changes {changes!r}: a whole number from 2 to 1000", ("flapping", "changes")
        )
    window_s = raw.get("window_s", DEFAULT_FLAPPING.window_s)
    if isinstance(window_s, bool) or not isinstance(window_s, int) or not 1 <= window_s <= 86400:
        raise Invalid(
            f"flapping.window_s {window_s!r}: whole seconds from 1 to 86400",
            ("flapping", "window_s"),
        )
    return Flapping(changes, window_s)


def _bool(raw: Mapping[str, Any], field: str, default: bool) -> bool:
    value = raw.get(field, default)
    if not isinstance(value, bool):
        raise Invalid(f"{field} {value!r}: true or false", (field,))
    return value


def _seconds(raw: Mapping[str, Any], field: str, default: int, *loc: str) -> int:
    value = raw.get(field, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SECONDS:
        raise Invalid(f"{field} {value!r}: whole seconds from 0 to {MAX_SECONDS}", (*loc, field))
    return value


def _key(raw: Mapping[str, Any], field: str, *loc: str) -> str:
    value = raw.get(field)
    if not isinstance(value, str) or not _KEY.fullmatch(value):
        raise Invalid(
            f"{field} {value!r}: a key of 1-64 letters, digits, '_', '.', '-'", (*loc, field)
        )
    return value


def _number(raw: Mapping[str, Any], field: str) -> float:
    value = raw.get(field)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise Invalid(f"{field} {value!r}: a finite number", ("condition", field))
    return float(value)


def _target(raw: Any) -> Target:
    if not isinstance(raw, Mapping) or len(raw) != 1:
        raise Invalid(
            'target: one of {"all": true}, {"devices": [ids]}, {"labels": {key: value}}',
            ("target",),
        )
    (kind, value), *_ = raw.items()
    if kind == "all":
        if value is not True:
            raise Invalid(f"target.all {value!r}: true", ("target", "all"))
        return Target()
    if kind == "devices":
        if (
            not isinstance(value, list)
            or not 1 <= len(value) <= MAX_TARGET_DEVICES
            or not all(isinstance(d, str) and 1 <= len(d) <= 64 for d in value)
        ):
            raise Invalid(
                f"target.devices: a list of 1-{MAX_TARGET_DEVICES} device ids",
                ("target", "devices"),
            )
        return Target(devices=frozenset(value))
    if kind == "labels":
        if (
            not isinstance(value, Mapping)
            or not 1 <= len(value) <= MAX_TARGET_LABELS
            or not all(
                isinstance(k, str) and isinstance(v, str) and 1 <= len(k) <= 64 and len(v) <= 128
                for k, v in value.items()
            )
        ):
            raise Invalid(
                f"target.labels: 1-{MAX_TARGET_LABELS} text labels, all must match",
                ("target", "labels"),
            )
        return Target(labels=dict(value))
    raise Invalid(f"target {kind!r}: one of all, devices, labels", ("target", str(kind)))


def _condition(raw: Any) -> Condition:
    if not isinstance(raw, Mapping):
        raise Invalid("condition: an object with a kind", ("condition",))
    kind = raw.get("kind")
    fields = {
        "threshold": {"kind", "key", "direction", "raise", "clear", "count"},
        "event": {"kind", "match", "count"},
        "presence": {"kind", "presence"},
        "state": {"kind", "key", "equals"},
        "absence": {"kind", "key", "seconds"},
    }
    if kind not in fields:
        raise Invalid(f"condition.kind {kind!r}: one of {', '.join(fields)}", ("condition", "kind"))
    unknown = sorted(set(raw) - fields[kind])
    if unknown:
        raise Invalid(
            f"condition.{unknown[0]}: not a field of a {kind} condition", ("condition", unknown[0])
        )
    if kind == "threshold":
        key = _key(raw, "key", "condition")
        direction = raw.get("direction")
        if direction not in ("above", "below"):
            raise Invalid(
                f"condition.direction {direction!r}: above or below", ("condition", "direction")
            )
        raise_at, clear_at = _number(raw, "raise"), _number(raw, "clear")
        crossed = clear_at >= raise_at if direction == "above" else clear_at <= raise_at
        if crossed:
            need = "below" if direction == "above" else "above"
            raise Invalid(
                f"condition.clear {clear_at:g}: must be {need} raise {raise_at:g} for a"
                f" threshold {direction} (hysteresis)",
                ("condition", "clear"),
            )
        count = None if raw.get("count") is None else parse_threshold_count(raw["count"])
        return ThresholdCondition(key, direction, raise_at, clear_at, count=count)
    if kind == "event":
        match = raw.get("match")
        if not isinstance(match, str) or not _EVENT_GLOB.fullmatch(match):
            raise Invalid(
                f"condition.match {match!r}: an event type or glob (door.*), 1-64 characters",
                ("condition", "match"),
            )
        event_count = None if raw.get("count") is None else parse_event_count(raw["count"])
        return EventCondition(match, count=event_count)
    if kind == "presence":
        presence = raw.get("presence")
        if presence not in ("offline", "stale"):
            raise Invalid(
                f"condition.presence {presence!r}: offline or stale", ("condition", "presence")
            )
        return PresenceCondition(presence)
    if kind == "state":
        key = _key(raw, "key", "condition")
        if "equals" not in raw:
            raise Invalid("condition.equals: missing", ("condition", "equals"))
        equals = raw["equals"]
        if not isinstance(equals, str | int | float | bool) or (
            isinstance(equals, str) and len(equals) > 256
        ):
            raise Invalid(
                f"condition.equals {equals!r}: a text (up to 256), number or boolean",
                ("condition", "equals"),
            )
        return StateCondition(key, equals)
    key = _key(raw, "key", "condition")
    seconds = _seconds(raw, "seconds", 0, "condition")
    if seconds < 1:
        raise Invalid(f"condition.seconds {seconds}: at least 1", ("condition", "seconds"))
    return AbsenceCondition(key, seconds)
