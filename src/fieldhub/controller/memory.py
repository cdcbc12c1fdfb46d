"""The command ids a controller has run, on disk, so that each runs at most once.

Before an action starts, ``{"id": ..., "running": true}`` is appended to ``commands.jsonl``
and forced to disk; when it ends, its outcome. After a restart, an id that has no outcome was
interrupted: it may or may not have taken effect, so it is answered ``failed: interrupted, not
retried`` and never run again. The file keeps the last :data:`KEEP` commands (rewritten
whole, all or nothing, when it holds twice as many lines).
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Final

from fieldhub.private_files import private_file, write_private

__all__ = ["INTERRUPTED", "CommandMemory"]

KEEP: Final = 1000
INTERRUPTED: Final = {"status": "failed", "result": {}, "error": "interrupted, not retried"}


class CommandMemory:
    """Outcomes (or "running") by command id, oldest first, mirrored to a file."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._entries: OrderedDict[str, dict[str, Any] | None] = OrderedDict()
        self._lines = 0
        self._load()

    def outcome(self, command_id: str) -> dict[str, Any] | None:
        """The stored outcome of ``command_id``; None if unknown or still running."""
        return self._entries.get(command_id)

    def __contains__(self, command_id: str) -> bool:
        return command_id in self._entries

    def started(self, command_id: str) -> None:
        """Record, durably, that ``command_id`` is about to run."""
        self._entries[command_id] = None
        self._append({"id": command_id, "running": True})

    def finished(self, command_id: str, outcome: dict[str, Any]) -> None:
        """Record how ``command_id`` ended."""
        self._entries[command_id] = outcome
        self._append({"id": command_id, "outcome": outcome})

    def _load(self) -> None:
        private_file(self._path)
        for line in self._path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
                command_id = str(entry["id"])
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by a power cut
            self._entries[command_id] = entry.get("outcome")
            self._entries.move_to_end(command_id)
        for command_id, outcome in self._entries.items():
            if outcome is None:
                self._entries[command_id] = dict(INTERRUPTED)
        self._compact()

    def _append(self, entry: dict[str, Any]) -> None:
        with self._path.open("a", encoding="utf-8") as file:
            file.write(json.dumps(entry, separators=(",", ":")) + "\n")
            file.flush()
            os.fsync(file.fileno())
        self._lines += 1
        if self._lines > 2 * KEEP:
            self._compact()

    def _compact(self) -> None:
        while len(self._entries) > KEEP:
            self._entries.popitem(last=False)
        lines = [
            json.dumps({"id": command_id, "outcome": outcome}, separators=(",", ":"))
            if outcome is not None
            else json.dumps({"id": command_id, "running": True}, separators=(",", ":"))
            for command_id, outcome in self._entries.items()
        ]
        write_private(self._path, "".join(f"{line}\n" for line in lines).encode())
        self._lines = len(lines)
