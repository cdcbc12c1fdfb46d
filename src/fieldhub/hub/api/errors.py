"""The shape of validation errors: FastAPI's list, with clearer JSON errors and no echo.

FastAPI repeats the offending input in each error; for a login or a password body that is the
very secret the client sent, and it ends up in proxies' and clients' logs. Errors here name the
field and the rule, never the value. A body that is not JSON says so, with the position.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse


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
