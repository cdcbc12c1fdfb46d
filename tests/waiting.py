"""Waiting for something the system does by itself (a message to arrive, a state to change)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

HTTP_TIMEOUT_S = 30.0
"""How long a test's HTTP client waits for a real server's answer: httpx's default of 5 s was
passed by a hub on a CI runner under load (a read timeout, not a wrong answer)."""


async def eventually(check: Callable[[], Any], what: str, within_s: float = 10.0) -> Any:
    """Poll ``check`` (a function, or one returning a coroutine) until it returns something
    truthy, and return that; fail the test naming ``what`` after ``within_s`` seconds."""
    deadline = time.monotonic() + within_s
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
