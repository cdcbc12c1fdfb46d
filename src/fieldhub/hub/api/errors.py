"""How an error reaches an API caller: one status per kind of ``HubError``, one 422 shape.

Routes raise the hub's own errors (``hub/errors.py``) and never build an HTTP answer for
them: :func:`hub_error` maps the kind to the status, so "not found" is 404 everywhere and a
new wing gets the same answers for free.

The OpenAPI document promises every 422 as ``{"detail": [{"loc", "msg", "type"}, ...]}``, so
every 422 has that shape: request validation (:func:`validation_error`), the hub's own checks
(``Invalid``, with its location) and any ``HTTPException(422, "text")`` a dependency raises
(:func:`http_error` wraps the text into one such error).

FastAPI repeats the offending input in each error; for a login or a password body that is the
very secret the client sent, and it ends up in proxies' and clients' logs. Errors here name the
field and the rule, never the value. A body that is not JSON says so, with the position; a
body sent without a JSON content type says which one is expected.

A write asked for while the disk is full (a command, a device) failed with a 500 and a
traceback in the log for each request; it is a 503 that says why, and the outage is logged
once, by the storage health (``store/health.py``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from fastapi import HTTPException, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

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

JSON_TYPE = "application/json"

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

STORAGE_RETRY_AFTER_S = 5
"""What a 503 for an unwritable store asks the client to wait (a full disk is not freed at
once; the hub itself retries its held writes every two seconds at most)."""


def status_of(exc: HubError) -> int:
    """The HTTP status of a hub error's kind; 500 for a ``HubError`` of no kind (a bug)."""
    for kind, status in STATUS_OF:
        if isinstance(exc, kind):
            return status
    return 500


def error(msg: str, loc: Sequence[str | int] = (), type: str = "value_error") -> dict[str, Any]:
    """One validation error as the OpenAPI document describes it (``loc`` empty: the request
    as a whole, not one field)."""
    return {"type": type, "loc": list(loc), "msg": msg}


def _is_json(content_type: str) -> bool:
    media = content_type.partition(";")[0].strip().lower()
    return media == JSON_TYPE or media.endswith("+json")


def _clean(error: dict[str, Any], content_type: str) -> dict[str, Any]:
    cleaned = {"type": error["type"], "loc": list(error["loc"]), "msg": error["msg"]}
    if error["type"] == "json_invalid":
        reason = (error.get("ctx") or {}).get("error", "")
        cleaned["msg"] = f"the body is not valid JSON: {reason} (at character {error['loc'][-1]})"
    elif tuple(error["loc"]) == ("body",) and not _is_json(content_type):
        # FastAPI parses only JSON bodies; any other one fails as "not an object".
        sent = f"got {content_type!r}" if content_type else "none was sent"
        cleaned["type"] = "content_type"
        cleaned["msg"] = f"expected Content-Type: {JSON_TYPE} with a JSON body ({sent})"
    elif error.get("ctx"):
        cleaned["ctx"] = error["ctx"]
    return cleaned


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    """422 with each error's location, type and message (never its input)."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    content_type = request.headers.get("content-type", "")
    return JSONResponse(
        status_code=422,
        content={"detail": jsonable_encoder([_clean(e, content_type) for e in errors])},
    )


async def hub_error(request: Request, exc: Exception) -> JSONResponse:
    """The answer to a ``HubError`` a route let through: its kind's status and its message."""
    if not isinstance(exc, HubError):  # pragma: no cover - registered for HubError only
        raise exc
    headers: dict[str, str] = {}
    if isinstance(exc, Throttled):
        headers["Retry-After"] = str(exc.retry_after_s)
    detail: object = [error(str(exc), exc.loc)] if isinstance(exc, Invalid) else str(exc)
    return JSONResponse(status_code=status_of(exc), content={"detail": detail}, headers=headers)


async def http_error(request: Request, exc: Exception) -> Response:
    """FastAPI's answer to an ``HTTPException``, but a 422 with a plain text as detail becomes
    the documented list (one error, about the request as a whole)."""
    if not isinstance(exc, StarletteHTTPException):  # pragma: no cover - registered for it
        raise exc
    if exc.status_code == 422 and isinstance(exc.detail, str):
        exc = HTTPException(422, [error(exc.detail)], headers=exc.headers)
    return await http_exception_handler(request, exc)


def storage_error_handler(
    outage: Callable[[Exception], str | None],
) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
    """The handler of database errors: 503 with the cause while the store cannot be written
    (``outage``: the hub's storage health, which records it and names the cause, or None
    for a fault of this request's own); any other database error is not for a client to
    handle and stays a 500."""

    async def storage_error(request: Request, exc: Exception) -> JSONResponse:
        problem = outage(exc)
        if problem is None:
            raise exc
        return JSONResponse(
            status_code=503,
            content={"detail": f"storage unavailable: {problem}; try again later"},
            headers={"Retry-After": str(STORAGE_RETRY_AFTER_S)},
        )

    return storage_error
