"""Signed media URLs: the URL is the credential for one object of one device, for a while.

A device has no user session, so the upload route trusts only the URL: an HMAC-SHA256, under
a key of the hub (``media-link.key`` in the data folder, 0600), of the device id, the object's
hash and the expiry. Changing any of the three breaks the signature, so a URL is useless for
another device, another object or after it expires. Several hub processes sharing a data
folder share the key.

Download links in alarm notifications (``notify/media_links.py``) are signed the same way
with ``download`` put before the three: a recipient of a message has no session either, and a
download link cannot be turned into an upload URL, nor the other way round.
"""

from __future__ import annotations

import base64
import hmac
import secrets
from dataclasses import dataclass
from hashlib import sha256 as _sha256
from pathlib import Path
from typing import Final

from fieldhub.hub.errors import Gone, NotFound
from fieldhub.private_files import private_dir, write_private

__all__ = ["DOWNLOAD_PREFIX", "LinkExpired", "LinkForged", "UploadLinks", "load_link_key"]

KEY_FILE: Final = "media-link.key"
DOWNLOAD_PREFIX: Final = "/api/media-links"
_UPLOAD: Final = ""
_DOWNLOAD: Final = "download\n"


class LinkForged(NotFound):
    """The signature does not match: a made-up or altered URL (answered as not found)."""


class LinkExpired(Gone):
    """The URL's time is over: ask for a new one."""


def load_link_key(data: Path) -> bytes:
    """The hub's upload-link key from ``data``, made (random, 0600) when missing."""
    path = private_dir(data) / KEY_FILE
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        key = secrets.token_bytes(32)
        write_private(path, key)
    if len(key) < 32:
        raise ValueError(f"{path}: a link key has 32 bytes or more; delete the file to make one")
    return key


@dataclass(frozen=True, slots=True)
class UploadLink:
    """A minted URL and when it stops working (epoch ms)."""

    url: str
    expires_at: int


class UploadLinks:
    """Mints and checks upload URLs of one hub.

    Args:
        key: :func:`load_link_key`.
        base_url: where devices reach the hub's HTTP API, without a trailing slash.
        ttl_ms: how long a URL works.
    """

    def __init__(self, key: bytes, base_url: str, ttl_ms: int) -> None:
        self._key = key
        self.base_url = base_url.rstrip("/")
        self.ttl_ms = ttl_ms

    def _signature(self, purpose: str, device_id: str, sha256: str, expires_at: int) -> str:
        message = f"{purpose}{device_id}\n{sha256}\n{expires_at}".encode()
        mac = hmac.new(self._key, message, _sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    def mint(self, device_id: str, sha256: str, now: int) -> UploadLink:
        """A URL for ``device_id`` to upload ``sha256``, working for ``ttl_ms`` from ``now``."""
        expires_at = now + self.ttl_ms
        sig = self._signature(_UPLOAD, device_id, sha256, expires_at)
        url = f"{self.base_url}/api/uploads/{device_id}/{sha256}?expires={expires_at}&sig={sig}"
        return UploadLink(url, expires_at)

    def check(self, device_id: str, sha256: str, expires_at: int, sig: str, now: int) -> None:
        """Accept an upload URL's parts, or raise.

        Raises:
            LinkForged: the signature does not match the device, object and expiry.
            LinkExpired: it matched, and its time is over.
        """
        if not self._matches(_UPLOAD, device_id, sha256, expires_at, sig):
            raise LinkForged("no such upload")
        if now >= expires_at:
            raise LinkExpired("this upload URL has expired: ask for a new one on `upload`")

    def mint_download(self, device_id: str, sha256: str, expires_at: int) -> str:
        """A URL to download ``sha256`` of ``device_id`` until ``expires_at`` (epoch ms)."""
        sig = self._signature(_DOWNLOAD, device_id, sha256, expires_at)
        query = f"expires={expires_at}&sig={sig}"
        return f"{self.base_url}{DOWNLOAD_PREFIX}/{device_id}/{sha256}?{query}"

    def check_download(
        self, device_id: str, sha256: str, expires_at: int, sig: str, now: int
    ) -> None:
        """Accept a download URL's parts, or raise (as :meth:`check`)."""
        if not self._matches(_DOWNLOAD, device_id, sha256, expires_at, sig):
            raise LinkForged("no such media")
        if now >= expires_at:
            raise LinkExpired("this media link has expired: sign in to the hub to see the media")

    def _matches(self, purpose: str, device_id: str, sha256: str, expires: int, sig: str) -> bool:
        expected = self._signature(purpose, device_id, sha256, expires)
        return hmac.compare_digest(expected.encode(), sig.encode("utf-8", "replace"))
