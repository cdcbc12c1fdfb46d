"""Users, for admins: list, add, change (role, sites, disabled), remove, set a password, and
every user's API tokens."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request, Response

from fieldhub.hub.api.access_models import (
    PasswordSet,
    TokenOut,
    UserCreate,
    UserOut,
    UserUpdate,
)
from fieldhub.hub.api.deps import get_hub
from fieldhub.hub.api.fields import RowId
from fieldhub.hub.api.security import client_address, require
from fieldhub.hub.auth import Permission, Principal, UserRecord
from fieldhub.hub.auth.service import Auth

router = APIRouter(prefix="/api/users", tags=["users"])
Reader = Annotated[Principal, require(Permission.USERS_READ)]
Writer = Annotated[Principal, require(Permission.USERS_WRITE)]


async def _user(auth: Auth, user_id: int) -> UserRecord:
    return await auth.accounts.user(user_id)


@router.get("", summary="List users")
async def list_users(request: Request, _: Reader) -> list[UserOut]:
    """Every user, by name."""
    return [UserOut.from_record(u) for u in await get_hub(request).auth.accounts.all_users()]


@router.post("", status_code=201, summary="Add a user")
async def create_user(body: UserCreate, request: Request, who: Writer) -> UserOut:
    """Add a user; without a password it cannot log in until one is set."""
    user = await get_hub(request).auth.accounts.create_user(
        body.name,
        role=body.role,
        sites=body.sites,
        password=body.password,
        actor=who.actor,
        source=client_address(request),
    )
    return UserOut.from_record(user)


@router.get("/{user_id}", summary="Get a user")
async def get_user(user_id: RowId, request: Request, _: Reader) -> UserOut:
    """One user."""
    return UserOut.from_record(await _user(get_hub(request).auth, user_id))


@router.patch("/{user_id}", summary="Change a user")
async def update_user(user_id: RowId, body: UserUpdate, request: Request, who: Writer) -> UserOut:
    """Change role, sites or disabled (disabling ends the user's sessions at once).

    The hub keeps at least one enabled admin (409).
    """
    user = await get_hub(request).auth.accounts.update_user(
        user_id,
        role=body.role,
        sites=body.sites,
        disabled=body.disabled,
        actor=who.actor,
        source=client_address(request),
    )
    return UserOut.from_record(user)


@router.delete("/{user_id}", status_code=204, summary="Remove a user")
async def delete_user(user_id: RowId, request: Request, who: Writer) -> Response:
    """Remove a user with its sessions and tokens (never the last enabled admin: 409)."""
    await get_hub(request).auth.accounts.delete_user(
        user_id, actor=who.actor, source=client_address(request)
    )
    return Response(status_code=204)


@router.put("/{user_id}/password", status_code=204, summary="Set a user's password")
async def set_password(
    user_id: RowId, body: PasswordSet, request: Request, who: Writer
) -> Response:
    """Set a password (a reset); the user's sessions end, its API tokens stay."""
    await get_hub(request).auth.accounts.set_password(
        user_id,
        body.password,
        actor=who.actor,
        source=client_address(request),
        keep_session=who.session_hash if who.user_id == user_id else None,
    )
    return Response(status_code=204)


@router.get("/{user_id}/tokens", summary="List a user's API tokens")
async def list_user_tokens(user_id: RowId, request: Request, _: Reader) -> list[TokenOut]:
    """A user's tokens, newest first (never the token text)."""
    auth = get_hub(request).auth
    user = await _user(auth, user_id)
    return [TokenOut.from_record(t) for t in await auth.accounts.tokens_of(user.id)]


@router.delete("/{user_id}/tokens/{token_id}", status_code=204, summary="Revoke a user's token")
async def revoke_user_token(
    user_id: RowId, token_id: RowId, request: Request, who: Writer
) -> Response:
    """The token stops working at once."""
    auth = get_hub(request).auth
    user = await _user(auth, user_id)
    await auth.accounts.revoke_token(
        token_id, owner=user, actor=who.actor, source=client_address(request)
    )
    return Response(status_code=204)
