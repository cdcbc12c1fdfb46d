"""The hub's one exception root, and the kinds of refusal every caller can tell apart.

Why one root with a few leaves: the REST API maps an error to an HTTP status by its *kind*
(one handler, ``hub/api/errors.py``), the CLI and the live WebSocket by the same kinds, and
no route needs a ``try``/``except`` of its own to say "not found" or "conflict". Every leaf
also subclasses the builtin it is a case of (``NotFound`` is a ``LookupError``), so code that
knows nothing of fieldhub can still catch it sensibly (the habit of ``gpiozero.exc``).

The wings raise their own, more precise errors (``DeviceNotFound``, ``VersionConflict``, …),
derived from these leaves; a message always names the thing and the value that is wrong.
"""

from __future__ import annotations

__all__ = [
    "Conflict",
    "Gone",
    "HubError",
    "Invalid",
    "NotFound",
    "Refused",
    "Throttled",
    "Unauthenticated",
    "Unavailable",
]


class HubError(Exception):
    """Root of every error the hub raises on purpose."""


class NotFound(HubError, LookupError):
    """No such thing, or none the caller may see (the two are deliberately the same answer)."""


class Conflict(HubError, ValueError):
    """The change collides with what is there: a name taken, a stale version, a used token."""


class Invalid(HubError, ValueError):
    """The request is well formed but its values break a rule (the message says which).

    ``loc`` names where the bad value was, as FastAPI's validation errors do
    (``("query", "start")``, ``("body", "labels")``); empty when it is the whole request.
    """

    def __init__(self, message: str, loc: tuple[str | int, ...] = ()) -> None:
        super().__init__(message)
        self.loc = loc


class Refused(HubError, PermissionError):
    """The caller is known but may not do this, with these values."""


class Unauthenticated(HubError, PermissionError):
    """The caller could not be recognised: wrong or expired credentials."""


class Throttled(HubError, PermissionError):
    """Too many attempts: try again in ``retry_after_s`` seconds."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Gone(HubError, LookupError):
    """It existed, and is no more to be had (a one-time secret already handed out)."""


class Unavailable(HubError, ConnectionError):
    """A part the hub needs (the broker, the database) cannot do it now; retrying may work."""
