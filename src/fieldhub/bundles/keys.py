"""Ed25519 keys for bundles: the signer's private key, the devices' trusted public keys.

A private key never leaves the signer's machine: it is written once by ``fieldhub bundle
keygen`` as PKCS#8 PEM in a file only its owner may read. A public key travels as one line of
text (the base64 of its 32 raw bytes), short enough to paste into ``agent.yaml`` or a hub form.
Its **key id** is the first 16 hex digits of the SHA-256 of those raw bytes: a manifest names
the key that signed it by that id, and ``agent.yaml`` revokes a key by it. A trusted key may
carry an expiry (``until_ms``): past it, the key vouches for nothing, whenever it signed
(docs/bundles.md, key rotation).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fieldhub.bundles.manifest import KEY_ID_PATTERN

__all__ = ["BadKey", "PublicKey", "SigningKey", "is_key_id", "key_id_of", "utc_text"]

_RAW_KEY_BYTES: Final = 32
_KEY_ID = re.compile(KEY_ID_PATTERN)


class BadKey(ValueError):
    """A key's text or file is not an Ed25519 key in the expected form."""


def utc_text(epoch_ms: int) -> str:
    """An instant as people read it in refusals: ISO 8601, UTC."""
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat()


def key_id_of(raw: bytes) -> str:
    """The key id of a raw 32-byte Ed25519 public key."""
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class PublicKey:
    """A public key that may verify bundles (or downgrade permissions), until ``until_ms``
    (epoch milliseconds, exclusive) if it has an expiry."""

    raw: bytes
    until_ms: int | None = None
    key_id: str = field(init=False)

    def __post_init__(self) -> None:
        if len(self.raw) != _RAW_KEY_BYTES:
            raise BadKey(f"an Ed25519 public key has 32 bytes, not {len(self.raw)}")
        object.__setattr__(self, "key_id", key_id_of(self.raw))

    @classmethod
    def from_text(cls, text: str, *, until_ms: int | None = None) -> PublicKey:
        """Read the one-line form (base64 of the raw key), as ``keygen`` writes it.

        Raises:
            BadKey: not base64, or not 32 bytes.
        """
        try:
            raw = base64.b64decode(text.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise BadKey("a public key is the base64 of 32 bytes (one line)") from None
        return cls(raw, until_ms)

    @property
    def until(self) -> str:
        """The expiry as people read it (ISO 8601, UTC), or ``never``."""
        return "never" if self.until_ms is None else utc_text(self.until_ms)

    def expired(self, at_ms: int) -> bool:
        """Whether this key has expired at ``at_ms``: the one rule for every verifier."""
        return self.until_ms is not None and at_ms >= self.until_ms

    def to_text(self) -> str:
        """The one-line form, for ``agent.yaml`` and the hub."""
        return base64.b64encode(self.raw).decode("ascii")

    def verifies(self, signature: bytes, message: bytes) -> bool:
        """Whether ``signature`` is this key's signature over exactly ``message``."""
        try:
            Ed25519PublicKey.from_public_bytes(self.raw).verify(signature, message)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class SigningKey:
    """A private key: only ``fieldhub bundle`` on the signer's machine ever holds one."""

    _key: Ed25519PrivateKey = field(repr=False)

    @classmethod
    def generate(cls) -> SigningKey:
        """A new random key."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_pem(cls, pem: bytes) -> SigningKey:
        """Read the PKCS#8 PEM that :meth:`to_pem` writes.

        Raises:
            BadKey: not PEM, encrypted, or not an Ed25519 key.
        """
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as exc:
            raise BadKey(f"not an unencrypted PEM private key: {exc}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise BadKey("not an Ed25519 private key")
        return cls(key)

    def to_pem(self) -> bytes:
        """PKCS#8 PEM, unencrypted: the file's permissions protect it (``keygen``)."""
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @property
    def public(self) -> PublicKey:
        """The matching public key."""
        raw = self._key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return PublicKey(raw)

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature over ``message``."""
        return self._key.sign(message)


def is_key_id(text: str) -> bool:
    """Whether ``text`` has the form of a key id (16 lower-case hex digits)."""
    return _KEY_ID.match(text) is not None
