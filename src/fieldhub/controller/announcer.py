"""The controller's UDP announcements: every few seconds, and at once when its address changes.

The address that matters is the one the gateway sees: the source address of a datagram to the
announcement's destination. It is looked up once a second (a ``connect`` on a UDP socket sends
nothing), so a new DHCP lease is announced within a second, not at the next period.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Final

from fieldhub.lan.discovery import Announcement, encode_announcement

__all__ = ["announce_forever"]

log = logging.getLogger(__name__)

_CHECK_S: Final = 1.0


async def announce_forever(
    announcement: Callable[[], Announcement], to: str, port: int, every_s: float
) -> None:
    """Broadcast ``announcement()`` to ``to:port`` until cancelled."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    last_address: str | None = None
    next_at = 0.0
    try:
        while True:
            address = _source_address(to, port)
            if address != last_address:
                if last_address is not None:
                    log.info("address changed from %s to %s: announcing", last_address, address)
                last_address, next_at = address, 0.0
            if loop.time() >= next_at:
                try:
                    sock.sendto(encode_announcement(announcement()), (to, port))
                except OSError as exc:  # no route yet (cable out, no lease): try again later
                    log.debug("announcement not sent: %s", exc)
                next_at = loop.time() + every_s
            await asyncio.sleep(min(_CHECK_S, every_s))
    finally:
        sock.close()


def _source_address(to: str, port: int) -> str | None:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        probe.connect((to, port))
        return str(probe.getsockname()[0])
    except OSError:
        return None
    finally:
        probe.close()
