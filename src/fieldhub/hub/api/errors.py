"""The shape of 422 answers: FastAPI's list of errors, always, with clear texts and no echo.

The OpenAPI document promises every 422 as ``{"detail": [{"loc", "msg", "type"}, ...]}``, so
every 422 has that shape: request validation (``validation_error``), and a route's own refusal
raised as ``HTTPException(422, "text")`` (``http_error`` wraps the text into one such error;
:func:`unprocessable` makes one with its location).

FastAPI repeats the offending input in each error; for a login or a password body that is the
very secret the client sent, and it ends up in proxies' and clients' logs. Errors here name the
field and the rule, never the value. A body that is not JSON says so, with the position; a
body sent without a JSON content type says which one is expected.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import HTTPException, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

JSON_TYPE = "application/json"


def error(msg: str, loc: Sequence[str | int] = (), type: str = "value_error") -> dict[str, Any]:
    """One validation error as the OpenAPI document describes it (``loc`` empty: the request
    as a whole, not one field)."""
    return {"type": type, "loc": list(loc), "msg": msg}


def unprocessable(msg: str, *loc: str | int) -> HTTPException:
    """A 422 about ``loc`` (e.g. ``"query", "bucket"``), in the documented shape."""
    return HTTPException(422, [error(msg, loc)])


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


async def http_error(request: Request, exc: Exception) -> Response:
    """FastAPI's answer to an ``HTTPException``, but a 422 with a plain text as detail becomes
    the documented list (one error, about the request as a whole)."""
    if not isinstance(exc, StarletteHTTPException):  # pragma: no cover - registered for it
        raise exc
    if exc.status_code == 422 and isinstance(exc.detail, str):
        exc = HTTPException(422, [error(exc.detail)], headers=exc.headers)
    return await http_exception_handler(request, exc)
