"""The one-time setup token: how a hub with no users gets its first admin over HTTP.

Issued at start when the store has no user at all, printed once in the log (the person who can
read the hub's log is the person who installed it), kept only as a digest in memory, and dead
after one successful use or when the process stops. There is never a default password.
"""

from __future__ import annotations

from fieldhub.hub import secrets as tokens


class SetupToken:
    """At most one live setup token."""

    def __init__(self) -> None:
        self._digest: str | None = None

    @property
    def active(self) -> bool:
        """True while a token was issued and not used."""
        return self._digest is not None

    def issue(self) -> str:
        """A new token (replacing any earlier one); the caller shows it once."""
        token = tokens.mint(tokens.SETUP_PREFIX)
        self._digest = tokens.digest(token)
        return token

    def consume(self, token: str) -> bool:
        """True, once, for the live token; it is dead afterwards. No await: no race."""
        if self._digest is None or not tokens.matches(token, self._digest):
            return False
        self._digest = None
        return True

    def revoke(self) -> None:
        """Kill the live token (a first user was made another way)."""
        self._digest = None
