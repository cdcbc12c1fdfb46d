"""Media attached to events, the agent's side: the spool and the uploader (docs/agent-media.md).

This module itself is what every agent imports: whether it needs the spool and the uploader at
all (:func:`in_use`). An agent with no camera and nothing left in its spool never imports them
(its memory budget, docs/agent.md "Memory").
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["in_use"]


def in_use(folder: Path, camera: bool) -> bool:
    """Whether the agent runs the spool at ``folder`` and the uploader: it has a ``camera``,
    or pictures taken before wait there for the hub (each has its ``<sha256>.json``
    description, ``spool.py``)."""
    return camera or (folder.is_dir() and any(folder.glob("*.json")))
