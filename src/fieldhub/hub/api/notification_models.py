"""Request and response bodies of notification channels and the outbox.

No answer carries a channel's secret: a webhook's ``secret`` is write-only, its answer says
only ``secret_set``. The hub's SMTP password is a setting and never reaches the API at all.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from fieldhub.hub.api.fields import JsonObject, StoredJson
from fieldhub.hub.notify.records import (
    ChannelKind,
    ChannelRecord,
    DeliveryRecord,
    NotificationRecord,
    State,
)

ChannelName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^\S(.*\S)?$")]
NotificationId = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$", max_length=32)]
"""A notification's id: 32 hex digits (also the webhook's ``X-Fieldhub-Delivery``)."""

_CONFIG = (
    "webhook: {url, secret}; email: {to: [addresses]}; mqtt: {topic} (published under "
    "fh/notify/). Secrets are write-only."
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ChannelCreate(_Strict):
    """A new channel."""

    name: ChannelName
    kind: ChannelKind
    config: JsonObject = Field(description=_CONFIG)
    enabled: bool = True


class ChannelUpdate(_Strict):
    """Changes to a channel; a webhook secret left out is kept."""

    name: ChannelName | None = None
    config: JsonObject | None = Field(None, description=_CONFIG)
    enabled: bool | None = None


class ChannelChoice(BaseModel):
    """A channel as a subscriber sees it: which one, and what kind (for e-mail addresses)."""

    id: int
    name: str
    kind: ChannelKind


class ChannelOut(BaseModel):
    """A channel, without its secrets."""

    id: int
    name: str
    kind: ChannelKind
    config: StoredJson
    enabled: bool
    created_at: int
    created_by: str

    @classmethod
    def from_record(cls, channel: ChannelRecord) -> ChannelOut:
        return cls(
            id=channel.id,
            name=channel.name,
            kind=channel.kind,
            config=channel.public_config(),
            enabled=channel.enabled,
            created_at=channel.created_at,
            created_by=channel.created_by,
        )


class NotificationOut(BaseModel):
    """A notification in the outbox."""

    id: str
    channel_id: int
    dedup_key: str
    event: str
    subject: str
    body: StoredJson
    created_at: int
    state: State
    attempts: int
    next_attempt_at: int | None = Field(description="when it is tried next; null unless pending")
    delivered_at: int | None
    last_error: str

    @classmethod
    def from_record(cls, n: NotificationRecord) -> NotificationOut:
        return cls(
            id=n.id,
            channel_id=n.channel_id,
            dedup_key=n.dedup_key,
            event=n.event,
            subject=n.subject,
            body=n.body,
            created_at=n.created_at,
            state=n.state,
            attempts=n.attempts,
            next_attempt_at=n.next_attempt_at if n.state == "pending" else None,
            delivered_at=n.delivered_at,
            last_error=n.last_error,
        )


class DeliveryOut(BaseModel):
    """One delivery attempt: when, whether it worked, the far side's answer, how long."""

    at: int
    ok: bool
    status: str = Field(description="HTTP status, SMTP reply code, 'puback'; empty: no answer")
    latency_ms: int
    error: str

    @classmethod
    def from_record(cls, d: DeliveryRecord) -> DeliveryOut:
        return cls(at=d.at, ok=d.ok, status=d.status, latency_ms=d.latency_ms, error=d.error)


class NotificationDetail(NotificationOut):
    """A notification with its delivery log, oldest attempt first."""

    deliveries: list[DeliveryOut]

    @classmethod
    def with_log(cls, n: NotificationRecord, log: list[DeliveryRecord]) -> NotificationDetail:
        return cls(
            **NotificationOut.from_record(n).model_dump(),
            deliveries=[DeliveryOut.from_record(d) for d in log],
        )
