"""How an error reaches an API caller: one status per kind of ``HubError``, one 422 shape.

Routes raise the hub's own errors (``hub/errors.py``) and never build an HTTP answer for
them: the handler below maps the kind to the status, so "not found" is 404 everywhere and a
new wing gets the same answers for free.

The shape of validation errors is FastAPI's list, with clearer JSON errors and no echo.
FastAPI repeats the offending input in each error; for a login or a password body that is the
very secret the client sent, and it ends up in proxies' and clients' logs. Errors here name the
field and the rule, never the value. A body that is not JSON says so, with the position. A
422 for a rule the hub checks itself (``Invalid``) has the same list shape, so the answers
match what the OpenAPI document promises for 422.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from fieldhub.hub.errors import (
    Conflict,
    Gone,
    HubError,
    Invalid,
    NotFound,
    Refused,
    Throttled,
    Unauthenticated,
    Unavailable,
)

# Most specific first: a class may be two kinds (none is today, but the order decides).
STATUS_OF: tuple[tuple[type[HubError], int], ...] = (
    (Throttled, 429),
    (Unauthenticated, 401),
    (Refused, 403),
    (NotFound, 404),
    (Gone, 410),
    (Conflict, 409),
    (Invalid, 422),
    (Unavailable, 503),
)


def status_of(exc: HubError) -> int:
    """The HTTP status of a hub error's kind; 500 for a ``HubError`` of no kind (a bug)."""
    for kind, status in STATUS_OF:
        if isinstance(exc, kind):
            return status
    return 500


def _clean(error: dict[str, Any]) -> dict[str, Any]:
    cleaned = {"type": error["type"], "loc": list(error["loc"]), "msg": error["msg"]}
    if error["type"] == "json_invalid":
        reason = (error.get("ctx") or {}).get("error", "")
        cleaned["msg"] = f"the body is not valid JSON: {reason} (at character {error['loc'][-1]})"
    elif error.get("ctx"):
        cleaned["ctx"] = error["ctx"]
    return cleaned


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    """422 with each error's location, type and message (never its input)."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    return JSONResponse(
        status_code=422, content={"detail": jsonable_encoder([_clean(e) for e in errors])}
    )


async def hub_error(request: Request, exc: Exception) -> JSONResponse:
    """The answer to a ``HubError`` a route let through: its kind's status and its message."""
    if not isinstance(exc, HubError):  # pragma: no cover - registered for HubError only
        raise exc
    status = status_of(exc)
    headers: dict[str, str] = {}
    if isinstance(exc, Throttled):
        headers["Retry-After"] = str(exc.retry_after_s)
    detail: object = str(exc)
    if isinstance(exc, Invalid):
        detail = [{"type": "value_error", "loc": list(exc.loc), "msg": str(exc)}]
    return JSONResponse(status_code=status, content={"detail": detail}, headers=headers)
