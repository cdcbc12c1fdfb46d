"""Device provisioning by claim: a device with a claim token asks, an operator approves, the
device fetches its own credentials once.

This replaces the seeds' handshake, where a device announced itself and was trusted: here the
token limits who may ask (expiry, use count, revocable), approval is a person's decision
(except for ids pre-authorized on the token), and the credentials are made only at the moment
the device fetches them, so no plaintext secret ever waits in the store.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from fieldhub.hub.errors import Gone, Invalid, Refused
from fieldhub.hub.store.claims import (
    ClaimConflict,
    ClaimError,
    ClaimStatus,
    ClaimStore,
    ClaimToken,
    DeviceClaim,
)
from fieldhub.hub.store.credentials import IssuedCredentials
from fieldhub.protocol import is_valid_device_id

log = logging.getLogger(__name__)


class ClaimRejected(ClaimError, Refused):
    """An operator rejected the claim; the device gets no credentials."""


class AlreadyDelivered(ClaimError, Gone):
    """The credentials were fetched once already; they are never handed out twice."""


class InvalidDeviceId(ClaimError, Invalid):
    """The device id a claim names cannot be a device id."""


@dataclass(frozen=True, slots=True)
class ClaimReceipt:
    """What a device gets back for a claim: its status and the secret it polls with."""

    device_id: str
    status: Literal["pending", "approved"]
    poll_secret: str


@dataclass(frozen=True, slots=True)
class Delivery:
    """The answer to a poll: pending, or the credentials (exactly once)."""

    status: Literal["pending", "delivered"]
    credentials: IssuedCredentials | None


Register = Callable[[str, dict[str, str]], Awaitable[object]]
Issue = Callable[[str], Awaitable[IssuedCredentials]]
Audit = Callable[..., Awaitable[None]]


class Provisioning:
    """Claim tokens, claims, decisions and delivery, with an audit record of each step.

    ``register`` adds an approved device to the registry (and to ingest); ``issue`` makes its
    first credentials and tells the broker. Both come from the hub, so this module knows
    nothing of brokers or ingest.
    """

    def __init__(self, store: ClaimStore, register: Register, issue: Issue, audit: Audit):
        self._store = store
        self._register = register
        self._issue = issue
        self._audit = audit

    async def claim_of(self, device_id: str) -> DeviceClaim:
        """The claim of ``device_id``.

        Raises:
            ClaimNotFound: there is none.
        """
        return await self._store.get(device_id)

    async def claims(self, status: ClaimStatus | None = None) -> list[DeviceClaim]:
        """Every claim, or those in ``status``."""
        return await self._store.claims(status)

    async def tokens(self) -> list[ClaimToken]:
        """Every claim token (never its secret)."""
        return await self._store.tokens()

    async def token(self, token_id: int) -> ClaimToken:
        """One claim token.

        Raises:
            ClaimNotFound: there is none.
        """
        return await self._store.token(token_id)

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
        """A new claim token; the token text is returned here only."""
        bad = [d for d in auto_approve or [] if not is_valid_device_id(d)]
        if bad:
            raise InvalidDeviceId(f"not device ids: {bad}")
        token, text = await self._store.create_token(
            name=name,
            labels=labels,
            uses=uses,
            expires_at=expires_at,
            created_by=created_by,
            auto_approve=auto_approve,
        )
        await self._audit(
            created_by,
            "claim_token.created",
            f"claim_token:{token.id}",
            detail={"name": name, "uses": uses, "labels": labels},
        )
        return token, text

    async def revoke_token(self, token_id: int, by: str) -> None:
        """Revoke a claim token."""
        await self._store.revoke_token(token_id)
        await self._audit(by, "claim_token.revoked", f"claim_token:{token_id}")

    async def claim(
        self, token: str, device_id: str, info: dict[str, Any], source: str = ""
    ) -> ClaimReceipt:
        """A device asks to join with ``token``; approved at once if its id is pre-authorized.

        Raises:
            InvalidDeviceId: ``device_id`` is not a valid device id.
            ClaimTokenInvalid: the token cannot admit a device.
            ClaimConflict: the id is registered or claimed already.
        """
        if not is_valid_device_id(device_id):
            raise InvalidDeviceId(
                "device id must be 1-64 of A-Z a-z 0-9 . _ - (letter or digit first)"
            )
        actor = f"device:{device_id}"
        try:
            claim, token_record, poll_secret = await self._store.claim(token, device_id, info)
        except ClaimError as exc:
            await self._audit(
                actor,
                "device.claim",
                device_id,
                outcome="denied",
                source=source,
                detail={"reason": str(exc)},
            )
            raise
        await self._audit(
            actor, "device.claim", device_id, source=source, detail={"claim_token": token_record.id}
        )
        if device_id in token_record.auto_approve:
            await self._approve(claim, by=f"claim_token:{token_record.id}")
            return ClaimReceipt(device_id, "approved", poll_secret)
        return ClaimReceipt(device_id, "pending", poll_secret)

    async def approve(
        self, device_id: str, by: str, labels: dict[str, str] | None = None
    ) -> DeviceClaim:
        """An operator approves a pending claim: the device is registered (without credentials).

        Raises:
            ClaimNotFound / ClaimConflict: no pending claim for the device.
        """
        claim = await self._store.get(device_id)
        if labels is not None:
            claim = dataclasses.replace(claim, labels=labels)
        return await self._approve(claim, by=by)

    async def _approve(self, claim: DeviceClaim, by: str) -> DeviceClaim:
        decided = await self._store.decide(claim.device_id, "approved", by)
        try:
            await self._register(claim.device_id, claim.labels)
        except ValueError as exc:  # registered meanwhile by someone else
            raise ClaimConflict(str(exc)) from None
        await self._audit(
            by, "device.claim.approved", claim.device_id, detail={"labels": claim.labels}
        )
        return decided

    async def reject(self, device_id: str, by: str) -> DeviceClaim:
        """An operator rejects a pending claim."""
        decided = await self._store.decide(device_id, "rejected", by)
        await self._audit(by, "device.claim.rejected", device_id)
        return decided

    async def fetch(self, device_id: str, poll_secret: str, source: str = "") -> Delivery:
        """A device polls for its credentials: pending, or the credentials exactly once.

        Raises:
            ClaimNotFound: no claim with this secret.
            ClaimRejected: the claim was rejected.
            AlreadyDelivered: the credentials were fetched already.
        """
        claim = await self._store.get_polled(device_id, poll_secret)
        if claim.status == "pending":
            return Delivery("pending", None)
        if claim.status == "rejected":
            raise ClaimRejected(f"the claim of {device_id!r} was rejected")
        if not await self._store.mark_delivered(device_id):
            await self._audit(
                f"device:{device_id}",
                "device.credentials.fetch",
                device_id,
                outcome="denied",
                source=source,
                detail={"reason": "delivered already"},
            )
            raise AlreadyDelivered(f"the credentials of {device_id!r} were fetched already")
        credentials = await self._issue(device_id)
        await self._audit(
            f"device:{device_id}",
            "device.credentials.delivered",
            device_id,
            source=source,
            detail={"username": credentials.username},
        )
        return Delivery("delivered", credentials)
