"""Secrets the hub hands out: 256 random bits, stored only as a SHA-256 digest.

With 256 bits of entropy a slow hash adds nothing against guessing (see the note in
``store/schema.py``), and a fast digest lets every request be checked with one indexed lookup.
The prefix says what a token is, so a leaked one is recognisable (secret scanners, logs).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

API_TOKEN_PREFIX = "fht_"
SESSION_PREFIX = "fhs_"
CSRF_PREFIX = "fhc_"
SETUP_PREFIX = "fhsetup_"
MAX_TOKEN_LENGTH = 256


def mint(prefix: str) -> str:
    """A new random token: ``prefix`` + 43 URL-safe characters (256 bits)."""
    return prefix + secrets.token_urlsafe(32)


def digest(token: str) -> str:
    """The stored form of ``token``: hex SHA-256."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def matches(token: str, expected_digest: str) -> bool:
    """True when ``token`` has ``expected_digest``, compared in constant time."""
    return hmac.compare_digest(digest(token), expected_digest)
