"""Authentication and authorization of REST routes, as FastAPI dependencies.

Every route declares the one permission it needs by taking a parameter
``who: Annotated[Principal, require(Permission.X)]`` (or ``dependencies=[require(...)]``).
The dependency finds the caller (bearer token first, then the session cookie), and answers

- 401 when the route is not public and there are no valid credentials,
- 403 when a cookie-authenticated unsafe request lacks the session's CSRF token,
- 403 when the caller does not hold the permission,

before the route runs. Object-level checks (a device of another site is 404) are the route's,
with ``Principal.sees``; an answer that names or counts devices besides the one asked for (a
group command's target, size and results) passes every such field through
:func:`device_filter`, so it shows only the caller's devices, never merely fewer objects.

``annotate_permissions`` writes each route's permission into the OpenAPI spec as
``x-fieldhub-permission``, from the dependency itself, so the spec cannot claim what the code
does not enforce; the access-matrix test walks the spec and fails on any route without one.

CSRF: a session's CSRF token is returned by the login and also set as a readable cookie
(``fieldhub_csrf``) for the page's script; unsafe requests with the session cookie must echo it
in ``X-CSRF-Token``. The server compares it with the digest stored with the session
(synchronizer token), so a cookie planted by a sibling site cannot forge it; SameSite=Strict
cookies are a second line. Bearer-token requests carry no ambient credentials and need no CSRF
token.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from starlette.routing import BaseRoute

from fieldhub.clock import now_ms
from fieldhub.hub import secrets as token_rules
from fieldhub.hub.api.deps import get_hub
from fieldhub.hub.auth import ANONYMOUS, ROLE_PERMISSIONS, SCOPE_OF, Permission, Principal
from fieldhub.hub.auth.authn import Credential, CredentialsRejected, NewSession

if TYPE_CHECKING:
    from fieldhub.hub.app import Hub

SESSION_COOKIE = "fieldhub_session"
CSRF_COOKIE = "fieldhub_csrf"
CSRF_HEADER = "X-CSRF-Token"
PERMISSION_KEY = "x-fieldhub-permission"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

_bearer = HTTPBearer(auto_error=False, description="an API token: Authorization: Bearer fht_…")
_cookie = APIKeyCookie(
    name=SESSION_COOKIE, auto_error=False, description="the session cookie set by the login"
)


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(401, message, headers={"WWW-Authenticate": "Bearer"})


def device_filter(hub: Hub, who: Principal) -> Callable[[str], bool]:
    """Whether ``who`` may see a device, by id: registered, and of one of its sites.

    The one test for every device id an answer carries, be it the object asked for or a field
    that lists, names or counts others: a foreign device must not show even as a number.
    """

    def sees(device_id: str) -> bool:
        entry = hub.directory.get(device_id)
        return entry is not None and who.sees(entry.labels)

    return sees


def client_address(request: Request) -> str:
    """The caller's address as the audit log and the throttle know it."""
    return request.client.host if request.client else ""


async def _authenticate(
    request: Request, bearer: str | None, cookie: str | None, *, strict: bool
) -> Principal:
    """The caller; with ``strict``, bad credentials and missing CSRF tokens are errors."""
    if bearer is not None:
        credential = Credential("bearer", bearer)
    elif cookie is not None:
        credential = Credential("session", cookie)
    else:
        if strict:
            raise _unauthorized("log in, or send an API token as Authorization: Bearer")
        return ANONYMOUS
    try:
        found = await get_hub(request).auth.authenticator.resolve(credential)
    except CredentialsRejected as exc:
        if strict:
            raise _unauthorized(str(exc)) from None
        return ANONYMOUS
    if strict and found.csrf_hash is not None and request.method not in SAFE_METHODS:
        csrf = request.headers.get(CSRF_HEADER, "")
        if len(csrf) > token_rules.MAX_TOKEN_LENGTH or not token_rules.matches(
            csrf, found.csrf_hash
        ):
            raise HTTPException(
                403, f"missing or wrong {CSRF_HEADER} header (needed with the cookie)"
            )
    return found.principal


def refusal(principal: Principal, permission: Permission) -> str:
    """Why ``principal`` lacks ``permission``: its role, or its API token's scopes (a token
    of an admin without the ``metrics`` scope is refused ``/metrics``, and should say so)."""
    role = principal.role
    if role is not None and permission in ROLE_PERMISSIONS[role]:
        scope = SCOPE_OF[permission]
        return f"this API token lacks the {scope.value!r} scope (needed for {permission})"
    return f"{principal.name} may not use this: {permission} is not granted to role {role}"


class Requirement:
    """The dependency of a route that needs ``permission``; resolves to the caller."""

    def __init__(self, permission: Permission) -> None:
        if permission is Permission.PUBLIC:
            raise ValueError("use PublicRoute for public routes")
        self.permission = permission

    async def __call__(
        self,
        request: Request,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        cookie: Annotated[str | None, Depends(_cookie)],
    ) -> Principal:
        principal = await _authenticate(
            request, bearer.credentials if bearer else None, cookie, strict=True
        )
        if not principal.can(self.permission):
            raise HTTPException(403, refusal(principal, self.permission))
        request.state.principal = principal
        return principal


class PublicRoute:
    """The dependency of a public route: the caller if credentials are valid, else anonymous.

    Public routes never fail for credentials; they may show more to a caller who has some
    permission (health shows hub internals to ``hub:read``).
    """

    permission = Permission.PUBLIC

    async def __call__(self, request: Request) -> Principal:
        authorization = request.headers.get("Authorization", "")
        scheme, _, credentials = authorization.partition(" ")
        bearer = credentials.strip() if scheme.lower() == "bearer" and credentials else None
        principal = await _authenticate(
            request, bearer, request.cookies.get(SESSION_COOKIE), strict=False
        )
        request.state.principal = principal
        return principal


def require(permission: Permission) -> Any:
    """``Depends`` for a route needing ``permission`` (``Permission.PUBLIC``: anyone)."""
    if permission is Permission.PUBLIC:
        return Depends(PublicRoute())
    return Depends(Requirement(permission))


def _checks(dependant: Dependant) -> Iterator[Requirement | PublicRoute]:
    for dependency in dependant.dependencies:
        if isinstance(dependency.call, Requirement | PublicRoute):
            yield dependency.call
        yield from _checks(dependency)


def _api_routes(routes: Iterable[BaseRoute]) -> Iterator[APIRoute]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        # FastAPI >= 0.16x keeps an included router as one route holding the original router.
        nested = getattr(route, "original_router", None)
        if nested is not None:
            yield from _api_routes(nested.routes)


def annotate_permissions(app: FastAPI) -> None:
    """Write each route's permission into its OpenAPI operation (``x-fieldhub-permission``).

    Call it once all routers are included and before the spec is first generated.

    Raises:
        ValueError: a route declares two different permissions (which one would be meant?).
    """
    for route in _api_routes(app.routes):
        declared = {check.permission for check in _checks(route.dependant)}
        if len(declared) > 1:
            raise ValueError(f"{route.path} declares several permissions: {sorted(declared)}")
        if declared:
            route.openapi_extra = {**(route.openapi_extra or {}), PERMISSION_KEY: declared.pop()}


def set_session_cookies(request: Request, response: Response, session: NewSession) -> None:
    """Give the browser its session (HttpOnly) and CSRF (readable by the page) cookies.

    SameSite=Strict: no other site can make the browser send them; Secure when the request came
    over https (behind a TLS proxy, uvicorn takes the scheme from X-Forwarded-Proto).
    """
    secure = request.url.scheme == "https"
    max_age = max(0, round((session.expires_at - now_ms()) / 1000))
    for name, value, http_only in (
        (SESSION_COOKIE, session.token, True),
        (CSRF_COOKIE, session.csrf_token, False),
    ):
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path="/",
            secure=secure,
            httponly=http_only,
            samesite="strict",
        )


def clear_session_cookies(request: Request, response: Response) -> None:
    """Tell the browser to forget both cookies."""
    secure = request.url.scheme == "https"
    for name, http_only in ((SESSION_COOKIE, True), (CSRF_COOKIE, False)):
        response.delete_cookie(name, path="/", secure=secure, httponly=http_only, samesite="strict")
