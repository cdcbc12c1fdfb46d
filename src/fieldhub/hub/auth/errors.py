"""Errors of authentication and account management, each a kind of ``hub.errors`` refusal."""

from __future__ import annotations

from fieldhub.hub.errors import Conflict, HubError, Invalid, Refused, Throttled, Unauthenticated


class AuthError(HubError):
    """Root of fieldhub's authentication and account errors."""


class LoginFailed(AuthError, Unauthenticated):
    """Wrong name or password, or the user cannot log in; deliberately no more precise."""


class WrongPassword(AuthError, Refused):
    """A logged-in user's proof of their current password failed (403: the session stays)."""


class LoginThrottled(AuthError, Throttled):
    """Too many failed attempts from this address or for this name: wait ``retry_after_s``."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"too many failed attempts: try again in {retry_after_s} s", retry_after_s)


class SetupRefused(AuthError, Unauthenticated):
    """No setup token is active, or this is not it."""


class PasswordRejected(AuthError, Invalid):
    """The password does not meet the policy (the message says which rule, never the text)."""


class AccountConflict(AuthError, Conflict):
    """The change would leave the hub without an enabled admin, or the name is taken."""


class NotAllowed(AuthError, Refused):
    """The principal may do this kind of thing, but not with these values (e.g. other sites)."""


class InvalidName(AuthError, Invalid):
    """The text cannot be a user name."""
