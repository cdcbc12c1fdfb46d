"""What a retention policy is and which are valid: the one home of those rules.

The policy is a pydantic model because it is both what ``PUT /api/retention`` takes (a bad
field is a 422 naming it) and what the store keeps as JSON: one definition, checked once.

Raw samples are kept ``raw_days`` unless an override matches their series: the first override
whose key glob matches the key and whose labels all equal the device's wins, so a fast, cheap
key (``vibration.*``) can go after 3 days while a site's door sensors stay a year. Rollups are
kept by tier, each at least as long as the one below it (``raw_days`` ≤ ``minute_days`` ≤
``hour_days`` ≤ ``day_days``): history over a span older than a tier reads the next coarser
one, which must still be there. Events are kept ``events_days``, or their type's own days
(``event_types``); cleared alarms with their changes and comments ``alarms_days`` (open ones
always). Finished notifications are bounded by the notification worker itself
(``keep_days``); media by ``media_retention_days``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from typing import Annotated, Final

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
)

DAY_MS: Final = 86_400_000
MAX_DAYS: Final = 36_500
"""A hundred years: "forever" for every practical purpose, and still a number a cutoff can use."""
GUARD_THRESHOLD: Final = 0.8
"""The share of the disk budget at which the guard warns and, on SQLite, trims raw samples."""

Days = Annotated[int, Field(ge=1, le=MAX_DAYS)]
# A telemetry key is letters, digits, '_', '.', '-' (protocol/messages.py); a glob adds *?[]!.
Glob = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[\w.*?\[\]!-]+$")]
LabelName = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[\w.-]+$")]
EventType = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_.-]{0,63}$")]  # the wire's


_BELOW: Final = {"minute_days": "raw_days", "hour_days": "minute_days", "day_days": "hour_days"}


class RawOverride(BaseModel):
    """Raw samples of matching series kept ``days`` instead of the policy's ``raw_days``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: Glob = "*"
    labels: dict[LabelName, Annotated[str, StringConstraints(max_length=128)]] = Field(
        default_factory=dict, max_length=8
    )
    days: Days

    def matches(self, key: str, labels: Mapping[str, str]) -> bool:
        """Whether a series of ``key`` on a device with ``labels`` falls under this override."""
        return fnmatch.fnmatchcase(key, self.key) and all(
            labels.get(name) == value for name, value in self.labels.items()
        )


class RetentionPolicy(BaseModel):
    """How long the hub keeps each kind of data (see the module's text)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    raw_days: Days = 30
    minute_days: Days = 90
    hour_days: Days = 730
    day_days: Days = 3650
    events_days: Days = 365
    alarms_days: Days = 365
    event_types: dict[EventType, Days] = Field(default_factory=dict, max_length=64)
    overrides: list[RawOverride] = Field(default_factory=list, max_length=64)
    budget_mb: int = Field(
        default=0,
        ge=0,
        le=1 << 30,
        description=(
            "the database's budget in MiB, kept by trimming the oldest raw samples on SQLite;"
            " 0: none (a data disk past 80 % only degrades health)"
        ),
    )

    @field_validator("minute_days", "hour_days", "day_days")
    @classmethod
    def _tiers_outlive_the_one_below(cls, days: int, info: ValidationInfo) -> int:
        """History over a span older than a tier reads the next coarser one: it must be there.
        Fields are checked in order, so the tier below is in ``info.data`` when it was valid."""
        below = _BELOW[str(info.field_name)]
        if below in info.data and days < info.data[below]:
            raise ValueError(f"must be at least {below} ({info.data[below]})")
        return days

    def raw_days_for(self, key: str, labels: Mapping[str, str]) -> int:
        """How many days raw samples of ``key`` on a device with ``labels`` are kept."""
        for override in self.overrides:
            if override.matches(key, labels):
                return override.days
        return self.raw_days
