"""Frames on a LAN link: a 4-byte big-endian length, then that many bytes.

The length is checked before anything is read or allocated (:data:`MAX_FRAME_BYTES`), so a peer
cannot make the other side hold more than one frame's worth of its data. A frame's first byte
says what it is: ``P`` a plain frame (the hello and pairing, before a key is agreed), ``A`` an
authenticated one (``lan.session``). JSON bodies are decoded with a nesting bound.
"""

from __future__ import annotations

import asyncio
import json
import struct
from typing import Any, Final

__all__ = [
    "AUTHENTICATED",
    "MAX_FRAME_BYTES",
    "MAX_JSON_NESTING",
    "PLAIN",
    "FrameError",
    "decode_json",
    "encode_json",
    "pack_frame",
    "read_frame",
]

MAX_FRAME_BYTES: Final = 64 * 1024
"""A command's arguments or a report fit easily; a larger length closes the link."""
MAX_JSON_NESTING: Final = 32
"""Objects and arrays nested deeper are refused (the same bound as docs/protocol.md's)."""
PLAIN: Final = b"P"
AUTHENTICATED: Final = b"A"
_LENGTH = struct.Struct(">I")


class FrameError(ValueError):
    """A frame that breaks the framing rules; the link it came on is closed."""


def pack_frame(payload: bytes) -> bytes:
    """``payload`` with its length in front.

    Raises:
        FrameError: the payload is larger than :data:`MAX_FRAME_BYTES` (a bug of the sender).
    """
    if len(payload) > MAX_FRAME_BYTES:
        raise FrameError(f"frame of {len(payload)} bytes exceeds {MAX_FRAME_BYTES}")
    return _LENGTH.pack(len(payload)) + payload


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    """The next frame's payload.

    Raises:
        FrameError: an empty frame or a length over :data:`MAX_FRAME_BYTES` (nothing more is read).
        asyncio.IncompleteReadError: the peer closed the connection.
    """
    (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
    if length == 0 or length > MAX_FRAME_BYTES:
        raise FrameError(f"frame length {length} outside 1..{MAX_FRAME_BYTES}")
    return await reader.readexactly(length)


def encode_json(body: dict[str, Any]) -> bytes:
    """A JSON body, compact, UTF-8."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def decode_json(data: bytes) -> dict[str, Any]:
    """A JSON object within the nesting bound.

    Raises:
        FrameError: not UTF-8 JSON, not an object, or nested deeper than :data:`MAX_JSON_NESTING`.
    """
    try:
        body = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise FrameError("body is not JSON") from exc
    if not isinstance(body, dict):
        raise FrameError("body is not a JSON object")
    if _too_deep(body, MAX_JSON_NESTING):
        raise FrameError(f"body nests deeper than {MAX_JSON_NESTING} levels")
    return body


def _too_deep(value: Any, limit: int) -> bool:
    if isinstance(value, dict):
        children: Any = value.values()
    elif isinstance(value, list):
        children = value
    else:
        return False
    return limit <= 0 or any(_too_deep(child, limit - 1) for child in children)
