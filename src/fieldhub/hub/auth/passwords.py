"""User passwords: policy, argon2id hashing off the event loop, timing-safe verification.

Hashing costs ~0.14 s of CPU and 64 MiB (argon2-cffi's RFC 9106 low-memory profile) on purpose;
it runs in a worker thread so the event loop keeps serving, and at most ``concurrency`` hashes
run at once so a burst of logins cannot exhaust memory. Verifying a login for a name that does
not exist costs the same as for one that does (a dummy hash is checked), so timing does not tell
an attacker which names exist.
"""

from __future__ import annotations

import asyncio
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from fieldhub.hub.auth.errors import PasswordRejected

MIN_LENGTH = 10
MAX_LENGTH = 1024


def check_policy(password: str) -> None:
    """Refuse passwords people can guess or that are unreasonable to hash.

    Length is what counts (NIST SP 800-63B): at least 10 characters, at most 1024, and not all
    one character.

    Raises:
        PasswordRejected: naming the rule, never echoing the password.
    """
    if len(password) < MIN_LENGTH:
        raise PasswordRejected(f"a password needs at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise PasswordRejected(f"a password may have at most {MAX_LENGTH} characters")
    if len(set(password)) == 1:
        raise PasswordRejected("a password must not be one character repeated")


def generate() -> str:
    """A strong password for a generated account (the demo's admin): 20 URL-safe characters."""
    return secrets.token_urlsafe(15)


class Passwords:
    """Hash and verify passwords with argon2id."""

    def __init__(self, hasher: PasswordHasher | None = None, *, concurrency: int = 2) -> None:
        self._hasher = hasher or PasswordHasher()
        self._slots = asyncio.Semaphore(concurrency)
        self._dummy: str | None = None

    async def hash(self, password: str) -> str:
        """The argon2id hash of ``password`` (salted; the salt is part of the result)."""
        async with self._slots:
            return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, stored: str | None, password: str) -> bool:
        """True when ``password`` matches ``stored``; with no stored hash, a dummy is checked
        (same cost) and the answer is False."""
        async with self._slots:
            return await asyncio.to_thread(self._verify, stored, password)

    def needs_rehash(self, stored: str) -> bool:
        """True when ``stored`` was made with other parameters than today's."""
        try:
            return self._hasher.check_needs_rehash(stored)
        except InvalidHashError:
            return True

    def _verify(self, stored: str | None, password: str) -> bool:
        if self._dummy is None:  # once per process, whatever the first login is for
            self._dummy = self._hasher.hash(secrets.token_urlsafe(16))
        try:
            return self._hasher.verify(stored or self._dummy, password) and stored is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
