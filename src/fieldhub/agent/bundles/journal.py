"""The install journal: which step an install reached, so that any step can be resumed.

One small file, written atomically (``write_private``: temporary file, fsync, rename) before
each step that changes the active area. After a power cut, the agent reads it first thing
(``BundleHost.recover``) and finishes or undoes the step, so the device runs the old version or
the new one, never neither (docs/bundles.md, the state machine):

- ``writing``: the new version's directory may be half written → removed; old version kept.
- ``switching``: ``current`` may point to either → put back to the previous version.
- ``trial``: the new version was starting when the agent died → rolled back (``crashed``).
- ``confirmed``: only clean-up was left → done.
- ``rolling_back``: the way back was under way → finished.

**Crash points** (for tests only): with ``FIELDHUB_BUNDLE_CRASH_AT=<point>`` in its
environment, the agent kills itself (SIGKILL, no clean-up, like a power cut) when an install
reaches that point (:data:`CRASH_POINTS`). Unset, as in production, it does nothing; whoever
can set an agent's environment can stop it anyway.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Final, Literal

import msgspec

from fieldhub.private_files import private_dir, write_private

__all__ = ["CRASH_POINTS", "Journal", "Step", "clear", "crash_point", "load", "save"]

Step = Literal["writing", "switching", "trial", "confirmed", "rolling_back"]
CRASH_POINTS: Final = (
    "verified",  # downloaded and verified, nothing written yet
    "writing",  # journal says writing, nothing written yet
    "written",  # the version directory is complete, current unchanged
    "switching",  # journal says switching, current unchanged
    "switched",  # current points to the new version, journal still says switching
    "trial",  # the new version started and passed its checks, not yet confirmed
    "confirmed",  # journal says confirmed, old versions not yet pruned
    "rolling_back",  # journal says rolling back, current still the new version
)
CRASH_ENV: Final = "FIELDHUB_BUNDLE_CRASH_AT"


class Journal(msgspec.Struct, frozen=True, kw_only=True):
    """An install under way: its step, and what it goes from and to."""

    step: Step
    name: str
    version: str
    directory: str  # the new version's directory under versions/
    previous: str | None  # the directory current pointed to before (None: first install)
    older: str | None = None  # the directory previous pointed to before
    deadline_ms: int = 0  # trial: confirmed by then, or rolled back
    reason: str = ""  # rolling_back: why
    detail: str = ""


def load(path: Path) -> Journal | None:
    """The journal, or None when no install is under way (or the file is unreadable: a
    journal is written atomically, so an unreadable one was never valid)."""
    try:
        return msgspec.json.decode(path.read_bytes(), type=Journal)
    except FileNotFoundError:
        return None
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return None


def save(path: Path, journal: Journal) -> None:
    """Record ``journal``, all or nothing, before its step's change is made."""
    write_private(private_dir(path.parent) / path.name, msgspec.json.encode(journal))


def clear(path: Path) -> None:
    """The install is over (confirmed, refused or rolled back)."""
    path.unlink(missing_ok=True)


def crash_point(point: str) -> None:
    """Die here, like a power cut, if the tests asked for this point (module docstring)."""
    if os.environ.get(CRASH_ENV) == point:
        os.kill(os.getpid(), signal.SIGKILL)
