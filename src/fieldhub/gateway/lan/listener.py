"""The gateway's ear for announcements: a UDP socket that decodes, or counts and ignores."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable

from fieldhub.lan.discovery import (
    Announcement,
    AnnouncementError,
    decode_announcement,
)
from fieldhub.logthrottle import LogThrottle, held_back

__all__ = ["AnnouncementListener"]

log = logging.getLogger(__name__)


class AnnouncementListener(asyncio.DatagramProtocol):
    """Hands each valid announcement and its sender's address to ``on_announcement``."""

    def __init__(
        self, on_announcement: Callable[[Announcement, str], None], refusals: Counter[str]
    ) -> None:
        self._on_announcement = on_announcement
        self._refusals = refusals
        self._throttle = LogThrottle()

    def datagram_received(self, data: bytes, addr: tuple[str | int, int]) -> None:
        host = str(addr[0])
        try:
            announcement = decode_announcement(data)
        except AnnouncementError as exc:
            self._refusals["bad_announcement"] += 1
            held = self._throttle.due(host)
            if held is not None:
                log.warning("ignored an announcement from %s: %s%s", host, exc, held_back(held))
            return
        self._on_announcement(announcement, host)
