"""Claim tokens and device claims: how a device that has no credentials yet asks for them.

A claim token is handed to installers (per fleet or site, with an expiry and a use count). A
device presents it once with its id and gets a *poll secret*; its claim then waits as pending
until an operator approves it (or at once, if its id was pre-authorized on the token). Every
token and poll secret is 256 random bits stored as its SHA-256 digest (see ``store/schema.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from fieldhub.clock import now_ms
from fieldhub.hub.errors import Conflict, HubError, NotFound, Unauthenticated
from fieldhub.hub.secrets import digest, matches, mint
from fieldhub.hub.store.database import write_transaction
from fieldhub.hub.store.schema import claim_tokens, device_claims, devices

CLAIM_TOKEN_PREFIX = "fhclaim_"
POLL_SECRET_PREFIX = "fhpoll_"
ClaimStatus = Literal["pending", "approved", "rejected", "delivered"]


class ClaimError(HubError):
    """A claim cannot be made or decided; the text says why, without secrets."""


class ClaimTokenInvalid(ClaimError, Unauthenticated):
    """The token is unknown, revoked, expired or used up (deliberately one error: no oracle)."""


class ClaimConflict(ClaimError, Conflict):
    """The device id is already registered or already has a claim."""


class ClaimNotFound(ClaimError, NotFound):
    """No claim for this device id (or the poll secret does not match)."""


@dataclass(frozen=True, slots=True)
class ClaimToken:
    """A claim token as stored (never the token itself)."""

    id: int
    name: str
    labels: dict[str, str]
    auto_approve: list[str]
    uses_left: int
    expires_at: int
    created_by: str
    created_at: int
    revoked: bool

    @classmethod
    def from_row(cls, row: Row[Any]) -> ClaimToken:
        """Build from a ``claim_tokens`` row."""
        return cls(
            id=row.id,
            name=row.name,
            labels=dict(row.labels or {}),
            auto_approve=list(row.auto_approve or []),
            uses_left=row.uses_left,
            expires_at=row.expires_at,
            created_by=row.created_by,
            created_at=row.created_at,
            revoked=row.revoked,
        )


@dataclass(frozen=True, slots=True)
class DeviceClaim:
    """A device's claim as stored (never its poll secret)."""

    device_id: str
    claim_token_id: int
    status: ClaimStatus
    labels: dict[str, str]
    info: dict[str, Any]
    requested_at: int
    decided_at: int | None
    decided_by: str | None
    delivered_at: int | None

    @classmethod
    def from_row(cls, row: Row[Any]) -> DeviceClaim:
        """Build from a ``device_claims`` row."""
        return cls(
            device_id=row.device_id,
            claim_token_id=row.claim_token_id,
            status=row.status,
            labels=dict(row.labels or {}),
            info=dict(row.info or {}),
            requested_at=row.requested_at,
            decided_at=row.decided_at,
            decided_by=row.decided_by,
            delivered_at=row.delivered_at,
        )


class ClaimStore:
    """Claim tokens and claims in the store; each change is one transaction."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def create_token(
        self,
        *,
        name: str,
        labels: dict[str, str],
        uses: int,
        expires_at: int,
        created_by: str,
        auto_approve: list[str] | None = None,
    ) -> tuple[ClaimToken, str]:
        """Store a new claim token; return it and the token text (shown once)."""
        token = mint(CLAIM_TOKEN_PREFIX)
        async with write_transaction(self._engine) as conn:
            result = await conn.execute(
                insert(claim_tokens)
                .values(
                    name=name,
                    token_hash=digest(token),
                    labels=labels,
                    auto_approve=sorted(set(auto_approve or [])),
                    uses_left=uses,
                    expires_at=expires_at,
                    created_by=created_by,
                    created_at=now_ms(),
                    revoked=False,
                )
                .returning(claim_tokens)
            )
            return ClaimToken.from_row(result.one()), token

    async def tokens(self) -> list[ClaimToken]:
        """Every claim token, newest first."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(select(claim_tokens).order_by(claim_tokens.c.id.desc()))
            return [ClaimToken.from_row(r) for r in rows]

    async def token(self, token_id: int) -> ClaimToken:
        """One claim token.

        Raises:
            ClaimNotFound: no such token.
        """
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(select(claim_tokens).where(claim_tokens.c.id == token_id))
            ).first()
        if row is None:
            raise ClaimNotFound(f"no claim token {token_id}")
        return ClaimToken.from_row(row)

    async def revoke_token(self, token_id: int) -> None:
        """Stop a token from admitting more devices (claims already made stay)."""
        async with write_transaction(self._engine) as conn:
            result = await conn.execute(
                update(claim_tokens).where(claim_tokens.c.id == token_id).values(revoked=True)
            )
        if result.rowcount == 0:
            raise ClaimNotFound(f"no claim token {token_id}")

    async def claim(
        self, token: str, device_id: str, info: dict[str, Any]
    ) -> tuple[DeviceClaim, ClaimToken, str]:
        """Spend one use of ``token`` on a claim for ``device_id``; return it and its poll secret.

        The use count is decremented by a conditional UPDATE in the same transaction as the claim
        is inserted, so two devices racing for a token's last use cannot both win.

        Raises:
            ClaimTokenInvalid: the token cannot admit a device (any reason: one message).
            ClaimConflict: the device is registered or has a claim already.
        """
        now = now_ms()
        poll_secret = mint(POLL_SECRET_PREFIX)
        async with write_transaction(self._engine) as conn:
            spent = await conn.execute(
                update(claim_tokens)
                .where(
                    claim_tokens.c.token_hash == digest(token),
                    claim_tokens.c.revoked.is_(False),
                    claim_tokens.c.uses_left > 0,
                    claim_tokens.c.expires_at > now,
                )
                .values(uses_left=claim_tokens.c.uses_left - 1)
                .returning(claim_tokens)
            )
            token_row = spent.first()
            if token_row is None:
                raise ClaimTokenInvalid("claim token is not valid (unknown, expired, used up)")
            known = await conn.execute(select(devices.c.id).where(devices.c.id == device_id))
            if known.first() is not None:
                raise ClaimConflict(f"device {device_id!r} is already registered")
            claim_token = ClaimToken.from_row(token_row)
            try:
                async with conn.begin_nested():
                    result = await conn.execute(
                        insert(device_claims)
                        .values(
                            device_id=device_id,
                            claim_token_id=claim_token.id,
                            poll_hash=digest(poll_secret),
                            status="pending",
                            labels=claim_token.labels,
                            info=info,
                            requested_at=now,
                        )
                        .returning(device_claims)
                    )
                    claim = DeviceClaim.from_row(result.one())
            except IntegrityError:
                raise ClaimConflict(f"device {device_id!r} has a claim already") from None
        return claim, claim_token, poll_secret

    async def get(self, device_id: str) -> DeviceClaim:
        """The claim of ``device_id``.

        Raises:
            ClaimNotFound: no claim.
        """
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(device_claims).where(device_claims.c.device_id == device_id)
                )
            ).first()
        if row is None:
            raise ClaimNotFound(f"no claim for device {device_id!r}")
        return DeviceClaim.from_row(row)

    async def get_polled(self, device_id: str, poll_secret: str) -> DeviceClaim:
        """The claim of ``device_id`` if ``poll_secret`` is its secret.

        Raises:
            ClaimNotFound: no claim, or the secret does not match (one error: no oracle).
        """
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(device_claims).where(device_claims.c.device_id == device_id)
                )
            ).first()
        if row is None or not matches(poll_secret, row.poll_hash):
            raise ClaimNotFound(f"no claim for device {device_id!r} with this secret")
        return DeviceClaim.from_row(row)

    async def claims(self, status: ClaimStatus | None = None) -> list[DeviceClaim]:
        """Claims, oldest first, optionally only those in ``status``."""
        query = select(device_claims).order_by(device_claims.c.requested_at)
        if status is not None:
            query = query.where(device_claims.c.status == status)
        async with self._engine.connect() as conn:
            return [DeviceClaim.from_row(r) for r in await conn.execute(query)]

    async def decide(
        self, device_id: str, status: Literal["approved", "rejected"], by: str
    ) -> DeviceClaim:
        """Approve or reject a pending claim.

        Raises:
            ClaimNotFound: no claim for the device.
            ClaimConflict: the claim was decided already.
        """
        async with write_transaction(self._engine) as conn:
            result = await conn.execute(
                update(device_claims)
                .where(device_claims.c.device_id == device_id, device_claims.c.status == "pending")
                .values(status=status, decided_at=now_ms(), decided_by=by)
                .returning(device_claims)
            )
            row = result.first()
        if row is None:
            current = await self.get(device_id)  # raises ClaimNotFound
            raise ClaimConflict(f"claim of {device_id!r} is {current.status} already")
        return DeviceClaim.from_row(row)

    async def mark_delivered(self, device_id: str) -> bool:
        """Mark an approved claim delivered; False if it was not approved (or delivered already).

        The conditional UPDATE makes delivery happen at most once even for concurrent polls.
        """
        async with write_transaction(self._engine) as conn:
            result = await conn.execute(
                update(device_claims)
                .where(device_claims.c.device_id == device_id, device_claims.c.status == "approved")
                .values(status="delivered", delivered_at=now_ms())
            )
        return result.rowcount == 1

    async def forget(self, device_id: str) -> None:
        """Remove a device's claim (when the device is deleted, so its id can claim again)."""
        async with write_transaction(self._engine) as conn:
            await conn.execute(delete(device_claims).where(device_claims.c.device_id == device_id))
