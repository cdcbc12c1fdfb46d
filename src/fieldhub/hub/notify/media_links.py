"""Media in alarm notifications: the picture of the event that raised an alarm, one click away.

An alarm raised by an event that announced media (a ``stranger.detected`` with its picture)
lists them in its notifications' body (``media``: name, type, size, SHA-256), and each
delivery attempt adds a signed, expiring download link to each (``url``), valid for
``FIELDHUB_ACK_LINK_TTL_S`` like an acknowledge link: whoever holds the message may open that
picture, and nothing else (``hub/media/links.py`` signs, ``GET /api/media-links/…`` serves).

Why by device and hash, not by media id: routing runs in the transaction that stores the
raise, and knows the event's announcement only; the picture itself usually arrives after the
event, so after the message is enqueued. The link answers 404 until it has arrived, then the
picture. Why minted per attempt (as ``ack_links.py`` does): the signature never sits in the
outbox or its API, and a reminder sent days later still gets the link's full lifetime.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from fieldhub.clock import now_ms
from fieldhub.hub.alarms.changes import AlarmChange
from fieldhub.hub.media.links import UploadLinks
from fieldhub.hub.notify.records import ChannelRecord, NotificationRecord

__all__ = ["MediaLinks", "announced_media"]


def announced_media(change: AlarmChange) -> dict[str, Any]:
    """The ``media`` field of a notification's body about ``change`` (none without media)."""
    if not change.media:
        return {}
    return {
        "media": [
            {"name": ref.name, "type": ref.type, "size": ref.size, "sha256": ref.sha256}
            for ref in change.media
        ]
    }


class MediaLinks:
    """Adds download links to the media of a notification, at each delivery attempt.

    Args:
        links: the hub's media signer.
        ttl_s: how long a link works.
    """

    def __init__(
        self, links: UploadLinks, ttl_s: int, *, clock: Callable[[], int] = now_ms
    ) -> None:
        self._links = links
        self._ttl_ms = ttl_s * 1000
        self._clock = clock

    def prepare(
        self, notification: NotificationRecord, channel: ChannelRecord
    ) -> NotificationRecord:
        """The message of one attempt: each listed media with a fresh ``url``."""
        listed, device_id = notification.body.get("media"), notification.body.get("device")
        if not isinstance(listed, list) or not listed or not isinstance(device_id, str):
            return notification
        expires_at = self._clock() + self._ttl_ms
        linked = [
            {**item, "url": self._links.mint_download(device_id, item["sha256"], expires_at)}
            for item in listed
            if isinstance(item, dict) and isinstance(item.get("sha256"), str)
        ]
        return replace(notification, body={**notification.body, "media": linked})
