"""Links that are their own credential: the hub's one key for them, and how they are signed.

Acknowledge links in notifications, bundle downloads and media uploads for devices, picture
links in alarm messages: each is an address whose holder may do one thing, for a while, with
no session. All are HMAC-SHA256 under one random key, the same on every hub of a cluster (a
link one hub sent is checked by whichever hub the browser reaches, and hubs on several
machines share only the broker and the database): its home is the database (``hub_secrets``,
``store/hub_secrets.py``). At each start :func:`share_link_key` offers the key of
``DATA/ack-links.key`` (a hub upgraded from one key file per hub: the links it already sent
keep working) or a new one; the first offer stored is everyone's, and is written back to the
file (0600; its name is its first user's), which :func:`load_link_key` then reads. The key is
never logged.

Each kind of link signs its message behind a **domain** of its own, so that no link can ever
stand for another kind. A signature is compared as text, after it is made again: base64
leaves spare bits in its last character, and a comparison of the decoded bytes would accept a
link with them changed. A link has exactly one spelling.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from pathlib import Path
from typing import Final

from sqlalchemy.ext.asyncio import AsyncEngine

from fieldhub.clock import now_ms
from fieldhub.hub.store.hub_secrets import shared_secret
from fieldhub.private_files import private_dir, write_private

__all__ = ["KEY_FILE", "b64", "load_link_key", "share_link_key", "sign", "signed", "unb64"]

KEY_FILE: Final = "ack-links.key"
SECRET_NAME: Final = "link-key"
_KEY_BYTES: Final = 32


async def share_link_key(engine: AsyncEngine, data: Path) -> bytes:
    """The cluster's link key (see the module's text), also written to ``data``'s key file.

    Raises:
        ValueError: the file holds a key too short to trust.
    """
    path = private_dir(data) / KEY_FILE
    try:
        offer = _checked(path, path.read_bytes())
    except FileNotFoundError:
        offer = secrets.token_bytes(_KEY_BYTES)
    key = unb64(await shared_secret(engine, SECRET_NAME, b64(offer), at=now_ms()))
    if key != offer or not path.exists():
        write_private(path, key)
    return key


def load_link_key(data: Path) -> bytes:
    """The hub's link key from ``data`` (as :func:`share_link_key` left it at the start), made
    (random, 0600) when missing.

    Raises:
        ValueError: the file holds a key too short to trust.
    """
    path = private_dir(data) / KEY_FILE
    try:
        return _checked(path, path.read_bytes())
    except FileNotFoundError:
        key = secrets.token_bytes(_KEY_BYTES)
        write_private(path, key)
        return key


def _checked(path: Path, key: bytes) -> bytes:
    if len(key) < _KEY_BYTES:
        raise ValueError(f"{path}: a link key has 32 bytes or more; delete the file to make one")
    return key


def b64(data: bytes) -> str:
    """URL-safe base64 without padding: the alphabet of every signed link."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64(text: str) -> bytes:
    """The bytes of :func:`b64` text.

    Raises:
        binascii.Error, ValueError: not base64.
    """
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(key: bytes, domain: bytes, message: bytes, *, size: int = 32) -> str:
    """The signature of ``message`` for links of ``domain``: the first ``size`` bytes of its
    HMAC-SHA256, as :func:`b64` text."""
    return b64(hmac.new(key, domain + message, hashlib.sha256).digest()[:size])


def signed(key: bytes, domain: bytes, message: bytes, signature: str, *, size: int = 32) -> bool:
    """Whether ``signature`` is exactly the one :func:`sign` makes (in constant time)."""
    expected = sign(key, domain, message, size=size)
    return hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace"))
