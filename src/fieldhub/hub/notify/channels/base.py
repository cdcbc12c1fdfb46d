"""What a channel does with a notification, and what it reports back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from fieldhub.hub.notify.records import ChannelRecord, NotificationRecord


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one delivery attempt went.

    ``status`` is the far side's own word (HTTP status, SMTP reply code), for the delivery
    log; ``permanent`` says that trying again cannot help (a 4xx from a webhook: the request
    itself is wrong), so the notification is dead at once instead of after every retry.
    """

    ok: bool
    status: str = ""
    error: str = ""
    permanent: bool = False


class Sender(Protocol):
    """Delivers notifications of one channel kind."""

    async def send(self, notification: NotificationRecord, channel: ChannelRecord) -> Outcome:
        """Try once. Failures the far side can cause are returned as an :class:`Outcome`,
        never raised; the worker bounds the time."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


def envelope(notification: NotificationRecord) -> dict[str, object]:
    """The JSON every machine-readable channel sends (webhook body, MQTT payload): stable
    field names, the notification id for de-duplication by receivers."""
    return {
        "id": notification.id,
        "event": notification.event,
        "subject": notification.subject,
        "created_at": notification.created_at,
        "data": notification.body,
    }
