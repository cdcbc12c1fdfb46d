"""The caller's own account: login, logout, who am I, own password, and first-admin setup."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request, Response

from fieldhub.hub.api.access_models import (
    LoginAnswer,
    LoginRequest,
    Me,
    PasswordChange,
    SetupRequest,
    UserOut,
)
from fieldhub.hub.api.deps import get_hub
from fieldhub.hub.api.security import (
    clear_session_cookies,
    client_address,
    require,
    set_session_cookies,
)
from fieldhub.hub.auth import Permission, Principal
from fieldhub.hub.errors import NotFound, Unauthenticated

router = APIRouter(prefix="/api/auth", tags=["auth"])
NO_STORE = {"Cache-Control": "no-store"}  # answers that carry secrets are never cached


@router.post(
    "/login",
    summary="Log in",
    responses={401: {"description": "wrong name or password"}, 429: {"description": "throttled"}},
)
async def login(
    body: LoginRequest,
    request: Request,
    response: Response,
    _: Annotated[Principal, require(Permission.PUBLIC)],
) -> LoginAnswer:
    """Open a session: sets the HttpOnly session cookie and the CSRF cookie.

    Failed attempts are throttled per name and per address (429 with Retry-After).
    """
    auth = get_hub(request).auth
    session = await auth.authenticator.login(
        body.name, body.password, source=client_address(request)
    )
    set_session_cookies(request, response, session)
    response.headers.update(NO_STORE)
    return LoginAnswer(
        user=UserOut.from_record(session.user),
        csrf_token=session.csrf_token,
        expires_at=session.expires_at,
    )


@router.post("/logout", status_code=204, summary="Log out")
async def logout(
    request: Request, who: Annotated[Principal, require(Permission.ACCOUNT_WRITE)]
) -> Response:
    """End the caller's session and clear its cookies (with a token: nothing to end)."""
    await get_hub(request).auth.authenticator.logout(who, source=client_address(request))
    response = Response(status_code=204)
    clear_session_cookies(request, response)
    return response


@router.get("/me", summary="Who am I")
async def me(request: Request, who: Annotated[Principal, require(Permission.ACCOUNT_READ)]) -> Me:
    """The caller's user, how it authenticated, and its effective permissions."""
    if who.user_id is None:  # pragma: no cover - the requirement admits users only
        raise Unauthenticated("not logged in")
    try:
        user = await get_hub(request).auth.accounts.user(who.user_id)
    except NotFound:  # deleted while the request ran: the session is gone with it
        raise Unauthenticated("not logged in") from None
    return Me.of(who, user)


@router.put("/password", status_code=204, summary="Change own password")
async def change_password(
    body: PasswordChange,
    request: Request,
    who: Annotated[Principal, require(Permission.ACCOUNT_WRITE)],
) -> Response:
    """Set a new password, proving the current one; the caller's other sessions end."""
    auth = get_hub(request).auth
    await auth.accounts.change_own_password(
        who, body.current_password, body.new_password, source=client_address(request)
    )
    return Response(status_code=204)


@router.post(
    "/setup",
    status_code=201,
    summary="Create the first admin",
    responses={401: {"description": "no setup possible, or wrong token"}},
)
async def setup(
    body: SetupRequest,
    request: Request,
    response: Response,
    _: Annotated[Principal, require(Permission.PUBLIC)],
) -> UserOut:
    """With the one-time token the hub logged at its first start, create the first admin.

    The token dies with its use, or when the hub stops; it works only while there are no users.
    """
    auth = get_hub(request).auth
    user = await auth.authenticator.first_admin(
        body.token, body.name, body.password, source=client_address(request)
    )
    response.headers.update(NO_STORE)
    return UserOut.from_record(user)
