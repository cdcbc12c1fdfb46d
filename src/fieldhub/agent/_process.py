"""Run one program in a process group of its own, under a timeout, with bounded output.

Site actions are programs a site's technician declared in ``agent.yaml``. They run in a new
session (``start_new_session``), so the agent can signal the program *and everything it
started* at once: a shell script that spawned ``sleep 600`` must not leave it behind when the
script is killed. Output is read while the program runs (a full pipe would stall it) and only
the first ``output_limit`` bytes of each stream are kept, so a chatty program cannot grow the
agent's memory or overflow a reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

__all__ = ["ProcessResult", "run_process"]

_CHUNK: Final = 4096
_POLL_S: Final = 0.25
"""How often to look whether the program exited while something it started holds its pipes."""
_PIPES_CLOSE_S: Final = 2.0
"""How long to wait for the pipes to close once the group is killed."""


@dataclass(frozen=True, slots=True)
class ProcessResult:
    """How a program ended.

    ``returncode`` is the exit status, or minus the signal number that ended it (asyncio's
    convention). ``timed_out`` says the agent killed it for running over its time.
    ``stdout_dropped`` / ``stderr_dropped`` count the bytes beyond the output limit.
    """

    returncode: int
    timed_out: bool
    stdout: str
    stderr: str
    stdout_dropped: int
    stderr_dropped: int
    duration_ms: int


class _Capture:
    """Keeps the head of a stream up to a limit and counts (but drains) the rest."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._kept = bytearray()
        self.dropped = 0

    async def drain(self, stream: asyncio.StreamReader | None) -> None:
        if stream is None:
            return
        while chunk := await stream.read(_CHUNK):
            room = self._limit - len(self._kept)
            if room > 0:
                self._kept += chunk[:room]
            self.dropped += max(0, len(chunk) - max(room, 0))

    def text(self) -> str:
        return self._kept.decode("utf-8", errors="replace")


async def run_process(
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    timeout_s: float,
    output_limit: int,
    kill_grace_s: float = 1.0,
) -> ProcessResult:
    """Run ``argv`` (no shell) with exactly ``env`` as its environment, and wait for it.

    When it runs longer than ``timeout_s``, its whole process group gets SIGTERM, and SIGKILL
    ``kill_grace_s`` later. When the program exits by itself, anything it left running in its
    group is killed too: an action ends when its program ends. If the caller is cancelled
    (the agent stops), the group is killed before the cancellation goes on. A descendant that
    left the group (``setsid``) is out of reach; the agent stops reading its output after
    a short while and leaves it be.

    Raises:
        OSError: the program cannot be started (not found, not executable).
    """
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(env),
        cwd="/",
        start_new_session=True,
    )
    out, err = _Capture(output_limit), _Capture(output_limit)
    # asyncio's wait() returns only once the program exited *and* its pipes closed.
    finished = asyncio.ensure_future(
        asyncio.gather(out.drain(proc.stdout), err.drain(proc.stderr), proc.wait())
    )
    try:
        timed_out = not await _program_ended(proc, finished, timeout_s)
        if timed_out:
            _signal_group(proc.pid, signal.SIGTERM)
            await asyncio.wait({finished}, timeout=kill_grace_s)
        _signal_group(proc.pid, signal.SIGKILL)  # what ignored TERM, or what it left running
        await asyncio.wait({finished}, timeout=_PIPES_CLOSE_S)
    except BaseException:  # cancelled: never leave the program running behind the agent
        _signal_group(proc.pid, signal.SIGKILL)
        finished.cancel()
        # ... nor unreaped: wait for the exit SIGKILL forces (at once), so that asyncio
        # learns of it while its loop still runs; a stopping agent's loop may close first,
        # and the process then stays a zombie with its transport "still running".
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(asyncio.shield(proc.wait()), _PIPES_CLOSE_S)
        raise
    if finished.done():
        finished.result()  # surfaces a read error instead of leaving it unretrieved
    else:
        finished.cancel()
    returncode = proc.returncode
    return ProcessResult(
        returncode=-signal.SIGKILL if returncode is None else returncode,
        timed_out=timed_out,
        stdout=out.text(),
        stderr=err.text(),
        stdout_dropped=out.dropped,
        stderr_dropped=err.dropped,
        duration_ms=round((time.monotonic() - started) * 1000),
    )


async def _program_ended(
    proc: asyncio.subprocess.Process,
    finished: asyncio.Future[tuple[None, None, int]],
    timeout_s: float,
) -> bool:
    """True once the program exited (pipes closed, or held open by leftovers); False when
    ``timeout_s`` passed first. The poll only matters when leftovers hold the pipes open."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while (remaining := deadline - loop.time()) > 0:
        done, _ = await asyncio.wait({finished}, timeout=min(remaining, _POLL_S))
        if done or proc.returncode is not None:
            return True
    return False


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    """Signal every process of the group led by ``pgid``; an empty group is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)
