"""Maintenance windows: what one is, which are valid (the one home), and when one is open.

A window says "work is being done here, do not wake anyone": while it covers an alarm's
device and rule, the alarm is still raised and recorded, but marked ``in_maintenance`` and its
notifications are held until the window's end (``marks.py`` applies it). A window is:

- a **scope**: ``sites``, ``labels`` (all must match), ``devices`` and ``rules``; each list
  left empty means "any", and every non-empty one must match. A scope with all four empty
  covers everything (an admin's only).
- a **schedule**: ``once`` (``start``, ``end``: epoch ms) or ``weekly`` (``days`` 0 = Monday …
  6 = Sunday, a local ``start`` ``"HH:MM"``, ``duration_s``, an IANA ``timezone``). A weekly
  window starts at the local wall-clock time on each of its days, whatever the offset that day
  (so "Sundays 02:00 Europe/Berlin" is 02:00 in winter and in summer), and lasts
  ``duration_s`` real seconds (a 3-hour window is 3 hours also across a change of offset).
  A start the clocks skip (02:30 on the spring-forward night) falls on the same instant as
  the hour before the change plus the minutes, i.e. 03:30 summer time; a start the clocks pass
  twice (the autumn night) is the first of the two.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fieldhub.hub.auth import SITE_LABEL
from fieldhub.hub.errors import Invalid
from fieldhub.protocol.messages import MAX_MILLIS

__all__ = [
    "Once",
    "Schedule",
    "Scope",
    "Weekly",
    "Window",
    "parse_schedule",
    "parse_scope",
]

MAX_ONCE_MS: Final = 31 * 24 * 3600 * 1000
"""Longest one-off window: a month (longer work is a disabled rule, not a window)."""
MAX_DURATION_S: Final = 7 * 24 * 3600
"""Longest weekly window: a week (every moment at most one occurrence back)."""
MAX_SCOPE_ITEMS: Final = 1000
MAX_SCOPE_LABELS: Final = 16
MAX_NAME: Final = 128
_DAY_MS: Final = 24 * 3600 * 1000
_HHMM = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")


@dataclass(frozen=True, slots=True)
class Scope:
    """What a window covers: each non-empty part must match; all empty: everything."""

    sites: frozenset[str] = frozenset()
    labels: Mapping[str, str] | None = None
    devices: frozenset[str] = frozenset()
    rules: frozenset[str] = frozenset()

    @property
    def everything(self) -> bool:
        """Covers every device and rule (an admin's window)."""
        return not (self.sites or self.labels or self.devices or self.rules)

    def covers(self, device_id: str, labels: Mapping[str, str], rule_id: str | None) -> bool:
        """True when the window covers the device (with ``labels``) and the rule (None: any
        rule, for "does a window cover this device" on the dashboard)."""
        if self.sites and labels.get(SITE_LABEL) not in self.sites:
            return False
        if self.labels and not all(labels.get(k) == v for k, v in self.labels.items()):
            return False
        if self.devices and device_id not in self.devices:
            return False
        return not (rule_id is not None and self.rules and rule_id not in self.rules)

    def to_dict(self) -> dict[str, Any]:
        """The form :func:`parse_scope` reads."""
        return {
            "sites": sorted(self.sites),
            "labels": dict(self.labels or {}),
            "devices": sorted(self.devices),
            "rules": sorted(self.rules),
        }


@dataclass(frozen=True, slots=True)
class Once:
    """A one-off window from ``start`` to ``end`` (epoch ms)."""

    start: int
    end: int
    kind: Literal["once"] = "once"

    def occurrence(self, at: int) -> tuple[int, int] | None:
        """(start, end) of the occurrence open at ``at``, or None."""
        return (self.start, self.end) if self.start <= at < self.end else None

    def to_dict(self) -> dict[str, Any]:
        """The form :func:`parse_schedule` reads."""
        return {"kind": self.kind, "start": self.start, "end": self.end}


@dataclass(frozen=True, slots=True)
class Weekly:
    """Every week on ``days`` (0 = Monday) from local ``start`` for ``duration_s``."""

    days: frozenset[int]
    start: dt.time
    duration_s: int
    timezone: str
    kind: Literal["weekly"] = "weekly"

    def occurrence(self, at: int) -> tuple[int, int] | None:
        """(start, end) of the occurrence open at ``at``, or None.

        An occurrence that began up to ``duration_s`` ago is open, so the local days looked
        at run from today back over the duration (and one more day for offsets).
        """
        zone = ZoneInfo(self.timezone)
        today = dt.datetime.fromtimestamp(at / 1000, zone).date()
        back = self.duration_s * 1000 // _DAY_MS + 1
        for days_ago in range(back + 1):
            day = today - dt.timedelta(days=days_ago)
            if day.weekday() not in self.days:
                continue
            begins = int(dt.datetime.combine(day, self.start, zone).timestamp() * 1000)
            ends = begins + self.duration_s * 1000
            if begins <= at < ends:
                return begins, ends
        return None

    def to_dict(self) -> dict[str, Any]:
        """The form :func:`parse_schedule` reads."""
        return {
            "kind": self.kind,
            "days": sorted(self.days),
            "start": self.start.strftime("%H:%M"),
            "duration_s": self.duration_s,
            "timezone": self.timezone,
        }


Schedule = Once | Weekly


@dataclass(frozen=True, slots=True)
class Window:
    """A stored maintenance window."""

    id: int
    name: str
    scope: Scope
    schedule: Schedule
    created_at: int
    updated_at: int
    updated_by: str

    def open_until(
        self, device_id: str, labels: Mapping[str, str], rule_id: str | None, at: int
    ) -> int | None:
        """The end of the occurrence covering (device, rule) at ``at``, or None."""
        if not self.scope.covers(device_id, labels, rule_id):
            return None
        found = self.schedule.occurrence(at)
        return None if found is None else found[1]


def parse_scope(raw: Any, loc: tuple[str, ...] = ("body", "scope")) -> Scope:
    """A :class:`Scope` from its dict form (absent parts: empty).

    Raises:
        Invalid: a bad part, named in ``loc``.
    """
    if raw is None:
        return Scope()
    if not isinstance(raw, Mapping):
        raise Invalid("scope: an object of sites, labels, devices, rules", loc)
    unknown = sorted(set(raw) - {"sites", "labels", "devices", "rules"})
    if unknown:
        raise Invalid(f"scope.{unknown[0]}: not a part of a scope", (*loc, unknown[0]))
    labels = raw.get("labels") or {}
    if (
        not isinstance(labels, Mapping)
        or len(labels) > MAX_SCOPE_LABELS
        or not all(
            isinstance(k, str) and isinstance(v, str) and 1 <= len(k) <= 64 and len(v) <= 128
            for k, v in labels.items()
        )
    ):
        raise Invalid(
            f"scope.labels: up to {MAX_SCOPE_LABELS} text labels, all must match",
            (*loc, "labels"),
        )
    return Scope(
        sites=_names(raw, "sites", loc),
        labels=dict(labels) or None,
        devices=_names(raw, "devices", loc),
        rules=_names(raw, "rules", loc),
    )


def _names(raw: Mapping[str, Any], part: str, loc: tuple[str, ...]) -> frozenset[str]:
    value = raw.get(part) or []
    if (
        not isinstance(value, list)
        or len(value) > MAX_SCOPE_ITEMS
        or not all(isinstance(v, str) and 1 <= len(v) <= 128 for v in value)
    ):
        raise Invalid(
            f"scope.{part}: a list of up to {MAX_SCOPE_ITEMS} names (1-128 characters)",
            (*loc, part),
        )
    return frozenset(value)


def parse_schedule(
    raw: Any, now: int | None, loc: tuple[str, ...] = ("body", "schedule")
) -> Schedule:
    """A :class:`Schedule` from its dict form; a new one-off window must not be over by
    ``now`` (None: a stored one, read back whatever its time).

    Raises:
        Invalid: a bad field, named in ``loc``.
    """
    if not isinstance(raw, Mapping):
        raise Invalid('schedule: an object with a kind, "once" or "weekly"', loc)
    kind = raw.get("kind")
    fields = {
        "once": {"kind", "start", "end"},
        "weekly": {"kind", "days", "start", "duration_s", "timezone"},
    }
    if kind not in fields:
        raise Invalid(f"schedule.kind {kind!r}: once or weekly", (*loc, "kind"))
    unknown = sorted(set(raw) - fields[kind])
    if unknown:
        raise Invalid(
            f"schedule.{unknown[0]}: not a field of a {kind} schedule", (*loc, unknown[0])
        )
    if kind == "once":
        start, end = _millis(raw, "start", loc), _millis(raw, "end", loc)
        if not start < end <= start + MAX_ONCE_MS:
            raise Invalid(
                f"schedule.end {end}: after start ({start}) and at most 31 days later",
                (*loc, "end"),
            )
        if now is not None and end <= now:
            raise Invalid(f"schedule.end {end}: already past (now {now})", (*loc, "end"))
        return Once(start, end)
    days = raw.get("days")
    if (
        not isinstance(days, list)
        or not 1 <= len(days) <= 7
        or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= 6 for d in days)
    ):
        raise Invalid(
            f"schedule.days {days!r}: a list of weekdays, 0 (Monday) to 6 (Sunday)",
            (*loc, "days"),
        )
    start_text = raw.get("start")
    hhmm = _HHMM.fullmatch(start_text) if isinstance(start_text, str) else None
    if hhmm is None:
        raise Invalid(
            f"schedule.start {start_text!r}: a local time HH:MM (00:00-23:59)", (*loc, "start")
        )
    duration = raw.get("duration_s")
    if (
        isinstance(duration, bool)
        or not isinstance(duration, int)
        or not 60 <= duration <= MAX_DURATION_S
    ):
        raise Invalid(
            f"schedule.duration_s {duration!r}: whole seconds from 60 to {MAX_DURATION_S}",
            (*loc, "duration_s"),
        )
    return Weekly(
        frozenset(days),
        dt.time(int(hhmm.group(1)), int(hhmm.group(2))),
        duration,
        _timezone(raw.get("timezone"), loc),
    )


def _millis(raw: Mapping[str, Any], field: str, loc: tuple[str, ...]) -> int:
    value = raw.get(field)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_MILLIS:
        raise Invalid(f"schedule.{field} {value!r}: a time in epoch ms", (*loc, field))
    return value


def _timezone(value: Any, loc: tuple[str, ...]) -> str:
    problem = f"schedule.timezone {value!r}: an IANA time zone such as Europe/Berlin"
    if not isinstance(value, str) or not 1 <= len(value) <= 64 or ".." in value:
        raise Invalid(problem, (*loc, "timezone"))
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise Invalid(problem, (*loc, "timezone")) from None
    return value
