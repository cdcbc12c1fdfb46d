"""The caller's own API tokens: create (shown once), list, revoke.

Admins reach other users' tokens under ``/api/users/{user_id}/tokens``; here, a token of
someone else is 404, exactly like one that does not exist.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request, Response

from fieldhub.hub.api.access_models import TokenCreate, TokenCreated, TokenOut
from fieldhub.hub.api.deps import get_hub
from fieldhub.hub.api.fields import RowId
from fieldhub.hub.api.security import client_address, require
from fieldhub.hub.auth import Permission, Principal

router = APIRouter(prefix="/api/tokens", tags=["tokens"])


@router.get("", summary="List own API tokens")
async def list_tokens(
    request: Request, who: Annotated[Principal, require(Permission.ACCOUNT_READ)]
) -> list[TokenOut]:
    """The caller's tokens, newest first, revoked ones included (never the token text)."""
    if who.user_id is None:  # pragma: no cover - the requirement admits users only
        return []
    records = await get_hub(request).auth.accounts.tokens_of(who.user_id)
    return [TokenOut.from_record(r) for r in records]


@router.post("", status_code=201, summary="Create an API token")
async def create_token(
    body: TokenCreate,
    request: Request,
    response: Response,
    who: Annotated[Principal, require(Permission.ACCOUNT_WRITE)],
) -> TokenCreated:
    """A new token of the caller; the token text is in this answer only, store it now.

    Its rights are its scopes within the caller's role; a token cannot make a token with scopes
    it lacks itself (403).
    """
    new = await get_hub(request).auth.accounts.create_token(
        who,
        name=body.name,
        scopes=body.scopes,
        expires_in_s=body.expires_in_s,
        source=client_address(request),
    )
    response.headers["Cache-Control"] = "no-store"
    return TokenCreated(**TokenOut.from_record(new.record).model_dump(), token=new.token)


@router.delete("/{token_id}", status_code=204, summary="Revoke an own API token")
async def revoke_token(
    token_id: RowId, request: Request, who: Annotated[Principal, require(Permission.ACCOUNT_WRITE)]
) -> Response:
    """The token stops working at once (revoking twice is no error)."""
    await get_hub(request).auth.accounts.revoke_token(
        token_id, owner=who, actor=who.actor, source=client_address(request)
    )
    return Response(status_code=204)
