"""Signed media URLs: the URL is the credential for one object of one device, for a while.

A device has no user session, so the upload route trusts only the URL: a signature, under the
hub's link key (``hub/auth/links.py``: one secret and one rule for every link the hub signs),
of the device id, the object's hash and the expiry. Changing any of the three breaks the
signature, so a URL is useless for another device, another object or after it expires.

Download links in alarm notifications (``notify/media_links.py``) are signed the same way
behind a domain of their own: a recipient of a message has no session either, and a download
link cannot be turned into an upload URL, nor the other way round.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from fieldhub.hub.auth.links import sign, signed
from fieldhub.hub.errors import Gone, NotFound

__all__ = ["DOWNLOAD_PREFIX", "LinkExpired", "LinkForged", "UploadLinks"]

DOWNLOAD_PREFIX: Final = "/api/media-links"
_UPLOAD: Final = b"fieldhub media upload v1\x00"
_DOWNLOAD: Final = b"fieldhub media download v1\x00"


class LinkForged(NotFound):
    """The signature does not match: a made-up or altered URL (answered as not found)."""


class LinkExpired(Gone):
    """The URL's time is over: ask for a new one."""


@dataclass(frozen=True, slots=True)
class UploadLink:
    """A minted URL and when it stops working (epoch ms)."""

    url: str
    expires_at: int


class UploadLinks:
    """Mints and checks upload URLs of one hub.

    Args:
        key: the hub's link key (``auth.links.load_link_key``).
        base_url: where devices reach the hub's HTTP API, without a trailing slash.
        ttl_ms: how long a URL works.
    """

    def __init__(self, key: bytes, base_url: str, ttl_ms: int) -> None:
        self._key = key
        self.base_url = base_url.rstrip("/")
        self.ttl_ms = ttl_ms

    def _signature(self, purpose: bytes, device_id: str, sha256: str, expires_at: int) -> str:
        return sign(self._key, purpose, f"{device_id}\n{sha256}\n{expires_at}".encode())

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

    def _matches(self, purpose: bytes, device_id: str, sha256: str, expires: int, sig: str) -> bool:
        message = f"{device_id}\n{sha256}\n{expires}".encode()
        return signed(self._key, purpose, message, sig)
