"""Download links for devices: ``/api/bundles/{id}/download?token=…``, signed, expiring.

A token is the URL-safe payload (device id, expiry) and its HMAC-SHA256 (truncated to 128
bits) over the payload and the bundle id, under the hub's link key with a domain of its own
(``hub/auth/links.py``: one secret and one rule for every link the hub signs), so an
acknowledge token can never pass for a download token or the other way round. It is
minted when the install command is made and
lives as long as that command may wait and run, plus the device's own deadline.

Why a token and not the device's MQTT credentials: the agent downloads with an HTTP client
that knows nothing of them, and a token bound to one device and one bundle, for a short time,
gives a thief nothing else. Refusals are counted by reason (``forged``, ``expired``).

Why so short: the address travels as a ``str`` argument of ``bundle.install``, which the
contract bounds to 256 characters (``protocol/actions.py``); the bundle id is in the path
already, so the token only binds it, and 128 bits of MAC are plenty against guessing. With a
64-character device id the address is the public URL plus 220 characters.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Final

from fieldhub.clock import now_ms
from fieldhub.hub.auth.links import b64, sign, signed, unb64
from fieldhub.hub.errors import Gone, NotFound

__all__ = ["DownloadClaim", "DownloadExpired", "DownloadForged", "DownloadLinks"]

_DOMAIN: Final = b"fieldhub bundle download v1\x00"
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,120}\.[A-Za-z0-9_-]{22}$")
_MAC_BYTES: Final = 16


class DownloadForged(NotFound):
    """Not a token this hub made for this bundle: answered like an unknown address."""


class DownloadExpired(Gone):
    """The token's time is over: the device must be sent a new install command."""


@dataclass(frozen=True, slots=True)
class DownloadClaim:
    """What a valid token says."""

    device_id: str
    bundle_id: str
    expires_at: int


class DownloadLinks:
    """Mints and checks download tokens of one hub.

    Args:
        key: the hub's link key (``auth.links.load_link_key``).
        base_url: the hub's address as devices reach it, without a trailing slash.
    """

    def __init__(self, key: bytes, base_url: str) -> None:
        self._key = key
        self.base_url = base_url.rstrip("/")
        self.refusals: Counter[str] = Counter()

    def url(self, device_id: str, bundle_id: str, ttl_ms: int) -> str:
        """A download address for ``device_id`` of ``bundle_id``, valid ``ttl_ms`` from now."""
        payload = f"{device_id}|{now_ms() + ttl_ms}".encode()
        mac = sign(self._key, _DOMAIN, self._signed(payload, bundle_id), size=_MAC_BYTES)
        token = f"{b64(payload)}.{mac}"
        return f"{self.base_url}/api/bundles/{bundle_id}/download?token={token}"

    def check(self, token: str, bundle_id: str) -> DownloadClaim:
        """What ``token`` says, if this hub made it for ``bundle_id`` and it has not expired.

        Raises:
            DownloadForged: malformed, altered, signed with another key, or for another bundle.
            DownloadExpired: past its expiry.
        """
        claim = self._verified(token, bundle_id)
        if claim is None:
            self.refusals["forged"] += 1
            raise DownloadForged("no such download")
        if claim.expires_at <= now_ms():
            self.refusals["expired"] += 1
            raise DownloadExpired("this download link has expired")
        return claim

    @staticmethod
    def _signed(payload: bytes, bundle_id: str) -> bytes:
        """What a token's signature covers: the bundle (in the path) and the payload."""
        return bundle_id.encode() + b"\x00" + payload

    def _verified(self, token: str, bundle_id: str) -> DownloadClaim | None:
        if not _TOKEN.fullmatch(token):
            return None
        encoded, mac = token.split(".")
        try:
            payload = unb64(encoded)
        except ValueError:  # binascii.Error is one
            return None
        message = self._signed(payload, bundle_id)
        if b64(payload) != encoded or not signed(self._key, _DOMAIN, message, mac, size=_MAC_BYTES):
            return None
        try:
            device_id, expires = payload.decode("ascii").split("|")
            return DownloadClaim(device_id, bundle_id, int(expires))
        except ValueError:  # signed by us, so never: but a parse error is no 500
            return None
