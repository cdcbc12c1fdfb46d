"""Request and response bodies of login, users, API tokens and the audit log.

No response model has a field for a password, a hash or a stored digest; the only secrets that
ever leave the hub are a new session's tokens (once, to the browser that logged in) and a new
API token (once, in the answer to its creation).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from fieldhub.hub.api.fields import StoredJson
from fieldhub.hub.auth import (
    AuditEntry,
    Permission,
    Principal,
    Role,
    Scope,
    TokenRecord,
    UserRecord,
)
from fieldhub.hub.auth.passwords import MAX_LENGTH as MAX_PASSWORD

MAX_TOKEN_LIFETIME_S = 10 * 366 * 86_400
SiteName = Annotated[str, Field(min_length=1, max_length=64, description='a "site" label value')]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoginRequest(_Strict):
    """A name and a password."""

    name: str = Field(min_length=1, max_length=256)
    password: str = Field(min_length=1, max_length=MAX_PASSWORD)


class SetupRequest(_Strict):
    """The first admin, with the one-time setup token from the hub's log."""

    token: str = Field(min_length=1, max_length=256)
    name: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=MAX_PASSWORD)


class PasswordChange(_Strict):
    """A user's own new password, with the current one as proof."""

    current_password: str = Field(min_length=1, max_length=MAX_PASSWORD)
    new_password: str = Field(min_length=1, max_length=MAX_PASSWORD)


class PasswordSet(_Strict):
    """A password an admin sets for a user."""

    password: str = Field(min_length=1, max_length=MAX_PASSWORD)


class UserOut(BaseModel):
    """A user (never its password or hash)."""

    id: int
    name: str
    role: Role
    sites: list[str] = Field(description="sites the user sees; ignored for admins (all)")
    created_at: int
    disabled: bool
    has_password: bool = Field(description="false: cannot log in until a password is set")

    @classmethod
    def from_record(cls, record: UserRecord) -> UserOut:
        """The API view of a stored user."""
        return cls(
            id=record.id,
            name=record.name,
            role=Role(record.role),
            sites=record.sites,
            created_at=record.created_at,
            disabled=record.disabled,
            has_password=record.has_password,
        )


class UserCreate(_Strict):
    """A user to add; without a password it cannot log in until one is set."""

    name: str = Field(min_length=1, max_length=64, description="1-64 of a-z 0-9 . _ @ -")
    role: Role
    sites: list[SiteName] = Field(default_factory=list, max_length=1000)
    password: str | None = Field(None, min_length=1, max_length=MAX_PASSWORD)


class UserUpdate(_Strict):
    """Fields to change; omitted fields stay as they are."""

    role: Role | None = None
    sites: list[SiteName] | None = Field(None, max_length=1000)
    disabled: bool | None = None


class LoginAnswer(BaseModel):
    """Logged in: the session cookie is set; send ``csrf_token`` as X-CSRF-Token on changes."""

    user: UserOut
    csrf_token: str = Field(description="also in the fieldhub_csrf cookie")
    expires_at: int


class Me(BaseModel):
    """Who the caller is and what it may do."""

    user: UserOut
    via: str = Field(description="session or token")
    token_id: int | None
    scopes: list[Scope]
    permissions: list[Permission]

    @classmethod
    def of(cls, principal: Principal, user: UserRecord) -> Me:
        """The caller's view of itself."""
        return cls(
            user=UserOut.from_record(user),
            via=principal.via,
            token_id=principal.token_id,
            scopes=sorted(principal.scopes),
            permissions=sorted(principal.permissions),
        )


class TokenCreate(_Strict):
    """An API token to make for the caller."""

    name: str = Field(min_length=1, max_length=128, description="what it is for")
    scopes: list[Scope] = Field(
        default_factory=lambda: [Scope.READ],
        min_length=1,
        description="read, write, command, metrics",
    )
    expires_in_s: int | None = Field(
        None, ge=60, le=MAX_TOKEN_LIFETIME_S, description="lifetime; none: until revoked"
    )


class TokenOut(BaseModel):
    """An API token's metadata (never the token or its digest)."""

    id: int
    user_id: int
    name: str
    scopes: list[str]
    created_at: int
    expires_at: int | None
    revoked_at: int | None
    last_used_at: int | None = Field(description="approximate (updated at most once a minute)")

    @classmethod
    def from_record(cls, record: TokenRecord) -> TokenOut:
        """The API view of a stored token."""
        return cls(
            id=record.id,
            user_id=record.user_id,
            name=record.name,
            scopes=record.scopes,
            created_at=record.created_at,
            expires_at=record.expires_at,
            revoked_at=record.revoked_at,
            last_used_at=record.last_used_at,
        )


class TokenCreated(TokenOut):
    """A new token: ``token`` is shown here once and never again."""

    token: str = Field(description="Authorization: Bearer <token>; store it now")


class AuditEntryOut(BaseModel):
    """One audit entry."""

    id: int
    ts: int
    actor: str
    action: str
    target: str
    outcome: str
    source: str
    detail: StoredJson

    @classmethod
    def from_entry(cls, entry: AuditEntry) -> AuditEntryOut:
        """The API view of a stored entry."""
        return cls(
            id=entry.id,
            ts=entry.ts,
            actor=entry.actor,
            action=entry.action,
            target=entry.target,
            outcome=entry.outcome,
            source=entry.source,
            detail=entry.detail,
        )


class AuditPageOut(BaseModel):
    """Audit entries, newest first; pass ``next_cursor`` as ``cursor`` for the next page."""

    entries: list[AuditEntryOut]
    next_cursor: str | None
