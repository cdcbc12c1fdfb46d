"""Provisioning by claim over REST: devices claim and fetch credentials; operators decide.

The two device-facing routes authenticate by what the device holds (the claim token, then its
poll secret), not by a user; everything else is for operators of the claim's site.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from fieldhub.clock import now_ms
from fieldhub.hub.api.deps import hub_dependency
from fieldhub.hub.api.devices import check_site
from fieldhub.hub.api.fields import JsonObject, RowId, StoredJson
from fieldhub.hub.api.models import DeviceCredentialsOut
from fieldhub.hub.api.security import client_address, require
from fieldhub.hub.app import Hub
from fieldhub.hub.auth.rules import Permission, Principal
from fieldhub.hub.devices import ClaimStatus, ClaimToken, DeviceClaim
from fieldhub.hub.errors import NotFound

device_router = APIRouter(prefix="/api/provisioning", tags=["provisioning"])
operator_router = APIRouter(prefix="/api", tags=["provisioning"])
HubDep = Annotated[Hub, Depends(hub_dependency)]
Claimant = Annotated[Principal, require(Permission.PUBLIC)]  # authenticated by token / poll secret
Reader = Annotated[Principal, require(Permission.DEVICES_READ)]
Writer = Annotated[Principal, require(Permission.DEVICES_WRITE)]
MAX_TOKEN_LIFETIME_S = 366 * 86_400


class ClaimRequest(BaseModel):
    """A device asks to join."""

    token: str = Field(min_length=1, max_length=256, description="the claim token")
    device_id: str = Field(min_length=1, max_length=64)
    info: JsonObject = Field(default_factory=dict, description="model, serial, firmware…")


class ClaimAnswer(BaseModel):
    """The claim is recorded; poll with ``poll_secret`` (shown once) for the credentials."""

    device_id: str
    status: Literal["pending", "approved"]
    poll_secret: str


class PollRequest(BaseModel):
    """A device polls for its credentials."""

    poll_secret: str = Field(min_length=1, max_length=256)


class PollAnswer(BaseModel):
    """Pending (poll again later) or delivered with the credentials."""

    status: Literal["pending", "delivered"]
    credentials: DeviceCredentialsOut | None = None


class ClaimTokenCreate(BaseModel):
    """A new claim token for installers."""

    name: str = Field(min_length=1, max_length=128)
    labels: dict[str, str] = Field(default_factory=dict, description="given to claiming devices")
    uses: int = Field(default=1, ge=1, le=100_000)
    expires_in_s: int = Field(default=86_400, ge=60, le=MAX_TOKEN_LIFETIME_S)
    auto_approve: list[str] = Field(default_factory=list, description="pre-authorized ids")


class ClaimTokenOut(BaseModel):
    """A claim token (the token itself only in the answer to its creation)."""

    id: int
    name: str
    labels: dict[str, str]
    auto_approve: list[str]
    uses_left: int
    expires_at: int
    created_by: str
    created_at: int
    revoked: bool
    token: str | None = None

    model_config = ConfigDict(from_attributes=True)

    @classmethod
    def from_record(cls, record: ClaimToken, token: str | None = None) -> ClaimTokenOut:
        """From the store's record (with the token text only when just created)."""
        return cls.model_validate(record).model_copy(update={"token": token})


class ClaimOut(BaseModel):
    """A device's claim."""

    device_id: str
    claim_token_id: int
    status: ClaimStatus
    labels: dict[str, str]
    info: StoredJson
    requested_at: int
    decided_at: int | None
    decided_by: str | None
    delivered_at: int | None

    model_config = ConfigDict(from_attributes=True)

    @classmethod
    def from_record(cls, record: DeviceClaim) -> ClaimOut:
        """From the store's record."""
        return cls.model_validate(record)


class Decision(BaseModel):
    """Approve, optionally with other labels than the claim token gave."""

    labels: dict[str, str] | None = None


async def _visible_claim(hub: Hub, who: Principal, device_id: str) -> DeviceClaim:
    """The claim, if ``who`` sees its site; a claim of another site is 404 like a missing one."""
    claim = await hub.provisioning.claim_of(device_id)
    if not who.sees(claim.labels):
        raise NotFound(f"no claim for device {device_id!r}")
    return claim


@device_router.post("/claims", status_code=201, summary="Claim (device)")
async def claim(body: ClaimRequest, request: Request, hub: HubDep, _: Claimant) -> ClaimAnswer:
    """A device presents a claim token and its id; it waits as pending unless pre-authorized."""
    receipt = await hub.provisioning.claim(
        body.token, body.device_id, body.info, source=client_address(request)
    )
    return ClaimAnswer(
        device_id=receipt.device_id, status=receipt.status, poll_secret=receipt.poll_secret
    )


@device_router.post(
    "/claims/{device_id}/credentials",
    summary="Fetch credentials (device)",
    responses={202: {"model": PollAnswer, "description": "still pending"}},
)
async def fetch_credentials(
    device_id: str,
    body: PollRequest,
    request: Request,
    response: Response,
    hub: HubDep,
    _: Claimant,
) -> PollAnswer:
    """Pending (202), or the device's credentials (200, exactly once; 410 afterwards)."""
    delivery = await hub.provisioning.fetch(
        device_id, body.poll_secret, source=client_address(request)
    )
    if delivery.credentials is None:
        response.status_code = 202
        return PollAnswer(status="pending")
    issued = delivery.credentials
    return PollAnswer(
        status="delivered",
        credentials=DeviceCredentialsOut(
            username=issued.username, secret=issued.secret, client_id=issued.client_id
        ),
    )


@operator_router.post("/claim-tokens", status_code=201, summary="Create a claim token")
async def create_claim_token(body: ClaimTokenCreate, hub: HubDep, who: Writer) -> ClaimTokenOut:
    """A claim token for installers; the token text is in this answer only.

    Devices that claim with it get its labels, so its site must be one of the caller's.
    """
    check_site(who, body.labels)
    record, token = await hub.provisioning.create_token(
        name=body.name,
        labels=body.labels,
        uses=body.uses,
        expires_at=now_ms() + body.expires_in_s * 1000,
        created_by=who.actor,
        auto_approve=body.auto_approve,
    )
    return ClaimTokenOut.from_record(record, token)


@operator_router.get("/claim-tokens", summary="List claim tokens")
async def list_claim_tokens(hub: HubDep, who: Reader) -> list[ClaimTokenOut]:
    """Claim tokens of the caller's sites, newest first (never the token text)."""
    tokens = await hub.provisioning.tokens()
    return [ClaimTokenOut.from_record(t) for t in tokens if who.sees(t.labels)]


@operator_router.delete("/claim-tokens/{token_id}", status_code=204, summary="Revoke")
async def revoke_claim_token(token_id: RowId, hub: HubDep, who: Writer) -> None:
    """The token admits no more devices; claims made with it stay."""
    token = await hub.provisioning.token(token_id)
    if not who.sees(token.labels):
        raise NotFound(f"no claim token {token_id}")
    await hub.provisioning.revoke_token(token_id, by=who.actor)


@operator_router.get("/claims", summary="List claims")
async def list_claims(
    hub: HubDep, who: Reader, status: ClaimStatus | None = None
) -> list[ClaimOut]:
    """Claims of the caller's sites, oldest first; ``status=pending``: waiting for a decision."""
    claims = await hub.provisioning.claims(status)
    return [ClaimOut.from_record(c) for c in claims if who.sees(c.labels)]


@operator_router.post("/claims/{device_id}/approve", summary="Approve a claim")
async def approve_claim(
    device_id: str, hub: HubDep, who: Writer, body: Decision | None = None
) -> ClaimOut:
    """Register the device; it fetches its credentials on its next poll."""
    await _visible_claim(hub, who, device_id)
    labels = body.labels if body else None
    if labels is not None:
        check_site(who, labels)
    decided = await hub.provisioning.approve(device_id, by=who.actor, labels=labels)
    return ClaimOut.from_record(decided)


@operator_router.post("/claims/{device_id}/reject", summary="Reject a claim")
async def reject_claim(device_id: str, hub: HubDep, who: Writer) -> ClaimOut:
    """The device gets no credentials; its id cannot claim again while the claim stays."""
    await _visible_claim(hub, who, device_id)
    decided = await hub.provisioning.reject(device_id, by=who.actor)
    return ClaimOut.from_record(decided)
