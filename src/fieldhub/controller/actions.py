"""Running a controller's actions: arguments checked, each command id at most once.

An action is a program from the controller's YAML, run like the agent's site actions
(docs/agent-actions.md, ``fieldhub.agent._process``): no shell, a process group of its own, a
timeout after which the whole group is killed, arguments only as environment variables.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from typing import Any, Final

from fieldhub.agent._process import run_process
from fieldhub.controller.config import ActionConfig
from fieldhub.controller.memory import INTERRUPTED, CommandMemory

__all__ = ["ActionRunner"]

log = logging.getLogger(__name__)

OUTPUT_LIMIT: Final = 16 * 1024
_PATH: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_KINDS: Final[dict[str, tuple[type, ...]]] = {
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "str": (str,),
}


class ActionRunner:
    """Runs commands against the configured actions, remembering each id."""

    def __init__(
        self,
        actions: Mapping[str, ActionConfig],
        memory: CommandMemory,
        *,
        kill_grace_s: float = 1.0,
    ) -> None:
        self._actions = actions
        self._memory = memory
        self._kill_grace_s = kill_grace_s
        self._running: dict[str, asyncio.Task[dict[str, Any]]] = {}

    def catalog(self) -> dict[str, dict[str, str]]:
        """The actions as docs/protocol.md's catalog: name → argument → type name."""
        return {name: dict(action.args) for name, action in self._actions.items()}

    async def run(
        self, command_id: str, action: str, args: Mapping[str, Any], timeout_s: float
    ) -> dict[str, Any]:
        """Run a command once and return its outcome (``status``, ``result``, ``error``).

        The same id again, while it runs or after, gets the first run's outcome; the action
        never runs twice. ``timeout_s`` can shorten the action's own timeout, never lengthen it.
        """
        if command_id in self._running:
            return await asyncio.shield(self._running[command_id])
        if command_id in self._memory:
            stored = self._memory.outcome(command_id)
            if stored is not None:
                return stored
        refusal = self._refusal(action, args)
        if refusal:  # nothing ran, nothing to remember
            return {"status": "failed", "result": {}, "error": refusal}
        self._memory.started(command_id)
        # The run is the runner's, not the asker's: a link that ends mid-action cancels only
        # the wait, and a retry of the id then gets this run's outcome.
        task = asyncio.create_task(
            self._run_once(command_id, self._actions[action], args, timeout_s)
        )
        self._running[command_id] = task
        task.add_done_callback(lambda _: self._running.pop(command_id, None))
        return await asyncio.shield(task)

    async def _run_once(
        self, command_id: str, action: ActionConfig, args: Mapping[str, Any], timeout_s: float
    ) -> dict[str, Any]:
        try:
            outcome = await self._execute(action, args, command_id, timeout_s)
        except asyncio.CancelledError:  # the controller stops: the program was killed
            self._memory.finished(command_id, dict(INTERRUPTED))
            raise
        self._memory.finished(command_id, outcome)
        return outcome

    def _refusal(self, action: str, args: Mapping[str, Any]) -> str:
        config = self._actions.get(action)
        if config is None:
            return f"unknown action {action[:64]!r}"
        problems = [f"missing argument `{name}`" for name in config.args if name not in args]
        for name, value in args.items():
            kind = config.args.get(name)
            if kind is None:
                problems.append(f"unexpected argument `{str(name)[:32]}`")
            elif not isinstance(value, _KINDS[kind]) or (
                kind != "bool" and isinstance(value, bool)
            ):
                problems.append(f"`{name}` must be {kind}")
        return "; ".join(problems)

    async def _execute(
        self, action: ActionConfig, args: Mapping[str, Any], command_id: str, timeout_s: float
    ) -> dict[str, Any]:
        limit = min(action.timeout_s, timeout_s) if timeout_s > 0 else action.timeout_s
        try:
            ended = await run_process(
                action.argv,
                _environment(action.name, args, command_id),
                timeout_s=limit,
                output_limit=OUTPUT_LIMIT,
                kill_grace_s=self._kill_grace_s,
            )
        except OSError as exc:
            return {"status": "failed", "result": {}, "error": f"cannot start: {exc.strerror}"}
        result = {
            "exit_code": ended.returncode,
            "stdout": ended.stdout,
            "stderr": ended.stderr,
            "duration_ms": ended.duration_ms,
        }
        if ended.timed_out:
            log.warning(
                "action %s (command %s) timed out after %g s; killed",
                action.name,
                command_id,
                limit,
            )
            return {
                "status": "timed_out",
                "result": result,
                "error": f"timed out after {limit:g} s; killed",
            }
        if ended.returncode != 0:
            return {"status": "failed", "result": result, "error": f"exit code {ended.returncode}"}
        return {"status": "succeeded", "result": result, "error": ""}


def _environment(name: str, args: Mapping[str, Any], command_id: str) -> dict[str, str]:
    """The program's whole environment, as docs/agent-actions.md describes for site actions."""
    env = {
        "PATH": _PATH,
        "LANG": "C.UTF-8",
        "FIELDHUB_ACTION": name,
        "FIELDHUB_ORIGIN": command_id,
        "FIELDHUB_ARGS": json.dumps(dict(args)),
    }
    for arg, value in args.items():
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        env[f"FIELDHUB_ARG_{arg.upper()}"] = text
    return env
