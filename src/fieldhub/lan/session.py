"""Authenticated frames: every frame after the hello carries a counter and an HMAC-SHA256 tag.

Each link has its own **session key**, derived from the controller's long-term key (agreed at
pairing, ``lan.pairing``) and the two random nonces of the hello::

    session_key = HMAC-SHA256(key, "fieldhub-lan session" || gateway_nonce || controller_nonce)

An authenticated frame is ``"A" || counter (8 bytes, big-endian) || tag (32 bytes) || body``,
with ``tag = HMAC-SHA256(session_key, direction || counter || body)``; ``direction`` is ``g``
for gateway → controller and ``c`` for the other way. The receiver checks the tag (constant
time) before it reads the body, then that the counter is exactly one more than the last one it
accepted on this link. So:

- a forged frame (no key), or one made with another controller's key, fails the tag;
- a frame replayed on the same link, or one dropped or reordered, fails the counter;
- a frame recorded on an earlier link fails the tag (another session key);
- a frame reflected back to its sender fails the tag (the direction is in it).

A refused frame closes the link: TCP does not lose or reorder, so a bad frame means someone
is tampering, and a fresh hello is the only safe way on.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from typing import Any, Final, Literal

from fieldhub.lan.framing import (
    AUTHENTICATED,
    MAX_FRAME_BYTES,
    FrameError,
    decode_json,
    encode_json,
)

__all__ = ["KEY_BYTES", "NONCE_BYTES", "AuthError", "Session", "session_key"]

KEY_BYTES: Final = 32
NONCE_BYTES: Final = 16
_COUNTER = struct.Struct(">Q")
_TAG_BYTES: Final = 32
_HEADER: Final = len(AUTHENTICATED) + _COUNTER.size + _TAG_BYTES

Side = Literal["gateway", "controller"]


class AuthError(FrameError):
    """A frame that is not authentic or not in order: ``reason`` is the refusal's counter name."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def session_key(key: bytes, gateway_nonce: bytes, controller_nonce: bytes) -> bytes:
    """The key of one link (see the module doc)."""
    return hmac.digest(key, b"fieldhub-lan session" + gateway_nonce + controller_nonce, "sha256")


class Session:
    """One side's state of an authenticated link: the session key and a counter per direction."""

    def __init__(self, key: bytes, side: Side) -> None:
        self._key = key
        self._out_direction = b"g" if side == "gateway" else b"c"
        self._in_direction = b"c" if side == "gateway" else b"g"
        self._sent = 0
        self._received = 0

    def seal(self, body: dict[str, Any]) -> bytes:
        """The authenticated frame payload of ``body``, with the next outgoing counter.

        Raises:
            FrameError: the frame would exceed :data:`MAX_FRAME_BYTES`; no counter is spent,
                so the link can go on.
        """
        data = encode_json(body)
        if _HEADER + len(data) > MAX_FRAME_BYTES:
            raise FrameError(f"frame of {_HEADER + len(data)} bytes exceeds {MAX_FRAME_BYTES}")
        self._sent += 1
        counter = _COUNTER.pack(self._sent)
        return AUTHENTICATED + counter + self._tag(self._out_direction, counter, data) + data

    def open(self, payload: bytes) -> dict[str, Any]:
        """The body of an authenticated frame from the peer.

        Raises:
            AuthError: ``not_authenticated`` (a plain frame), ``bad_tag`` (forged, wrong key,
                another link's frame), ``bad_counter`` (replayed, dropped or reordered).
            FrameError: authentic but not a JSON object within bounds.
        """
        if len(payload) < _HEADER or payload[:1] != AUTHENTICATED:
            raise AuthError("not_authenticated", "a plain frame where an authenticated one is due")
        counter = payload[1 : 1 + _COUNTER.size]
        tag = payload[1 + _COUNTER.size : _HEADER]
        data = payload[_HEADER:]
        if not hmac.compare_digest(tag, self._tag(self._in_direction, counter, data)):
            raise AuthError("bad_tag", "the frame's tag does not match this link's key")
        (number,) = _COUNTER.unpack(counter)
        if number != self._received + 1:
            raise AuthError("bad_counter", f"counter {number} where {self._received + 1} is due")
        self._received = number
        return decode_json(data)

    def _tag(self, direction: bytes, counter: bytes, data: bytes) -> bytes:
        mac = hmac.new(self._key, direction, hashlib.sha256)
        mac.update(counter)
        mac.update(data)
        return mac.digest()
