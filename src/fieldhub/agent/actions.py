"""The agent's action registry: named actions with typed arguments, and nothing else runs.

The seeds dispatched by the first word of an MQTT payload into a table of Python functions, and
one of them accepted Python files over the network and imported them. Here the table holds
only what the agent was built or configured with:

- **built-in actions** of the hardware units (``socket.cycle``, ``led.set``, ...), registered
  from each unit's ``ActionSpec``;
- **site actions** declared in ``agent.yaml`` (:class:`SiteAction`): a program, run without a
  shell in a process group of its own under a timeout (see ``_process``).

A request names an action and gives arguments; :meth:`ActionRegistry.bind` checks the name
against the table and every argument against its declared type *before* anything runs, and
says exactly what is wrong. Arguments reach a site action as environment variables
(``FIELDHUB_ARG_<NAME>``, plus all of them as JSON in ``FIELDHUB_ARGS``), never spliced into
its command line, so a value like ``--force`` or ``; rm -rf /`` is just a string.

Example ``agent.yaml`` entry::

    actions:
      - name: modem.restart
        command: [/usr/local/bin/restart-modem, --hard]
        args: {delay_s: int}
        timeout_s: 60
        duration_s: 20          # how long it usually takes: the hub waits that long and more
        description: Power-cycle the LTE modem
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Final, Literal, Protocol

import msgspec

from fieldhub.agent._process import ProcessResult, run_process
from fieldhub.protocol.actions import (
    ACTION_NAME_PATTERN,
    ARG_NAME_PATTERN,
    ArgDetails,
    TypeName,
    check_arguments,
    describe_action,
    expected_duration_s,
)

__all__ = [
    "ActionDefinitionError",
    "ActionError",
    "ActionInfo",
    "ActionOutcome",
    "ActionRegistry",
    "BoundAction",
    "BuiltinAction",
    "InvalidArguments",
    "SiteAction",
    "UnknownAction",
]

log = logging.getLogger(__name__)

MAX_RESULT_BYTES: Final = 64 * 1024
"""A result must fit a reply (256 KiB) with room to spare."""
SITE_ACTION_PATH: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_TYPES: Final[dict[TypeName, type]] = {"int": int, "float": float, "bool": bool, "str": str}
_NAMES: Final[dict[type, TypeName]] = {t: n for n, t in _TYPES.items()}
_ACTION_NAME = re.compile(ACTION_NAME_PATTERN)
_ARG_NAME = re.compile(ARG_NAME_PATTERN)


class ActionError(Exception):
    """Root of the registry's errors."""


class UnknownAction(ActionError, LookupError):
    """The requested action is not in the registry."""


class InvalidArguments(ActionError, ValueError):
    """Arguments missing, unexpected or of the wrong type; nothing was run."""


class ActionDefinitionError(ActionError, ValueError):
    """An action cannot be registered (bad name, duplicate, unsupported argument type)."""


class SiteAction(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A site-defined action from ``agent.yaml``: a program and the arguments it accepts.

    ``command`` is an argv list run without a shell; its first element must be an absolute
    path, so what runs does not depend on ``PATH``. Every argument in ``args`` is required
    when the action is requested, and reaches the program as ``FIELDHUB_ARG_<NAME>``
    (upper-cased name): ``int``/``float`` in decimal, ``bool`` as ``true``/``false``, ``str``
    as given (at most 256 characters).
    """

    name: Annotated[str, msgspec.Meta(pattern=ACTION_NAME_PATTERN)]
    command: Annotated[list[Annotated[str, msgspec.Meta(min_length=1)]], msgspec.Meta(min_length=1)]
    args: dict[Annotated[str, msgspec.Meta(pattern=ARG_NAME_PATTERN)], TypeName] = {}
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 30.0
    duration_s: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 0.0
    description: Annotated[str, msgspec.Meta(max_length=200)] = ""

    def __post_init__(self) -> None:
        if not self.command[0].startswith("/"):
            raise ValueError(
                f"command[0] must be an absolute path (e.g. /usr/bin/systemctl), "
                f"not {self.command[0]!r}"
            )
        if any("\0" in part for part in self.command):
            raise ValueError("command must not contain NUL characters")
        if self.duration_s > self.timeout_s:
            raise ValueError(
                f"duration_s ({self.duration_s:g}) must not exceed timeout_s ({self.timeout_s:g})"
            )


class BuiltinAction(Protocol):
    """What a unit's ``ActionSpec`` (``agent/units/base.py``) offers, read-only.

    ``handler`` is called with the validated arguments as keywords, on the event loop; it may
    return a value or an awaitable (awaited under the registry's built-in timeout). What it
    returns, if JSON-encodable, becomes the command's ``result``; a ``ValueError`` it raises
    is a refusal whose message goes to the caller. A sync handler must not block.
    """

    @property
    def name(self) -> str: ...
    @property
    def handler(self) -> Callable[..., Any]: ...
    @property
    def args(self) -> Mapping[str, type]: ...
    @property
    def details(self) -> Mapping[str, ArgDetails]: ...
    @property
    def duration_s(self) -> float: ...
    @property
    def duration_arg(self) -> str | None: ...
    @property
    def description(self) -> str: ...


@dataclass(frozen=True, slots=True)
class ActionInfo:
    """One action as the technician page and the hub's listing show it."""

    name: str
    kind: Literal["builtin", "site"]
    args: Mapping[str, TypeName]
    description: str
    details: Mapping[str, Any] = field(default_factory=dict)
    """Its entry of the reported ``action_details`` (``protocol.actions.describe_action``)."""


class ActionOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """How a run ended: ``ok`` with a JSON-able ``result``, or not ok with an ``error``."""

    ok: bool
    result: Any = None
    error: str = ""


@dataclass(frozen=True, slots=True)
class BoundAction:
    """An action found in the registry with arguments that passed validation."""

    info: ActionInfo
    args: Mapping[str, bool | int | float | str]


@dataclass(frozen=True, slots=True)
class _Entry:
    info: ActionInfo
    handler: Callable[..., Any] | None  # built-in
    site: SiteAction | None


class ActionRegistry:
    """The table of actions the agent may run, and the one place that runs them.

    Args:
        max_concurrent: runs at once (commands and the technician page together); more wait.
        builtin_timeout_s: longest a built-in's awaitable may take beyond the duration it
            declares (a 10-minute power cycle is not cut off after a minute) before it is
            cancelled.
        output_limit: bytes kept of a site action's stdout, and again of its stderr.
        kill_grace_s: between SIGTERM and SIGKILL when a site action runs over.
    """

    def __init__(
        self,
        *,
        max_concurrent: int = 4,
        builtin_timeout_s: float = 60.0,
        output_limit: int = 16 * 1024,
        kill_grace_s: float = 1.0,
    ) -> None:
        self._entries: dict[str, _Entry] = {}
        self._slots = asyncio.Semaphore(max_concurrent)
        self._builtin_timeout_s = builtin_timeout_s
        self._output_limit = output_limit
        self._kill_grace_s = kill_grace_s

    def add_builtin(self, spec: BuiltinAction) -> None:
        """Register a unit's action.

        Raises:
            ActionDefinitionError: bad or duplicate name, bad argument name or type.
        """
        args: dict[str, TypeName] = {}
        for arg, kind in spec.args.items():
            if kind not in _NAMES:
                raise ActionDefinitionError(
                    f"action {spec.name!r}: argument {arg!r} has type {kind!r}; "
                    "use int, float, bool or str"
                )
            args[arg] = _NAMES[kind]
        for arg in spec.details:
            if arg not in args:
                raise ActionDefinitionError(
                    f"action {spec.name!r}: details of {arg!r}, which is not an argument"
                )
        details = describe_action(spec.duration_s, spec.duration_arg, spec.details)
        info = ActionInfo(spec.name, "builtin", args, spec.description, details)
        self._add(_Entry(info, spec.handler, None))

    def add_site(self, action: SiteAction) -> None:
        """Register a site action from ``agent.yaml``.

        Raises:
            ActionDefinitionError: duplicate name (with a built-in or another site action).
        """
        details = describe_action(action.duration_s)
        info = ActionInfo(action.name, "site", dict(action.args), action.description, details)
        self._add(_Entry(info, None, action))

    def _add(self, entry: _Entry) -> None:
        name = entry.info.name
        if not _ACTION_NAME.match(name):
            raise ActionDefinitionError(
                f"action name {name!r} is not valid: lower-case letters, digits, '_', '.', '-'"
            )
        for arg in entry.info.args:
            if not _ARG_NAME.match(arg):
                raise ActionDefinitionError(
                    f"action {name!r}: argument name {arg!r} is not valid: "
                    "lower-case letters, digits and '_', starting with a letter"
                )
        if name in self._entries:
            raise ActionDefinitionError(f"action {name!r} is defined twice")
        self._entries[name] = entry

    def describe(self) -> list[ActionInfo]:
        """Every registered action, by name."""
        return [self._entries[name].info for name in sorted(self._entries)]

    def bind(self, name: str, args: Mapping[str, Any]) -> BoundAction:
        """Look ``name`` up and check ``args`` against its declaration; nothing runs.

        Raises:
            UnknownAction: no action of that name.
            InvalidArguments: names every missing, unexpected and wrongly typed argument.
        """
        entry = self._entries.get(name)
        if entry is None:
            raise UnknownAction(f"unknown action {name[:64]!r}")
        checked, problems = check_arguments(name, entry.info.args, args, entry.info.details)
        if problems:
            raise InvalidArguments(f"action {name!r}: " + "; ".join(problems))
        return BoundAction(entry.info, checked)

    async def run(self, action: BoundAction, *, origin: str = "local") -> ActionOutcome:
        """Run a bound action and say how it ended; failures are outcomes, not exceptions.

        Args:
            action: from :meth:`bind`.
            origin: who asked (a command id, ``"local"`` for the technician page); a site
                action sees it as ``FIELDHUB_ORIGIN``.
        """
        entry = self._entries[action.info.name]
        async with self._slots:
            if entry.site is not None:
                return await self._run_site(entry.site, action.args, origin)
            if entry.handler is None:  # pragma: no cover - _Entry always has one of the two
                raise ActionDefinitionError(f"action {action.info.name!r} has nothing to run")
            limit_s = self._builtin_timeout_s + expected_duration_s(
                action.info.details, action.args
            )
            return await self._run_builtin(action.info.name, entry.handler, action.args, limit_s)

    async def _run_builtin(
        self, name: str, handler: Callable[..., Any], args: Mapping[str, Any], limit_s: float
    ) -> ActionOutcome:
        deadline: asyncio.Timeout | None = None
        try:
            result = handler(**args)
            if inspect.isawaitable(result):
                async with asyncio.timeout(limit_s) as deadline:
                    result = await result
        except TimeoutError as exc:
            if deadline is None or not deadline.expired():
                return _failed(name, exc)
            return ActionOutcome(ok=False, error=f"timed out after {limit_s:g} s")
        except Exception as exc:  # a unit's failure is the command's answer, not the agent's
            return _failed(name, exc)
        try:
            size = len(msgspec.json.encode(result))
        except (TypeError, msgspec.EncodeError) as exc:
            return ActionOutcome(
                ok=False, error=f"action returned a result that is not JSON: {exc}"
            )
        if size > MAX_RESULT_BYTES:
            return ActionOutcome(
                ok=False, error=f"result of {size} bytes exceeds {MAX_RESULT_BYTES}"
            )
        return ActionOutcome(ok=True, result=result)

    async def _run_site(
        self, site: SiteAction, args: Mapping[str, bool | int | float | str], origin: str
    ) -> ActionOutcome:
        try:
            ended = await run_process(
                site.command,
                site_environment(site.name, args, origin),
                timeout_s=site.timeout_s,
                output_limit=self._output_limit,
                kill_grace_s=self._kill_grace_s,
            )
        except OSError as exc:
            return ActionOutcome(ok=False, error=f"cannot start {site.command[0]}: {exc.strerror}")
        return _site_outcome(site, ended)


def site_environment(
    name: str, args: Mapping[str, bool | int | float | str], origin: str
) -> dict[str, str]:
    """The whole environment of a site action's program: a fixed ``PATH``, the action's name
    and origin, and its arguments. Nothing of the agent's own environment (which may hold
    its broker secret) is passed on."""
    env = {
        "PATH": SITE_ACTION_PATH,
        "LANG": "C.UTF-8",
        "FIELDHUB_ACTION": name,
        "FIELDHUB_ORIGIN": origin,
        "FIELDHUB_ARGS": msgspec.json.encode(dict(args)).decode(),
    }
    for arg, value in args.items():
        env[f"FIELDHUB_ARG_{arg.upper()}"] = _env_text(value)
    return env


def _site_outcome(site: SiteAction, ended: ProcessResult) -> ActionOutcome:
    result = {
        "exit_code": ended.returncode,
        "stdout": ended.stdout,
        "stderr": ended.stderr,
        "duration_ms": ended.duration_ms,
    }
    if ended.stdout_dropped or ended.stderr_dropped:
        result["dropped_bytes"] = {"stdout": ended.stdout_dropped, "stderr": ended.stderr_dropped}
    if ended.timed_out:
        error = f"timed out after {site.timeout_s:g} s; killed"
    elif ended.returncode < 0:
        error = f"killed by signal {-ended.returncode}"
    elif ended.returncode > 0:
        error = f"exit code {ended.returncode}"
    else:
        return ActionOutcome(ok=True, result=result)
    last_line = ended.stderr.strip().rsplit("\n", 1)[-1][:200]
    return ActionOutcome(
        ok=False, result=result, error=f"{error}: {last_line}" if last_line else error
    )


def _failed(name: str, exc: Exception) -> ActionOutcome:
    """A handler raised. ``ValueError`` is its way of refusing a value (its message is for
    the caller); anything else is a fault of the unit, worth a warning."""
    if isinstance(exc, ValueError):
        return ActionOutcome(ok=False, error=str(exc) or "invalid value")
    log.warning("action %s failed: %s: %s", name, type(exc).__name__, exc)
    return ActionOutcome(ok=False, error=f"{type(exc).__name__}: {exc}")


def _env_text(value: bool | int | float | str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else repr(value)
