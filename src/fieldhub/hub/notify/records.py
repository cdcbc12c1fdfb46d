"""The notification wing's values: channels, notifications, delivery attempts, and its errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal

from fieldhub.hub.errors import Conflict, NotFound

ChannelKind = Literal["webhook", "email", "mqtt"]
KINDS: Final[tuple[ChannelKind, ...]] = ("webhook", "email", "mqtt")
State = Literal["pending", "delivered", "dead", "cancelled"]
"""``cancelled``: no longer wanted before it was sent (an escalation step whose alarm was
acknowledged or cleared); ``last_error`` says why."""
STATES: Final[tuple[State, ...]] = ("pending", "delivered", "dead", "cancelled")
SECRET_KEYS: Final = frozenset({"secret"})
"""Config keys that are written, never read back (the API shows only that one is set)."""


class ChannelNotFound(NotFound):
    """No notification channel with that id."""


class NotificationNotFound(NotFound):
    """No notification with that id."""


class ChannelNameTaken(Conflict):
    """Another channel has that name."""


@dataclass(frozen=True, slots=True, kw_only=True)
class NewNotification:
    """A notification to enqueue (see :func:`fieldhub.hub.notify.outbox.enqueue`).

    ``dedup_key`` makes enqueueing idempotent: the same key twice is one notification, so a
    caller that retries a transaction, or two hubs that see the same alarm change, notify
    once. Make it say what the message is about and for whom, e.g.
    ``"alarm:<alarm id>:raised:<time>:subscription:<subscription id>"``.
    """

    channel_id: int
    dedup_key: str
    event: str
    """What happened, dotted (``alarm.raised``, ``test``): the webhook's X-Fieldhub-Event."""
    subject: str
    body: dict[str, Any] = field(default_factory=dict)
    """JSON: the webhook's payload ``data``, the e-mail's text, the MQTT message's ``data``."""
    not_before: int | None = None
    """Epoch ms before which it is not sent (a held or scheduled message); None: at once."""
    subscription_id: int | None = None
    """The subscription it is sent for (its rate limit counts it); None: none (a test)."""
    recipients: tuple[str, ...] = ()
    """E-mail only: the subscription's own addresses; empty: the channel's ``to``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelRecord:
    """A stored channel; ``config`` still holds its secrets (the API strips them)."""

    id: int
    name: str
    kind: ChannelKind
    config: dict[str, Any]
    enabled: bool
    created_at: int
    created_by: str

    def public_config(self) -> dict[str, Any]:
        """The config without its secrets, with ``<key>_set`` saying whether one is set."""
        shown = {k: v for k, v in self.config.items() if k not in SECRET_KEYS}
        for key in SECRET_KEYS:
            if self.kind == "webhook":
                shown[f"{key}_set"] = bool(self.config.get(key))
        return shown


@dataclass(frozen=True, slots=True, kw_only=True)
class NotificationRecord:
    """A notification in the outbox, where it is in its life."""

    id: str
    channel_id: int
    dedup_key: str
    event: str
    subject: str
    body: dict[str, Any]
    created_at: int
    state: State
    attempts: int
    next_attempt_at: int
    delivered_at: int | None
    last_error: str
    recipients: tuple[str, ...] = ()
    """E-mail: where it goes instead of the channel's ``to`` (empty: the channel's)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryRecord:
    """One attempt to deliver a notification."""

    at: int
    ok: bool
    status: str
    latency_ms: int
    error: str
