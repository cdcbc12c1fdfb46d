"""What a subscription is, which ones are valid, and which alarm changes one wants.

A subscription says who (an owner, a user) hears which alarm changes (a filter: sites,
a minimum severity, rules, change kinds) through which channel (the transport; an e-mail
subscription names its owner's own addresses), when (quiet hours) and how often (grouping and
a rate limit, ``digest.py``). This module is the one home of those rules: the API's models
bound shapes and sizes, the checks here hold for every caller and name the field as the API
shows it (``("body", "quiet_hours", "timezone")``).

Visibility is the owner's, by the rule the REST routes use (:meth:`Principal.sees`): a user
hears only alarms of devices in their sites, whatever the filter says, and a disabled user
hears nothing. A subscription without an owner is hub-wide (an admin's, every site): the
upgrade gives one to each channel made before subscriptions existed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import time
from fnmatch import fnmatchcase
from typing import Any, Final, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fieldhub.hub.alarms.changes import AlarmChange, ChangeKind
from fieldhub.hub.alarms.rules import SEVERITIES
from fieldhub.hub.auth import SITE_LABEL, Principal, Role
from fieldhub.hub.auth.rules import principal_for
from fieldhub.hub.errors import Invalid, NotFound
from fieldhub.hub.notify.channel_config import check_recipients
from fieldhub.hub.notify.records import ChannelRecord

__all__ = [
    "CHANGE_KINDS",
    "DAYS",
    "HUB_WIDE",
    "QuietHours",
    "Subscription",
    "SubscriptionNotFound",
    "SubscriptionSpec",
    "check_spec",
    "owner_principal",
    "severity_rank",
]

CHANGE_KINDS: Final[tuple[str, ...]] = get_args(ChangeKind)
DEFAULT_CHANGES: Final = ("raised", "cleared")
DAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_SITES: Final = 100
MAX_RULES: Final = 50
MAX_SUBSCRIPTION_RECIPIENTS: Final = 10
DEFAULT_GROUP_INTERVAL_S: Final = 60
MAX_GROUP_INTERVAL_S: Final = 86_400
DEFAULT_MAX_PER_HOUR: Final = 30
MAX_PER_HOUR: Final = 3600
_RULE_PATTERN = re.compile(r"^[a-z0-9_.*?\[\]-]{1,64}$")
_SITE = re.compile(r"^\S{1,64}$")
_TIME = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])(?::([0-5][0-9]))?$")

HUB_WIDE: Final = Principal(via="session", name="hub", role=Role.ADMIN, sites=None)
"""Whose eyes a subscription without an owner has: every site."""


class SubscriptionNotFound(NotFound):
    """No subscription with that id (or not one of the caller's)."""


def severity_rank(severity: str) -> int:
    """0 for the most severe (critical); an unknown severity ranks below every known one."""
    return SEVERITIES.index(severity) if severity in SEVERITIES else len(SEVERITIES)


@dataclass(frozen=True, slots=True)
class QuietHours:
    """From ``start`` to ``end`` local time in ``timezone`` (crossing midnight when ``end``
    is not after ``start``; equal: a whole day), starting on ``days`` (0 = Monday); changes of
    a severity in ``passing`` are sent all the same."""

    timezone: str
    start: time
    end: time
    days: frozenset[int]
    passing: frozenset[str]

    @property
    def zone(self) -> ZoneInfo:
        """The time zone (checked when the subscription was made)."""
        return ZoneInfo(self.timezone)

    def as_json(self) -> dict[str, Any]:
        """As stored and answered: ``{"timezone", "from", "to", "days", "pass_severities"}``."""
        return {
            "timezone": self.timezone,
            "from": _clock_time(self.start),
            "to": _clock_time(self.end),
            "days": [DAYS[d] for d in sorted(self.days)],
            "pass_severities": sorted(self.passing, key=severity_rank),
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> QuietHours:
        """From what :meth:`as_json` stored."""
        return cls(
            timezone=raw["timezone"],
            start=time.fromisoformat(raw["from"]),
            end=time.fromisoformat(raw["to"]),
            days=frozenset(DAYS.index(d) for d in raw["days"]),
            passing=frozenset(raw["pass_severities"]),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscriptionSpec:
    """What a client chooses (checked by :func:`check_spec`)."""

    channel_id: int
    recipients: tuple[str, ...] = ()
    sites: tuple[str, ...] = ()
    min_severity: str = "info"
    rules: tuple[str, ...] = ()
    changes: tuple[str, ...] = DEFAULT_CHANGES
    quiet_hours: QuietHours | None = None
    group_interval_s: int = DEFAULT_GROUP_INTERVAL_S
    max_per_hour: int = DEFAULT_MAX_PER_HOUR
    enabled: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class Subscription(SubscriptionSpec):
    """A stored subscription; ``owner_id`` None: hub-wide."""

    id: int
    owner_id: int | None
    created_at: int
    created_by: str

    def wants(self, change: AlarmChange) -> bool:
        """True when ``change`` passes the filter (visibility is the owner's: not here)."""
        # A flapping pair's one message when it settles goes to whoever hears its raises or
        # clears (their own changes were held while it flapped).
        settled = change.kind == "settled" and not {"raised", "cleared"}.isdisjoint(self.changes)
        if change.kind not in self.changes and not settled:
            return False
        if severity_rank(change.severity) > severity_rank(self.min_severity):
            return False
        if self.rules and not any(fnmatchcase(change.rule_id, p) for p in self.rules):
            return False
        return not self.sites or change.device_labels.get(SITE_LABEL) in self.sites


def owner_principal(
    owner_id: int | None, role: str | None, sites: list[str] | None, disabled: bool | None
) -> Principal | None:
    """Whose eyes a subscription has: its owner's (None: the owner is disabled or gone, and
    hears nothing), or :data:`HUB_WIDE` without an owner."""
    if owner_id is None:
        return HUB_WIDE
    if role is None or disabled:
        return None
    return principal_for(via="session", user_id=owner_id, name="", role=role, sites=sites or [])


def _body(*field: str | int) -> tuple[str | int, ...]:
    return ("body", *field)


def check_spec(spec: SubscriptionSpec, channel: ChannelRecord, owner: Principal) -> None:
    """Refuse what no subscription may be: ``spec`` for ``channel``, owned by ``owner``.

    Raises:
        Invalid: naming the field and the bad value.
    """
    _check_recipients(spec, channel)
    if len(spec.sites) > MAX_SITES:
        raise Invalid(f"sites lists at most {MAX_SITES} sites", _body("sites"))
    for n, site in enumerate(spec.sites):
        if not _SITE.match(site):
            raise Invalid(f"sites[{n}] {site[:80]!r} is no site label", _body("sites", n))
        if not owner.sees_site(site):
            raise Invalid(f"sites[{n}] {site!r} is not one of the owner's sites", _body("sites", n))
    _one_of(spec.min_severity, SEVERITIES, _body("min_severity"))
    if len(spec.rules) > MAX_RULES:
        raise Invalid(f"rules lists at most {MAX_RULES} ids or globs", _body("rules"))
    for n, pattern in enumerate(spec.rules):
        if not _RULE_PATTERN.match(pattern):
            raise Invalid(
                f"rules[{n}] {pattern[:80]!r}: a rule id or glob of a-z 0-9 _ . - * ? [ ]",
                _body("rules", n),
            )
    if not spec.changes:
        raise Invalid(f"changes names at least one of {', '.join(CHANGE_KINDS)}", _body("changes"))
    for n, kind in enumerate(spec.changes):
        _one_of(kind, CHANGE_KINDS, _body("changes", n))
    if not 0 <= spec.group_interval_s <= MAX_GROUP_INTERVAL_S:
        raise Invalid(
            f"group_interval_s {spec.group_interval_s}: 0 to {MAX_GROUP_INTERVAL_S}",
            _body("group_interval_s"),
        )
    if not 1 <= spec.max_per_hour <= MAX_PER_HOUR:
        raise Invalid(
            f"max_per_hour {spec.max_per_hour}: 1 to {MAX_PER_HOUR}", _body("max_per_hour")
        )


def _check_recipients(spec: SubscriptionSpec, channel: ChannelRecord) -> None:
    if channel.kind != "email":
        if spec.recipients:
            raise Invalid(f"to: only e-mail channels take addresses ({channel.kind})", _body("to"))
        return
    if len(spec.recipients) > MAX_SUBSCRIPTION_RECIPIENTS:
        raise Invalid(f"to lists at most {MAX_SUBSCRIPTION_RECIPIENTS} addresses", _body("to"))
    least = 0 if channel.config.get("to") else 1
    check_recipients(list(spec.recipients), _body("to"), least=least)


def _one_of(value: str, known: tuple[str, ...], loc: tuple[str | int, ...]) -> None:
    if value not in known:
        raise Invalid(f"{value[:40]!r}: one of {', '.join(known)}", loc)


def quiet_hours(raw: dict[str, Any] | None) -> QuietHours | None:
    """Quiet hours from the API's JSON, checked (None: none).

    Raises:
        Invalid: naming the field (``("body", "quiet_hours", "from")``) and the value.
    """
    if raw is None:
        return None
    loc = ("body", "quiet_hours")
    zone = raw.get("timezone")
    try:
        if not isinstance(zone, str) or not zone or len(zone) > 64:
            raise ValueError(zone)
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise Invalid(
            f"timezone {str(zone)[:64]!r} is no IANA time zone (e.g. Europe/Berlin)",
            (*loc, "timezone"),
        ) from None
    start, end = (_local_time(raw.get(key), (*loc, key)) for key in ("from", "to"))
    days = raw.get("days", list(DAYS))
    for n, day in enumerate(days):
        _one_of(day, DAYS, (*loc, "days", n))
    passing = raw.get("pass_severities", ["critical"])
    for n, severity in enumerate(passing):
        _one_of(severity, SEVERITIES, (*loc, "pass_severities", n))
    return QuietHours(
        timezone=zone,
        start=start,
        end=end,
        days=frozenset(DAYS.index(d) for d in days),
        passing=frozenset(passing),
    )


def _local_time(value: Any, loc: tuple[str | int, ...]) -> time:
    match = _TIME.match(value) if isinstance(value, str) else None
    if match is None:
        raise Invalid(f"{str(value)[:20]!r} is no local time HH:MM or HH:MM:SS", loc)
    return time(int(match[1]), int(match[2]), int(match[3] or 0))


def _clock_time(value: time) -> str:
    return value.strftime("%H:%M:%S" if value.second else "%H:%M")
