"""Background tasks of the agent that must not die in silence."""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger("fieldhub.agent")


def log_if_failed(task: asyncio.Task[None]) -> None:
    """Done-callback: a background loop that ends with an error says so at once (nothing
    would be stored or sent any more), instead of when someone finally awaits it."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.critical("agent task %s failed", task.get_name(), exc_info=exc)
