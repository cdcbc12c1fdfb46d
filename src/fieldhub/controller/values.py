"""Reading a controller's values: simulated, or the first number of a file or of a program."""

from __future__ import annotations

import asyncio
import random
import re
from pathlib import Path
from typing import Final

from fieldhub.agent._process import run_process
from fieldhub.controller.config import ValueSource

__all__ = ["read_value"]

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
_READ_TIMEOUT_S: Final = 5.0
_ENV: Final = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}


async def read_value(source: ValueSource) -> float | None:
    """The value now, or None when it cannot be read (the report then leaves it out)."""
    if source.kind == "simulate":
        return round(random.uniform(source.low, source.high), 2)
    if source.kind == "file":
        try:
            text = await asyncio.to_thread(Path(source.path).read_text, encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None
    else:
        try:
            ended = await run_process(
                source.argv, _ENV, timeout_s=_READ_TIMEOUT_S, output_limit=4096
            )
        except OSError:
            return None
        if ended.timed_out or ended.returncode != 0:
            return None
        text = ended.stdout
    found = _NUMBER.search(text)
    return float(found.group()) if found else None
