"""The technician page's password, sessions and CSRF tokens.

The password lives in ``agent.yaml`` only as an argon2id hash (``fieldhub agent
hash-password`` prints one; :func:`hash_password` is what it calls). The agent's hashes are
made lighter than the hub's on purpose: verifying costs the memory the hash asks for, and a
Pi that should idle at 30 MB can lend 19 MiB for a moment (OWASP's minimum for argon2id:
19 MiB, 2 passes) but not the hub's 64 MiB. A hash asking for more than 64 MiB is refused at
start. Verification runs in a worker thread, one at a time, and failures are throttled per
client address with a doubling lock-out.

Those 19 MiB must go back to the system after each login, and with glibc they did not:
measured, RSS grew by 19 MiB per login after the first (39 MB after ten), because glibc raises
its mmap threshold when a large block is freed, so the next one comes from a worker thread's
heap and stays there. :func:`keep_large_blocks_mapped` pins the threshold (glibc's default,
128 KiB), after which ten logins leave RSS where it was (+0 MB; peak +19 MiB during one).

Sessions are in memory (a restart logs the technician out, which is fine), bounded in number
and time. Each has its own CSRF token, which every form carries.

What a login needs is imported at the first login, not with this module, because the agent
carries every module it imports from its start to its end, for a page a technician opens a
few times a year (measured, RSS of the idle agent): ``hashlib``, ``hmac`` and ``secrets`` each
load OpenSSL (``_hashlib``), 3.5 MB; argon2 with cffi 0.4 MB; ctypes 0.3 MB. A page view
without a session cookie needs none of them. The hash is still checked at start (a wrong one
stops the agent): :func:`_memory_cost_kib` reads it as argon2's ``extract_parameters`` does.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from argon2 import PasswordHasher

__all__ = [
    "PasswordCheck",
    "Session",
    "Sessions",
    "WeakPassword",
    "hash_password",
    "keep_large_blocks_mapped",
]

MIN_PASSWORD: Final = 10
MAX_HASH_MEMORY_KIB: Final = 64 * 1024
_ARGON2_TYPES: Final = ("argon2id", "argon2i", "argon2d")
_M_MMAP_THRESHOLD: Final = -3  # glibc's malloc.h


def _hasher() -> PasswordHasher:
    """The agent's argon2id parameters (verifying reads the parameters from the hash)."""
    from argon2 import PasswordHasher  # at the first login (module docstring)

    return PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)


def keep_large_blocks_mapped() -> bool:
    """Have malloc serve blocks of 128 KiB and more by mmap and give them back when freed
    (glibc; elsewhere nothing is done and False returned). Process-wide and idempotent.

    A threshold set in the environment (the systemd unit sets 32 KiB) is fixed already, and
    kept: raising it to 128 KiB would put an outbox drain's messages back into the heap."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return True
    import ctypes  # at the first login (module docstring)

    try:
        return bool(ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, 128 * 1024))
    except (OSError, AttributeError):
        return False


class WeakPassword(ValueError):
    """A password :func:`hash_password` will not hash; the message says which rule."""


def hash_password(password: str) -> str:
    """The argon2id hash to put in ``agent.yaml`` as ``web.password_hash``.

    Raises:
        WeakPassword: shorter than 10 characters, or one character repeated.
    """
    if len(password) < MIN_PASSWORD:
        raise WeakPassword(f"a password needs at least {MIN_PASSWORD} characters")
    if len(set(password)) == 1:
        raise WeakPassword("a password must not be one character repeated")
    return _hasher().hash(password)


class PasswordCheck:
    """Checks the page's password against its hash, off the event loop, one at a time.

    Raises:
        ValueError: ``password_hash`` is not an argon2 hash, or asks for more than 64 MiB.
    """

    def __init__(self, password_hash: str) -> None:
        memory_cost = _memory_cost_kib(password_hash)
        if memory_cost > MAX_HASH_MEMORY_KIB:
            raise ValueError(
                f"web.password_hash asks for {memory_cost // 1024} MiB to verify; "
                f"make one with 'fieldhub agent hash-password' (19 MiB)"
            )
        self._hash = password_hash
        self._slot = asyncio.Lock()
        self._mapped = False

    async def verify(self, password: str) -> bool:
        """True when ``password`` is the page's password."""
        if not password or len(password) > 1024:
            return False
        async with self._slot:
            if not self._mapped:  # before the first large block is freed (module docstring)
                keep_large_blocks_mapped()
                self._mapped = True
            return await asyncio.to_thread(self._verify, password)

    def _verify(self, password: str) -> bool:
        from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

        try:
            return _hasher().verify(self._hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False


def _memory_cost_kib(password_hash: str) -> int:
    """The memory (KiB) an argon2 hash asks for to verify, read the way argon2-cffi's
    ``extract_parameters`` reads it (without importing argon2 at start, module docstring).

    Raises:
        ValueError: ``password_hash`` is not an argon2 hash.
    """
    parts = password_hash.split("$")
    if len(parts) == 5:  # an argon2 1.2 hash: no version field
        parts.insert(2, "v=18")
    try:
        if len(parts) != 6 or parts[0] or parts[1] not in _ARGON2_TYPES:
            raise ValueError(parts[:2])
        params = {
            key: int(value)
            for key, value in (item.split("=") for item in [parts[2], *parts[3].split(",")])
        }
    except ValueError:
        raise ValueError("web.password_hash is not an argon2 hash") from None
    if sorted(params) != ["m", "p", "t", "v"]:
        raise ValueError("web.password_hash is not an argon2 hash")
    return params["m"]


@dataclass(slots=True)
class Session:
    """A logged-in browser: its CSRF token, and a message for its next page view."""

    csrf: str
    created: float
    seen: float
    flash: tuple[bool, str] | None = field(default=None)

    def csrf_ok(self, token: str) -> bool:
        """Timing-safe comparison with the session's CSRF token."""
        import hmac  # OpenSSL: only once there are sessions (module docstring)

        return hmac.compare_digest(self.csrf.encode(), token.encode())


class Sessions:
    """Sessions by cookie token (kept as its SHA-256), at most ``max_sessions``, ending after
    ``idle_s`` without a request or ``max_age_s`` after login."""

    def __init__(
        self, max_sessions: int = 32, idle_s: float = 1800.0, max_age_s: float = 12 * 3600.0
    ) -> None:
        self._max = max_sessions
        self._idle_s = idle_s
        self._max_age_s = max_age_s
        self._sessions: dict[bytes, Session] = {}

    def create(self) -> tuple[str, Session]:
        """A new session and the token for its cookie (the least recently used one goes when
        there are too many)."""
        now = time.monotonic()
        self._expire(now)
        if len(self._sessions) >= self._max:
            oldest = min(self._sessions, key=lambda key: self._sessions[key].seen)
            del self._sessions[oldest]
        import secrets  # OpenSSL: only once someone logs in (module docstring)

        token = secrets.token_urlsafe(32)
        session = Session(csrf=secrets.token_urlsafe(32), created=now, seen=now)
        self._sessions[_key(token)] = session
        return token, session

    def get(self, token: str | None) -> Session | None:
        """The live session of ``token``, or None; a hit counts as activity."""
        if not token:
            return None
        now = time.monotonic()
        self._expire(now)
        session = self._sessions.get(_key(token))
        if session is not None:
            session.seen = now
        return session

    def end(self, token: str | None) -> None:
        """Log out."""
        if token:
            self._sessions.pop(_key(token), None)

    def _expire(self, now: float) -> None:
        dead = [
            key
            for key, s in self._sessions.items()
            if now - s.seen > self._idle_s or now - s.created > self._max_age_s
        ]
        for key in dead:
            del self._sessions[key]


def _key(token: str) -> bytes:
    import hashlib  # OpenSSL: only once a request carries a session cookie (module docstring)

    return hashlib.sha256(token.encode()).digest()
