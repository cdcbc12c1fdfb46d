"""The shape of validation errors: FastAPI's list, with clearer JSON errors and no echo; and
503 while the store cannot be written.

FastAPI repeats the offending input in each error; for a login or a password body that is the
very secret the client sent, and it ends up in proxies' and clients' logs. Errors here name the
field and the rule, never the value. A body that is not JSON says so, with the position.

A write asked for while the disk is full (a command, a device) failed with a 500 and a
traceback in the log for each request; it is a 503 that says why, and the outage is logged
once, by the storage health (``store/health.py``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from fieldhub.hub.store.health import StorageHealth

STORAGE_RETRY_AFTER_S = 5
"""What a 503 for an unwritable store asks the client to wait (a full disk is not freed at
once; the hub itself retries its held writes every two seconds at most)."""


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


def storage_error_handler(
    storage: StorageHealth,
) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
    """The handler of database errors: 503 with the cause while the store cannot be written
    (reported to ``storage``); any other database error is not for a client to handle and
    stays a 500."""

    async def storage_error(request: Request, exc: Exception) -> JSONResponse:
        problem = storage.failed(exc)
        if problem is None:
            raise exc
        return JSONResponse(
            status_code=503,
            content={"detail": f"storage unavailable: {problem}; try again later"},
            headers={"Retry-After": str(STORAGE_RETRY_AFTER_S)},
        )

    return storage_error
