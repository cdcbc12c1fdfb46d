"""Errors of authentication and account management; each also subclasses a builtin."""

from __future__ import annotations


class AuthError(Exception):
    """Root of fieldhub's authentication and account errors."""


class LoginFailed(AuthError, PermissionError):
    """Wrong name or password, or the user cannot log in; deliberately no more precise."""


class LoginThrottled(AuthError, PermissionError):
    """Too many failed attempts from this address or for this name: wait ``retry_after_s``."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"too many failed attempts: try again in {retry_after_s} s")
        self.retry_after_s = retry_after_s


class SetupRefused(AuthError, PermissionError):
    """No setup token is active, or this is not it."""


class PasswordRejected(AuthError, ValueError):
    """The password does not meet the policy (the message says which rule, never the text)."""


class AccountConflict(AuthError, ValueError):
    """The change would leave the hub without an enabled admin, or the name is taken."""


class NotAllowed(AuthError, PermissionError):
    """The principal may do this kind of thing, but not with these values (e.g. other sites)."""


class InvalidName(AuthError, ValueError):
    """The text cannot be a user name."""
