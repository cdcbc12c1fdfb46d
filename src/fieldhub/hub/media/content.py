"""What an object is, told by its bytes, never by its name or what the device says.

A device announces a type; the hub takes an object only when its first bytes say the same
(``matches``). Types the hub cannot recognise are refused at the request, so a file of
unknown nature is never stored and never served to a browser under a type it is not.
"""

from __future__ import annotations

from typing import Final

__all__ = ["ACCEPTED_TYPES", "HEAD_BYTES", "IMAGE_TYPES", "matches", "sniff"]

HEAD_BYTES: Final = 64
"""Bytes read from the start of an object to tell its type."""

_SIGNATURES: Final = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"%PDF-", "application/pdf"),
)
IMAGE_TYPES: Final = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
"""Types the hub makes thumbnails of."""
ACCEPTED_TYPES: Final = frozenset(
    {*IMAGE_TYPES, "video/mp4", "application/pdf", "text/plain", "application/octet-stream"}
)
"""Types a device may announce: those :func:`sniff` recognises, plain text (UTF-8 without
control characters but tab and newlines) and ``application/octet-stream`` (anything; served
only as a download)."""


def sniff(head: bytes) -> str | None:
    """The type the first bytes of an object show, None when no signature matches."""
    for signature, kind in _SIGNATURES:
        if head.startswith(signature):
            return kind
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[4:8] == b"ftyp":
        return "video/mp4"
    return None


def _plain_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:  # a character cut at the end of the head is fine
        if exc.start < len(head) - 3:
            return False
        text = head[: exc.start].decode("utf-8")
    return all(c.isprintable() or c in "\t\r\n" for c in text)


def matches(announced: str, head: bytes) -> bool:
    """True when an object starting with ``head`` is of the ``announced`` type."""
    if announced == "application/octet-stream":
        return True
    if announced == "text/plain":
        return sniff(head) is None and _plain_text(head)
    return sniff(head) == announced
