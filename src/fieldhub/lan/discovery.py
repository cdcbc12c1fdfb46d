"""Announcements: how a controller makes itself known on the LAN, by UDP broadcast.

An announcement only says *where* to connect: the controller's id, its TCP port, the protocol
version and whether it is paired. It is not authenticated, and need not be: the gateway
believes nothing in it until the controller proves its key over TCP (``lan.session``), so a
spoofed announcement costs one refused connection and no more. Announcements are bounded
(:data:`MAX_ANNOUNCEMENT_BYTES`) and decoded strictly; a gateway counts and ignores the rest.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Final

from fieldhub.lan import PROTOCOL_VERSION

__all__ = [
    "CONTROLLER_ID_PATTERN",
    "MAX_ANNOUNCEMENT_BYTES",
    "Announcement",
    "AnnouncementError",
    "check_controller_id",
    "decode_announcement",
    "encode_announcement",
]

MAX_ANNOUNCEMENT_BYTES: Final = 512
"""Larger datagrams are refused unread: an announcement needs well under 200 bytes."""
CONTROLLER_ID_PATTERN: Final = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
"""A controller becomes a device of the hub, so its id follows the device id rules of
docs/protocol.md (spelled again here: the controller uses only the standard library)."""
_CONTROLLER_ID = re.compile(CONTROLLER_ID_PATTERN)


class AnnouncementError(ValueError):
    """A datagram that is not a valid announcement; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class Announcement:
    """What a controller broadcasts: who it is and where its TCP server listens."""

    controller_id: str
    tcp_port: int
    paired: bool
    version: int = PROTOCOL_VERSION


def check_controller_id(value: Any) -> str:
    """``value`` if it is a valid controller id.

    Raises:
        AnnouncementError: naming the rule broken.
    """
    if not isinstance(value, str) or not _CONTROLLER_ID.fullmatch(value):
        raise AnnouncementError(
            "`id` must be 1-64 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit"
        )
    return value


def encode_announcement(announcement: Announcement) -> bytes:
    """The datagram a controller sends."""
    return json.dumps(
        {
            "fieldhub": "controller",
            "v": announcement.version,
            "id": announcement.controller_id,
            "port": announcement.tcp_port,
            "paired": announcement.paired,
        },
        separators=(",", ":"),
    ).encode()


def decode_announcement(datagram: bytes) -> Announcement:
    """The announcement in ``datagram``.

    Raises:
        AnnouncementError: oversized, not JSON, another version, or a field missing or wrong.
    """
    if len(datagram) > MAX_ANNOUNCEMENT_BYTES:
        raise AnnouncementError(f"{len(datagram)} bytes, more than {MAX_ANNOUNCEMENT_BYTES}")
    try:
        body = json.loads(datagram)
    except (ValueError, RecursionError) as exc:
        raise AnnouncementError("not JSON") from exc
    if not isinstance(body, dict) or body.get("fieldhub") != "controller":
        raise AnnouncementError("not a fieldhub controller announcement")
    if body.get("v") != PROTOCOL_VERSION:
        raise AnnouncementError(f"protocol version {body.get('v')!r}, not {PROTOCOL_VERSION}")
    port = body.get("port")
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise AnnouncementError("`port` must be an integer from 1 to 65535")
    paired = body.get("paired")
    if not isinstance(paired, bool):
        raise AnnouncementError("`paired` must be true or false")
    return Announcement(check_controller_id(body.get("id")), port, paired)
