"""Authentication: from a password, a session cookie or a bearer token to a ``Principal``.

Every failure says as little as possible: a login fails with one message whether the name is
unknown, the password wrong, the user disabled or without a password, and takes as long; a
request with a bad token gets 401 without a hint of which tokens exist. Logins (both outcomes),
logouts and setup are written to the audit log; the server log gets one line per failed login
without the name unless the name belongs to a user (people type passwords into name fields).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

from fieldhub.clock import now_ms
from fieldhub.hub import secrets as tokens
from fieldhub.hub.auth.errors import LoginFailed, LoginThrottled, SetupRefused
from fieldhub.hub.auth.passwords import Passwords, check_policy
from fieldhub.hub.auth.rules import Principal, Role, Scope, normalize_name, principal_for
from fieldhub.hub.auth.setup import SetupToken
from fieldhub.hub.auth.throttle import LoginThrottle
from fieldhub.hub.auth.usage import TokenUse
from fieldhub.hub.store.audit import AuditLog
from fieldhub.hub.store.users import UserExists, UserRecord, UserStore

log = logging.getLogger(__name__)

SESSION_LIFETIME_MS = 12 * 3_600_000
TOKEN_TOUCH_EVERY_MS = 60_000  # last_used_at is a hint, not worth a write per request
FAILED = "wrong name or password"


class CredentialsRejected(LoginFailed):
    """A session or token was presented but is not (or no longer) valid: HTTP 401."""


@dataclass(frozen=True, slots=True)
class NewSession:
    """A session just made: the two tokens go to the browser once, then exist only hashed."""

    user: UserRecord
    token: str
    csrf_token: str
    expires_at: int


@dataclass(frozen=True, slots=True)
class SessionPrincipal:
    """A caller resolved from a credential: who, and for a session the digest its CSRF token
    must match (None for an API token, which a browser never sends by itself)."""

    principal: Principal
    csrf_hash: str | None


@dataclass(frozen=True, slots=True)
class Credential:
    """What a caller authenticates with, as presented: an API token or a session cookie.
    Kept by long connections (the live WebSocket) to re-check it while they last."""

    kind: Literal["bearer", "session"]
    token: str = field(repr=False)


class Authenticator:
    """Logins, sessions, bearer tokens and the first-admin setup."""

    def __init__(
        self,
        users: UserStore,
        audit: AuditLog,
        passwords: Passwords,
        throttle: LoginThrottle,
        setup: SetupToken,
        *,
        session_lifetime_ms: int = SESSION_LIFETIME_MS,
        token_use: TokenUse | None = None,
    ) -> None:
        self.users = users
        self.token_use = token_use or TokenUse(users)
        self.audit = audit
        self.passwords = passwords
        self.throttle = throttle
        self.setup = setup
        self.session_lifetime_ms = session_lifetime_ms

    # -- login and logout -------------------------------------------------------------------
    async def login(self, name: str, password: str, *, source: str) -> NewSession:
        """Check a name and password and open a session.

        Raises:
            LoginThrottled: too many failures for this name or address; nothing was checked.
            LoginFailed: the name and password do not open a session (one message for all).
        """
        name = name.strip().lower()
        wait = self.throttle.retry_after(name, source)
        if wait:
            known = await self.users.by_name(name) is not None  # never record a typed password
            await self.audit.record(
                "anonymous",
                "login",
                name if known else "",
                "denied",
                source,
                {"reason": "throttled"},
            )
            raise LoginThrottled(wait)
        found = await self.users.by_name(name)
        user, stored = found if found is not None else (None, None)
        good = await self.passwords.verify(stored, password)  # same cost for unknown names
        if not good or user is None or user.disabled:
            self.throttle.failed(name, source)
            if user is None:
                log.warning("login failed from %s: unknown user name", source or "?")
                await self.audit.record(
                    "anonymous", "login", "", "failed", source, {"reason": "unknown user"}
                )
            else:
                reason = "user disabled" if good else "wrong password"
                log.warning("login failed for user %r from %s: %s", name, source or "?", reason)
                await self.audit.record(
                    "anonymous", "login", name, "failed", source, {"reason": reason}
                )
            raise LoginFailed(FAILED)
        self.throttle.succeeded(name)
        if stored is not None and self.passwords.needs_rehash(stored):
            await self.users.set_password_hash(user.id, await self.passwords.hash(password))
        session = await self.open_session(user)
        log.info("user %r logged in from %s", name, source or "?")
        await self.audit.record(f"user:{name}", "login", name, "ok", source)
        return session

    async def open_session(self, user: UserRecord) -> NewSession:
        """A new session of ``user`` (after its password was checked)."""
        token, csrf = tokens.mint(tokens.SESSION_PREFIX), tokens.mint(tokens.CSRF_PREFIX)
        expires_at = now_ms() + self.session_lifetime_ms
        await self.users.create_session(
            user.id,
            token_hash=tokens.digest(token),
            csrf_hash=tokens.digest(csrf),
            expires_at=expires_at,
        )
        return NewSession(user, token, csrf, expires_at)

    async def logout(self, principal: Principal, *, source: str) -> None:
        """End the caller's session (a token-authenticated logout ends nothing)."""
        if principal.session_hash is not None:
            await self.users.end_session(principal.session_hash)
            await self.audit.record(principal.actor, "logout", principal.name, "ok", source)

    # -- requests ---------------------------------------------------------------------------
    async def session(self, token: str) -> SessionPrincipal:
        """The principal of a session cookie.

        Raises:
            CredentialsRejected: unknown, expired, or the user is disabled.
        """
        if len(token) > tokens.MAX_TOKEN_LENGTH:
            raise CredentialsRejected("invalid session")
        token_hash = tokens.digest(token)
        found = await self.users.session(token_hash)
        if found is None:
            raise CredentialsRejected("invalid session: log in again")
        session, user = found
        if session.expires_at <= now_ms():
            await self.users.end_session(token_hash)
            raise CredentialsRejected("the session has expired: log in again")
        if user.disabled:
            raise CredentialsRejected("invalid session: log in again")
        principal = principal_for(
            via="session",
            user_id=user.id,
            name=user.name,
            role=user.role,
            sites=user.sites,
            session_hash=token_hash,
        )
        return SessionPrincipal(principal, session.csrf_hash)

    async def resolve(self, credential: Credential) -> SessionPrincipal:
        """The one way from a credential to a caller: REST requests, the live WebSocket and
        its periodic re-checks all come through here.

        Raises:
            CredentialsRejected: unknown, expired or revoked, or the user is disabled.
        """
        if credential.kind == "bearer":
            return SessionPrincipal(await self.bearer(credential.token), None)
        return await self.session(credential.token)

    async def bearer(self, token: str) -> Principal:
        """The principal of an API token.

        Raises:
            CredentialsRejected: unknown, revoked, expired, or the user is disabled.
        """
        if len(token) > tokens.MAX_TOKEN_LENGTH:
            raise CredentialsRejected("invalid token")
        found = await self.users.token(tokens.digest(token))
        if found is None:
            raise CredentialsRejected("invalid token")
        record, user = found
        now = now_ms()
        if record.revoked_at is not None:
            raise CredentialsRejected("the token was revoked")
        if record.expires_at is not None and record.expires_at <= now:
            raise CredentialsRejected("the token has expired")
        if user.disabled:
            raise CredentialsRejected("invalid token")
        if record.last_used_at is None or now - record.last_used_at >= TOKEN_TOUCH_EVERY_MS:
            self.token_use.note(record.id, now)  # written in the background (auth/usage.py)
        return principal_for(
            via="token",
            user_id=user.id,
            name=user.name,
            role=user.role,
            sites=user.sites,
            scopes=frozenset(Scope(s) for s in record.scopes if s in Scope.__members__.values()),
            token_id=record.id,
        )

    # -- first admin ------------------------------------------------------------------------
    async def start(self) -> str | None:
        """Issue a setup token when there is no user at all; returns it (to be logged once)."""
        if await self.users.count() > 0:
            return None
        return self.setup.issue()

    async def first_admin(self, token: str, name: str, password: str, *, source: str) -> UserRecord:
        """Create the first admin with the setup token, which dies with it.

        Raises:
            LoginThrottled: too many failed attempts from this address.
            SetupRefused: no live setup token, this is not it, or a user exists meanwhile.
            InvalidName: the name cannot be a user name (the token stays alive).
            PasswordRejected: the password does not meet the policy (the token stays alive).
        """
        wait = self.throttle.retry_after(None, source)
        if wait:
            raise LoginThrottled(wait)
        name = normalize_name(name)
        check_policy(password)
        if not self.setup.active or await self.users.count() > 0:
            self.setup.revoke()
            self.throttle.failed(None, source)
            raise SetupRefused("no setup is possible: log in, or ask an admin")
        if not self.setup.consume(token):
            self.throttle.failed(None, source)
            await self.audit.record("anonymous", "setup", name, "failed", source)
            raise SetupRefused("wrong setup token")
        try:
            user = await self.users.create(
                name,
                role=Role.ADMIN.value,
                sites=[],
                password_hash=await self.passwords.hash(password),
            )
        except UserExists:  # only if a user was made meanwhile by the CLI, with this name
            raise SetupRefused("no setup is possible: log in, or ask an admin") from None
        log.info("first admin %r created with the setup token (which is now used up)", name)
        await self.audit.record(
            "setup-token", "user.created", name, "ok", source, {"role": "admin", "sites": []}
        )
        return user
