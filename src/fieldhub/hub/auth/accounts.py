"""Account management: users (by admins and the CLI), passwords, API tokens; each change audited.

The rules that are not about a single request live here: names are normalised, passwords meet
the policy, the hub always keeps at least one enabled admin, a token never carries more scopes
than the token that made it, and a user's own objects are found only by that user (an admin
reaches other users' tokens through the users routes).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from fieldhub.clock import now_ms
from fieldhub.hub import secrets as tokens
from fieldhub.hub.auth.errors import AccountConflict, LoginThrottled, NotAllowed, WrongPassword
from fieldhub.hub.auth.passwords import Passwords, check_policy
from fieldhub.hub.auth.rules import Principal, Role, Scope, normalize_name
from fieldhub.hub.auth.throttle import LoginThrottle
from fieldhub.hub.store.audit import AuditLog
from fieldhub.hub.store.users import TokenRecord, UserRecord, UserStore

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class NewToken:
    """An API token just made: ``token`` is shown once and exists only hashed afterwards."""

    record: TokenRecord
    token: str


class Accounts:
    """Users, passwords and API tokens, changed on behalf of an actor and audited."""

    def __init__(
        self,
        users: UserStore,
        audit: AuditLog,
        passwords: Passwords,
        throttle: LoginThrottle,
    ) -> None:
        self.users = users
        self.audit = audit
        self.passwords = passwords
        self.throttle = throttle

    # -- reads ------------------------------------------------------------------------------
    async def user(self, user_id: int) -> UserRecord:
        """One user.

        Raises:
            UserNotFound: there is none.
        """
        return await self.users.get(user_id)

    async def all_users(self) -> list[UserRecord]:
        """Every user."""
        return await self.users.list_users()

    async def tokens_of(self, user_id: int) -> list[TokenRecord]:
        """A user's API tokens (never their secrets)."""
        return await self.users.tokens(user_id)

    # -- users ------------------------------------------------------------------------------
    async def create_user(
        self,
        name: str,
        *,
        role: Role,
        sites: list[str],
        password: str | None,
        actor: str,
        source: str = "",
    ) -> UserRecord:
        """Add a user (without a password it cannot log in until one is set).

        Raises:
            InvalidName: not a valid user name.
            PasswordRejected: the password does not meet the policy.
            UserExists: the name is taken.
        """
        name = normalize_name(name)
        if password is not None:
            check_policy(password)
        hashed = None if password is None else await self.passwords.hash(password)
        user = await self.users.create(
            name, role=role.value, sites=_sites(sites), password_hash=hashed
        )
        await self.audit.record(
            actor,
            "user.created",
            name,
            "ok",
            source,
            {"role": user.role, "sites": user.sites, "password": password is not None},
        )
        return user

    async def update_user(
        self,
        user_id: int,
        *,
        role: Role | None = None,
        sites: list[str] | None = None,
        disabled: bool | None = None,
        actor: str,
        source: str = "",
    ) -> UserRecord:
        """Change a user's role, sites or disabled flag.

        Raises:
            UserNotFound: no such user.
            AccountConflict: the change would leave no enabled admin.
        """
        before = await self.users.get(user_id)
        stops_admin = before.role == Role.ADMIN and (
            (role is not None and role != Role.ADMIN) or disabled is True
        )
        if stops_admin and not before.disabled:
            await self._keep_an_admin(before)
        user = await self.users.update(
            user_id,
            role=None if role is None else role.value,
            sites=None if sites is None else _sites(sites),
            disabled=disabled,
        )
        changes = {
            field: {"from": old, "to": new}
            for field, old, new in (
                ("role", before.role, user.role),
                ("sites", before.sites, user.sites),
                ("disabled", before.disabled, user.disabled),
            )
            if old != new
        }
        await self.audit.record(actor, "user.updated", user.name, "ok", source, changes)
        return user

    async def delete_user(self, user_id: int, *, actor: str, source: str = "") -> None:
        """Remove a user with its sessions and tokens.

        Raises:
            UserNotFound: no such user.
            AccountConflict: it is the last enabled admin.
        """
        user = await self.users.get(user_id)
        if user.role == Role.ADMIN and not user.disabled:
            await self._keep_an_admin(user)
        await self.users.delete(user_id)
        await self.audit.record(actor, "user.deleted", user.name, "ok", source)

    async def _keep_an_admin(self, user: UserRecord) -> None:
        if await self.users.count(enabled_admins=True) <= 1:
            raise AccountConflict(
                f"{user.name!r} is the last enabled admin: make another admin first"
            )

    # -- passwords --------------------------------------------------------------------------
    async def set_password(
        self,
        user_id: int,
        password: str,
        *,
        actor: str,
        source: str = "",
        keep_session: str | None = None,
    ) -> UserRecord:
        """Set a user's password (by an admin or the CLI); ends the user's other sessions.

        Raises:
            UserNotFound: no such user.
            PasswordRejected: the password does not meet the policy.
        """
        check_policy(password)
        user = await self.users.get(user_id)
        await self.users.set_password_hash(
            user_id, await self.passwords.hash(password), keep_session=keep_session
        )
        await self.audit.record(actor, "user.password.set", user.name, "ok", source)
        return user

    async def change_own_password(
        self, principal: Principal, current: str, new: str, *, source: str
    ) -> None:
        """A user changes their password, proving the current one; other sessions end.

        Raises:
            LoginThrottled: too many wrong current passwords for this user or address.
            WrongPassword: the current password is wrong (counted like a failed login).
            PasswordRejected: the new password does not meet the policy.
        """
        if principal.user_id is None:
            raise NotAllowed("only a user has a password")
        wait = self.throttle.retry_after(principal.name, source)
        if wait:
            raise LoginThrottled(wait)
        check_policy(new)
        stored = await self.users.password_hash(principal.user_id)
        if not await self.passwords.verify(stored, current):
            self.throttle.failed(principal.name, source)
            await self.audit.record(
                principal.actor, "user.password.changed", principal.name, "failed", source
            )
            raise WrongPassword("the current password is wrong")
        await self.users.set_password_hash(
            principal.user_id, await self.passwords.hash(new), keep_session=principal.session_hash
        )
        await self.audit.record(
            principal.actor, "user.password.changed", principal.name, "ok", source
        )

    # -- API tokens -------------------------------------------------------------------------
    async def create_token(
        self,
        principal: Principal,
        *,
        name: str,
        scopes: list[Scope],
        expires_in_s: int | None,
        source: str,
    ) -> NewToken:
        """A new API token of the caller, shown once.

        Raises:
            NotAllowed: asked for scopes the calling token does not have itself.
        """
        if principal.user_id is None:
            raise NotAllowed("only a user has tokens")
        wanted = sorted(set(scopes))
        beyond = set(wanted) - principal.scopes
        if beyond:
            raise NotAllowed(
                "a token cannot make a token with more scopes than its own: "
                + ", ".join(sorted(beyond))
            )
        token = tokens.mint(tokens.API_TOKEN_PREFIX)
        expires_at = None if expires_in_s is None else now_ms() + expires_in_s * 1000
        record = await self.users.create_token(
            principal.user_id,
            name=name,
            token_hash=tokens.digest(token),
            scopes=[s.value for s in wanted],
            expires_at=expires_at,
        )
        await self.audit.record(
            principal.actor,
            "token.created",
            f"token:{record.id}",
            "ok",
            source,
            {"name": name, "owner": principal.name, "scopes": record.scopes},
        )
        return NewToken(record, token)

    async def revoke_token(
        self, token_id: int, *, owner: UserRecord | Principal, actor: str, source: str
    ) -> TokenRecord:
        """Revoke a token of ``owner``.

        Raises:
            TokenNotFound: ``owner`` has no token with this id.
        """
        owner_id = owner.user_id if isinstance(owner, Principal) else owner.id
        if owner_id is None:
            raise NotAllowed("only a user has tokens")
        record = await self.users.revoke_token(token_id, user_id=owner_id)
        await self.audit.record(
            actor, "token.revoked", f"token:{token_id}", "ok", source, {"owner": owner.name}
        )
        return record


def _sites(sites: list[str]) -> list[str]:
    """Sites as stored: unique, sorted, no blanks."""
    return sorted({s.strip() for s in sites if s.strip()})
