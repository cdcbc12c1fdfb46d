"""Users, their web sessions and their API tokens, as stored.

This module stores what it is given: password hashes come from ``fieldhub.hub.auth.passwords``
and token digests from ``fieldhub.hub.secrets``; it never sees a password or a token.
Decisions (who may log in, what a token allows) belong to ``fieldhub.hub.auth``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any, Final

from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from fieldhub.clock import now_ms
from fieldhub.hub.errors import Conflict, HubError, NotFound
from fieldhub.hub.store.database import write_transaction
from fieldhub.hub.store.schema import api_tokens, sessions, users


class UserStoreError(HubError):
    """Root of user store errors."""


class UserExists(UserStoreError, Conflict):
    """A user with this name exists already."""


class UserNotFound(UserStoreError, NotFound):
    """No user with this name or id."""


class TokenNotFound(UserStoreError, NotFound):
    """No API token with this id (for this user)."""


@dataclass(frozen=True, slots=True)
class UserRecord:
    """A user as stored. ``has_password`` says whether password login is possible."""

    id: int
    name: str
    role: str
    sites: list[str]
    created_at: int
    disabled: bool
    has_password: bool

    @classmethod
    def from_row(cls, row: Row[Any]) -> UserRecord:
        """From a ``users`` row."""
        return cls(
            id=row.id,
            name=row.name,
            role=row.role,
            sites=list(row.sites or []),
            created_at=row.created_at,
            disabled=bool(row.disabled),
            has_password=row.password_hash is not None,
        )


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A web session (the token itself is never stored)."""

    token_hash: str
    user_id: int
    csrf_hash: str
    created_at: int
    expires_at: int


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """An API token (the token itself is never stored)."""

    id: int
    user_id: int
    name: str
    scopes: list[str]
    created_at: int
    expires_at: int | None
    revoked_at: int | None
    last_used_at: int | None

    @classmethod
    def from_row(cls, row: Row[Any]) -> TokenRecord:
        """From an ``api_tokens`` row."""
        return cls(
            id=row.id,
            user_id=row.user_id,
            name=row.name,
            scopes=list(row.scopes or []),
            created_at=row.created_at,
            expires_at=row.expires_at,
            revoked_at=row.revoked_at,
            last_used_at=row.last_used_at,
        )


_TOKEN_CACHE_MAX: Final = 10_000
TOKEN_CACHE_S: Final = 1.0
"""How long a looked-up API token is answered from memory. Programs send many requests with
one token; each lookup was a query on the request's path. A change made through this store
(revocation, a user disabled, deleted or given a new role or password) empties the cache at
once; one made by another process (the CLI, another hub) counts after at most this long."""


class UserStore:
    """Users, sessions and API tokens in the hub's database."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._tokens: dict[str, tuple[float, tuple[TokenRecord, UserRecord]]] = {}
        self._token_lookups: dict[str, asyncio.Future[tuple[TokenRecord, UserRecord] | None]] = {}
        self._token_generation = 0  # moves on every change: a lookup across one is not kept

    @asynccontextmanager
    async def _changing_token_holders(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction that changes tokens or their users: the token cache is
        forgotten before it and again after it committed (a lookup that read the old rows
        meanwhile must not be kept)."""
        self._forget_tokens()
        try:
            async with write_transaction(self._engine) as conn:
                yield conn
        finally:
            self._forget_tokens()

    def _forget_tokens(self) -> None:
        self._token_generation += 1
        self._tokens.clear()
        self._token_lookups.clear()  # a lookup in flight may have read the old rows

    # -- users ------------------------------------------------------------------------------
    async def create(
        self, name: str, *, role: str, sites: list[str], password_hash: str | None
    ) -> UserRecord:
        """Add a user.

        Raises:
            UserExists: the name is taken.
        """
        try:
            async with write_transaction(self._engine) as conn:
                result = await conn.execute(
                    insert(users).values(
                        name=name,
                        role=role,
                        sites=sites,
                        password_hash=password_hash,
                        created_at=now_ms(),
                        disabled=False,
                    )
                )
                user_id = result.inserted_primary_key[0]  # type: ignore[index]
        except IntegrityError:
            raise UserExists(f"user {name!r} exists already") from None
        return await self.get(int(user_id))

    async def get(self, user_id: int) -> UserRecord:
        """The user with ``user_id``.

        Raises:
            UserNotFound: no such user.
        """
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(users).where(users.c.id == user_id))).first()
        if row is None:
            raise UserNotFound(f"no user with id {user_id}")
        return UserRecord.from_row(row)

    async def by_name(self, name: str) -> tuple[UserRecord, str | None] | None:
        """The user called ``name`` with its password hash, or None: for login only."""
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(users).where(users.c.name == name))).first()
        return None if row is None else (UserRecord.from_row(row), row.password_hash)

    async def password_hash(self, user_id: int) -> str | None:
        """The stored password hash of a user (None: no password, or no such user)."""
        async with self._engine.connect() as conn:
            result = await conn.execute(select(users.c.password_hash).where(users.c.id == user_id))
            stored: str | None = result.scalar()
            return stored

    async def list_users(self) -> list[UserRecord]:
        """Every user, by name."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(select(users).order_by(users.c.name))
            return [UserRecord.from_row(r) for r in rows]

    async def count(self, *, enabled_admins: bool = False) -> int:
        """How many users there are (only enabled admins, if asked)."""
        query = select(func.count()).select_from(users)
        if enabled_admins:
            query = query.where(users.c.role == "admin", users.c.disabled.is_(False))
        async with self._engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def update(
        self,
        user_id: int,
        *,
        role: str | None = None,
        sites: list[str] | None = None,
        disabled: bool | None = None,
    ) -> UserRecord:
        """Change role, sites or the disabled flag; ``None`` leaves a field as it is.

        Disabling a user also ends its sessions (its tokens stop working while it is disabled).

        Raises:
            UserNotFound: no such user.
        """
        values: dict[str, Any] = {}
        if role is not None:
            values["role"] = role
        if sites is not None:
            values["sites"] = sites
        if disabled is not None:
            values["disabled"] = disabled
        async with self._changing_token_holders() as conn:
            if values:
                result = await conn.execute(
                    update(users).where(users.c.id == user_id).values(**values)
                )
                if result.rowcount == 0:
                    raise UserNotFound(f"no user with id {user_id}")
            if disabled:
                await conn.execute(delete(sessions).where(sessions.c.user_id == user_id))
        return await self.get(user_id)

    async def set_password_hash(
        self, user_id: int, password_hash: str, *, keep_session: str | None = None
    ) -> None:
        """Store a new password hash and end the user's sessions but ``keep_session``.

        Raises:
            UserNotFound: no such user.
        """
        async with self._changing_token_holders() as conn:
            result = await conn.execute(
                update(users).where(users.c.id == user_id).values(password_hash=password_hash)
            )
            if result.rowcount == 0:
                raise UserNotFound(f"no user with id {user_id}")
            ended = delete(sessions).where(sessions.c.user_id == user_id)
            if keep_session is not None:
                ended = ended.where(sessions.c.token_hash != keep_session)
            await conn.execute(ended)

    async def delete(self, user_id: int) -> UserRecord:
        """Remove a user with its sessions and tokens; returns what was removed.

        Raises:
            UserNotFound: no such user.
        """
        async with self._changing_token_holders() as conn:
            row = (await conn.execute(select(users).where(users.c.id == user_id))).first()
            if row is None:
                raise UserNotFound(f"no user with id {user_id}")
            await conn.execute(delete(sessions).where(sessions.c.user_id == user_id))
            await conn.execute(delete(api_tokens).where(api_tokens.c.user_id == user_id))
            await conn.execute(delete(users).where(users.c.id == user_id))
        return UserRecord.from_row(row)

    # -- sessions ---------------------------------------------------------------------------
    async def create_session(
        self, user_id: int, *, token_hash: str, csrf_hash: str, expires_at: int
    ) -> None:
        """Store a new session, and drop sessions that have expired meanwhile."""
        now = now_ms()
        async with write_transaction(self._engine) as conn:
            await conn.execute(delete(sessions).where(sessions.c.expires_at <= now))
            await conn.execute(
                insert(sessions).values(
                    token_hash=token_hash,
                    user_id=user_id,
                    csrf_hash=csrf_hash,
                    created_at=now,
                    expires_at=expires_at,
                )
            )

    async def session(self, token_hash: str) -> tuple[SessionRecord, UserRecord] | None:
        """The session with this digest and its user, or None."""
        query = (
            select(sessions, *_USER_COLUMNS)
            .join(users, users.c.id == sessions.c.user_id)
            .where(sessions.c.token_hash == token_hash)
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        record = SessionRecord(
            row.token_hash, row.user_id, row.csrf_hash, row.created_at, row.expires_at
        )
        return record, _joined_user(row)

    async def end_session(self, token_hash: str) -> None:
        """Delete one session (logout); nothing happens when it is gone already."""
        async with write_transaction(self._engine) as conn:
            await conn.execute(delete(sessions).where(sessions.c.token_hash == token_hash))

    # -- API tokens -------------------------------------------------------------------------
    async def create_token(
        self,
        user_id: int,
        *,
        name: str,
        token_hash: str,
        scopes: list[str],
        expires_at: int | None,
    ) -> TokenRecord:
        """Store a new API token of ``user_id``."""
        async with write_transaction(self._engine) as conn:
            result = await conn.execute(
                insert(api_tokens).values(
                    user_id=user_id,
                    name=name,
                    token_hash=token_hash,
                    scopes=scopes,
                    created_at=now_ms(),
                    expires_at=expires_at,
                )
            )
            token_id = int(result.inserted_primary_key[0])  # type: ignore[index]
            row = (await conn.execute(select(api_tokens).where(api_tokens.c.id == token_id))).one()
        return TokenRecord.from_row(row)

    async def token(self, token_hash: str) -> tuple[TokenRecord, UserRecord] | None:
        """The token with this digest and its user, or None (see :data:`TOKEN_CACHE_S`).

        Requests that miss the cache together share one query: a program keeps many
        requests in flight with one token, and each used to look it up when it expired."""
        cached = self._tokens.get(token_hash)
        if cached is not None and time.monotonic() - cached[0] < TOKEN_CACHE_S:
            return cached[1]
        lookup = self._token_lookups.get(token_hash)
        if lookup is None:
            lookup = asyncio.ensure_future(self._look_up_token(token_hash))
            self._token_lookups[token_hash] = lookup
            lookup.add_done_callback(lambda done: self._lookup_done(token_hash, done))
        return await asyncio.shield(lookup)

    def _lookup_done(self, token_hash: str, done: asyncio.Future[Any]) -> None:
        if self._token_lookups.get(token_hash) is done:  # not a newer one started meanwhile
            del self._token_lookups[token_hash]

    async def _look_up_token(self, token_hash: str) -> tuple[TokenRecord, UserRecord] | None:
        generation = self._token_generation
        query = (
            select(api_tokens, *_USER_COLUMNS)
            .join(users, users.c.id == api_tokens.c.user_id)
            .where(api_tokens.c.token_hash == token_hash)
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None  # not remembered: a token made a moment later must work at once
        found = TokenRecord.from_row(row), _joined_user(row)
        if generation == self._token_generation:
            if len(self._tokens) >= _TOKEN_CACHE_MAX:
                self._tokens.clear()
            self._tokens[token_hash] = (time.monotonic(), found)
        return found

    async def tokens(self, user_id: int | None = None) -> list[TokenRecord]:
        """Tokens of one user (every user's when None), newest first."""
        query = select(api_tokens).order_by(api_tokens.c.id.desc())
        if user_id is not None:
            query = query.where(api_tokens.c.user_id == user_id)
        async with self._engine.connect() as conn:
            return [TokenRecord.from_row(r) for r in await conn.execute(query)]

    async def revoke_token(self, token_id: int, *, user_id: int) -> TokenRecord:
        """Revoke a token of ``user_id`` (a second revocation keeps the first time).

        Raises:
            TokenNotFound: the user has no token with this id.
        """
        where = (api_tokens.c.id == token_id, api_tokens.c.user_id == user_id)
        async with self._changing_token_holders() as conn:
            await conn.execute(
                update(api_tokens)
                .where(*where, api_tokens.c.revoked_at.is_(None))
                .values(revoked_at=now_ms())
            )
            row = (await conn.execute(select(api_tokens).where(*where))).first()
        if row is None:
            raise TokenNotFound(f"no token with id {token_id}")
        return TokenRecord.from_row(row)

    async def touch_tokens(self, used: dict[int, int]) -> None:
        """Record when tokens were last used: token id → epoch ms, in one transaction.

        Not a change of who may do what, so the token cache is kept, with the new times (else
        every request answered from it would note its token again, and a touch would make
        every other token's next request a query)."""
        if not used:
            return
        async with write_transaction(self._engine) as conn:
            await conn.execute(
                update(api_tokens)
                .where(api_tokens.c.id == bindparam("b_id"))
                .values(last_used_at=bindparam("b_when")),
                [{"b_id": token_id, "b_when": when} for token_id, when in used.items()],
            )
        for token_hash, (looked_up, (record, user)) in list(self._tokens.items()):
            when = used.get(record.id)
            if when is not None:
                touched = replace(record, last_used_at=when)
                self._tokens[token_hash] = (looked_up, (touched, user))


# A session or token is looked up with its user in one query; the user's columns are labelled
# so they do not collide with the session's or token's own ``id`` and ``created_at``.
_USER_COLUMNS = [
    *(c.label(f"u_{c.name}") for c in users.c if c.name != "password_hash"),
    users.c.password_hash.is_not(None).label("u_has_password"),
]


def _joined_user(row: Row[Any]) -> UserRecord:
    return UserRecord(
        id=row.u_id,
        name=row.u_name,
        role=row.u_role,
        sites=list(row.u_sites or []),
        created_at=row.u_created_at,
        disabled=bool(row.u_disabled),
        has_password=bool(row.u_has_password),
    )
