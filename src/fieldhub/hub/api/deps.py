"""Shared request helpers: the hub of the running app, durations, time ranges."""

from __future__ import annotations

import re
from typing import cast

from fastapi import Request

from fieldhub.hub.api.errors import unprocessable
from fieldhub.hub.app import Hub

_DURATION = re.compile(r"^(\d+)(ms|s|m|h|d)?$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, None: 1}


def get_hub(request: Request) -> Hub:
    """The hub this app serves."""
    return cast(Hub, request.app.state.hub)


async def hub_dependency(request: Request) -> Hub:
    """:func:`get_hub` as a route dependency. Async on purpose: FastAPI runs a plain function
    dependency in its thread pool, a thread hop on every request for a dictionary lookup."""
    return get_hub(request)


def parse_duration_ms(value: str, name: str) -> int:
    """``"90s"``, ``"5m"``, ``"1h"``, ``"1d"``, ``"250ms"`` or plain milliseconds → ms.

    Raises:
        HTTPException: 422 about the query parameter ``name``.
    """
    match = _DURATION.match(value.strip())
    if not match or int(match.group(1)) <= 0:
        raise unprocessable(
            f"{name}={value!r}: use a positive duration like 60s, 5m, 1h, 1d", "query", name
        )
    return int(match.group(1)) * _UNIT_MS[match.group(2)]
