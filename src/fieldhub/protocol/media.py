"""Media of the wire contract: what an event announces, and the ``upload`` / ``media`` channels.

Media never travel inside an event: an event carries only references (:class:`MediaRef`, its
``media`` list), the promise "these objects are coming". The device then asks on ``upload``
for a short-lived signed URL (:class:`Upload` with ``req``) and PUTs the bytes there, or, with
no HTTP route to the hub, sends them on ``upload`` in base64 chunks (:class:`Upload` with
``offset`` and ``data``). The hub answers on ``media`` (:class:`MediaAnswer`). Both sides check
the bounds here, so a device learns of a refusal before it sends anything.

The object is named by its SHA-256 (content addressing): the same picture announced twice is
stored once, and an upload is checked against the hash the event promised.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

import msgspec

__all__ = [
    "MAX_CHUNK_BYTES",
    "MAX_MEDIA_BYTES",
    "MAX_MEDIA_PER_EVENT",
    "MEDIA_NAME_PATTERN",
    "MEDIA_TYPE_PATTERN",
    "SHA256_PATTERN",
    "MediaAnswer",
    "MediaError",
    "MediaRef",
    "Upload",
]

MAX_MEDIA_PER_EVENT: Final = 8
"""Objects one event may announce."""
MAX_MEDIA_BYTES: Final = 1 << 30
"""Largest object the contract can announce (1 GiB); a hub sets its own, lower limit and
answers ``too_large`` above it."""
MAX_CHUNK_BYTES: Final = 48 * 1024
"""Largest decoded ``data`` of one MQTT chunk: base64 of it stays well under the 256 KiB
payload limit, and a chunk stays small enough not to hold up a device's other messages."""
SHA256_PATTERN: Final = r"^[0-9a-f]{64}$"
MEDIA_TYPE_PATTERN: Final = r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,63}$"
"""A MIME type without parameters, lower case (``image/jpeg``)."""
MEDIA_NAME_PATTERN: Final = r"^[A-Za-z0-9_][A-Za-z0-9 _.+-]{0,127}$"
"""A file name, never a path: no ``/`` or ``\\``, no leading dot (so no ``..``), no control
character; what a user's browser is offered when downloading."""

Sha256 = Annotated[str, msgspec.Meta(pattern=SHA256_PATTERN)]
RequestId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
_Offset = Annotated[int, msgspec.Meta(ge=0, le=MAX_MEDIA_BYTES)]

MediaError = Literal[
    "unknown_object",  # no stored event of this device announced the object
    "too_large",  # the object exceeds the hub's limit
    "quota",  # the hub's media store is full
    "bad_offset",  # a chunk does not start where the hub's copy ends (``received`` says where)
    "hash_mismatch",  # the bytes do not hash to ``sha256``: the partial object is discarded
    "wrong_type",  # the content is not of the announced type
    "unavailable",  # the hub cannot take uploads now (storage error); try again later
]
"""Why the hub refused an upload request or chunk (``MediaAnswer.error``)."""


class MediaRef(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One object an event announces: its hash, size in bytes, MIME type and file name."""

    sha256: Sha256
    size: Annotated[int, msgspec.Meta(ge=1, le=MAX_MEDIA_BYTES)]
    type: Annotated[str, msgspec.Meta(pattern=MEDIA_TYPE_PATTERN)]
    name: Annotated[str, msgspec.Meta(pattern=MEDIA_NAME_PATTERN)]


MediaList = Annotated[list[MediaRef], msgspec.Meta(max_length=MAX_MEDIA_PER_EVENT)]


class Upload(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Device → hub on ``upload`` (QoS 1, not retained, not sequenced).

    A request for an upload URL: ``req`` and ``sha256``. A chunk sent over MQTT instead:
    ``sha256``, ``offset`` (where the hub's copy ends) and ``data`` (at most 48 KiB, base64 in
    JSON). Only an object a stored event of this device announced may be uploaded.
    """

    sha256: Sha256
    req: RequestId | None = None
    offset: _Offset | None = None
    data: Annotated[bytes, msgspec.Meta(max_length=MAX_CHUNK_BYTES)] | None = None

    def __post_init__(self) -> None:
        chunk = self.offset is not None or self.data is not None
        if chunk and (self.offset is None or self.data is None):
            raise ValueError("a chunk needs both `offset` and `data`")
        if chunk == (self.req is not None):
            raise ValueError("give `req` (asking for a URL) or `offset` and `data` (a chunk)")
        if self.data is not None and not self.data:
            raise ValueError("`data` is empty")

    @property
    def is_chunk(self) -> bool:
        """True for a chunk of the object, False for a request for an upload URL."""
        return self.data is not None


class MediaAnswer(msgspec.Struct, frozen=True, kw_only=True, gc=False, omit_defaults=True):
    """Hub → device on ``media`` (QoS 1, not retained): one of four answers.

    - a URL to PUT to: ``url``, ``expires_at`` (epoch ms) and ``received`` (bytes the hub
      already has: send from there, with ``Content-Range`` when it is not 0);
    - ``done``: the hub has the whole object (stop sending);
    - a refusal: ``error`` (:data:`MediaError`), ``detail`` for people, ``retry`` whether
      asking again later may succeed;
    - after a chunk: ``received`` alone, the bytes the hub now holds.

    ``req`` echoes the request it answers (absent for chunk answers).
    """

    sha256: Sha256
    req: RequestId | None = None
    url: Annotated[str, msgspec.Meta(max_length=2048)] | None = None
    expires_at: Annotated[int, msgspec.Meta(ge=0)] | None = None
    received: _Offset | None = None
    done: bool = False
    error: MediaError | None = None
    detail: Annotated[str, msgspec.Meta(max_length=1024)] = ""
    retry: bool = False

    def __post_init__(self) -> None:
        if self.url is not None and (self.expires_at is None or self.received is None):
            raise ValueError("an answer with `url` needs `expires_at` and `received`")
        kinds = (self.url is not None) + self.done + (self.error is not None)
        if kinds > 1:
            raise ValueError("an answer is one of `url`, `done` or `error`")
        if kinds == 0 and self.received is None:
            raise ValueError("an answer needs `url`, `done`, `error` or `received`")
