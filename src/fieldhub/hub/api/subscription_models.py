"""Request and response bodies of notification subscriptions.

The models bound every list and string (a request cannot grow without limit); what the values
must be (a known severity, a time zone, a site of the owner's) is checked by
``hub/notify/subscriptions.py``, the one home of those rules, with the same 422 shape.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from fieldhub.hub.api.fields import RowId
from fieldhub.hub.notify.subscriptions import (
    CHANGE_KINDS,
    DAYS,
    DEFAULT_CHANGES,
    DEFAULT_GROUP_INTERVAL_S,
    DEFAULT_MAX_PER_HOUR,
    MAX_GROUP_INTERVAL_S,
    MAX_PER_HOUR,
    MAX_RULES,
    MAX_SITES,
    MAX_SUBSCRIPTION_RECIPIENTS,
    Subscription,
    SubscriptionSpec,
    quiet_hours,
)

Short = Annotated[str, Field(min_length=1, max_length=64)]
Address = Annotated[str, Field(min_length=3, max_length=320)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class QuietHoursIn(_Strict):
    """From ``from`` to ``to`` (HH:MM or HH:MM:SS local time in ``timezone``; crossing midnight when
    ``to`` is not after ``from``) on the ``days`` it starts; ``pass_severities`` still pass."""

    timezone: Short = Field(examples=["Europe/Berlin"])
    start: Annotated[str, Field(max_length=8, alias="from", examples=["22:00"])]
    end: Annotated[str, Field(max_length=8, alias="to", examples=["07:00"])]
    days: list[Annotated[str, Field(max_length=3)]] = Field(
        default_factory=lambda: list(DAYS), max_length=7
    )
    pass_severities: list[Short] = Field(default_factory=lambda: ["critical"], max_length=5)

    def raw(self) -> dict[str, Any]:
        """As ``subscriptions.quiet_hours`` reads it."""
        return self.model_dump(by_alias=True)


class SubscriptionIn(_Strict):
    """A subscription's settings (POST, and PUT: replaced whole)."""

    owner_id: RowId | None = Field(
        None, description="left out: yourself; admins: any user, or null for a hub-wide one"
    )
    channel_id: RowId
    to: list[Address] = Field(
        default_factory=list,
        max_length=MAX_SUBSCRIPTION_RECIPIENTS,
        description="e-mail channels: your addresses (needed when the channel has no 'to')",
    )
    sites: list[Short] = Field(
        default_factory=list, max_length=MAX_SITES, description="empty: every site you see"
    )
    min_severity: Short = "info"
    rules: list[Short] = Field(
        default_factory=list, max_length=MAX_RULES, description="ids or globs; empty: all"
    )
    changes: list[Short] = Field(
        default_factory=lambda: list(DEFAULT_CHANGES), max_length=len(CHANGE_KINDS)
    )
    quiet_hours: QuietHoursIn | None = None
    group_interval_s: Annotated[int, Field(ge=0, le=MAX_GROUP_INTERVAL_S)] = (
        DEFAULT_GROUP_INTERVAL_S
    )
    max_per_hour: Annotated[int, Field(ge=1, le=MAX_PER_HOUR)] = DEFAULT_MAX_PER_HOUR
    enabled: bool = True

    def spec(self) -> SubscriptionSpec:
        """The settings, with the quiet hours checked."""
        return SubscriptionSpec(
            channel_id=self.channel_id,
            recipients=tuple(self.to),
            sites=tuple(self.sites),
            min_severity=self.min_severity,
            rules=tuple(self.rules),
            changes=tuple(self.changes),
            quiet_hours=quiet_hours(None if self.quiet_hours is None else self.quiet_hours.raw()),
            group_interval_s=self.group_interval_s,
            max_per_hour=self.max_per_hour,
            enabled=self.enabled,
        )


class SubscriptionOut(BaseModel):
    """A stored subscription; ``owner_id`` null: hub-wide."""

    id: int
    owner_id: int | None
    channel_id: int
    to: list[str]
    sites: list[str]
    min_severity: str
    rules: list[str]
    changes: list[str]
    quiet_hours: dict[str, Any] | None
    group_interval_s: int
    max_per_hour: int
    enabled: bool
    created_at: int
    created_by: str

    @classmethod
    def of(cls, s: Subscription) -> SubscriptionOut:
        return cls(
            id=s.id,
            owner_id=s.owner_id,
            channel_id=s.channel_id,
            to=list(s.recipients),
            sites=list(s.sites),
            min_severity=s.min_severity,
            rules=list(s.rules),
            changes=list(s.changes),
            quiet_hours=None if s.quiet_hours is None else s.quiet_hours.as_json(),
            group_interval_s=s.group_interval_s,
            max_per_hour=s.max_per_hour,
            enabled=s.enabled,
            created_at=s.created_at,
            created_by=s.created_by,
        )
