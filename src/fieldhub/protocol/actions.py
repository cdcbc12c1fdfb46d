"""Actions as the wire contract knows them: names, the catalog a device reports, argument rules.

A device lists its actions in its reported state under :data:`ACTION_CATALOG_KEY`: action name
→ argument name → type name (``int``, ``float``, ``bool``, ``str``). A newer device adds, under
a second key, :data:`ACTION_DETAILS_KEY`, what the first cannot say without changing its shape:
how long each action takes and each argument's default, range and unit. A second key and not a
new shape of the first, so that both ages of hub and agent keep working: an older hub checks
the types it knows and ignores the details; a newer hub reading an older agent has types only.

Both sides check a command's arguments with :func:`check_arguments`: the hub before it queues a
command (so a caller hears at once what the device would refuse), the agent before it runs one
(the device trusts no one). One function, so the two can never disagree about what is valid.
Details come from the network too: a malformed one is ignored (:func:`action_details`), never
fatal, as an unknown field would be.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

__all__ = [
    "ACTION_CATALOG_KEY",
    "ACTION_DETAILS_KEY",
    "ACTION_NAME_PATTERN",
    "ADJUSTED_KEY",
    "ARG_NAME_PATTERN",
    "MAX_INT_ARG",
    "MAX_STR_ARG",
    "ArgDetails",
    "ArgValue",
    "TypeName",
    "action_details",
    "adjusted",
    "check_arguments",
    "check_value",
    "describe_action",
    "expected_duration_s",
    "json_kind",
]

ACTION_CATALOG_KEY: Final = "actions"
"""Reported-state key under which a device lists its actions: name → argument → type name
(``int``, ``float``, ``bool``, ``str``); the hub refuses commands that do not fit it."""
ACTION_DETAILS_KEY: Final = "action_details"
"""Reported-state key with what the catalog's shape cannot hold, by action name::

    {"socket.cycle": {"duration_s": 10, "duration_arg": "off_s",
                      "args": {"off_s": {"default": 10, "min": 0.1, "max": 3600, "unit": "s"}}}}

``duration_s``: how long the action takes (at least); ``duration_arg``: an argument in
seconds the action lasts at least as long as. Per argument: ``default`` (used when the
argument is left out: it is optional), ``min`` and ``max`` (inclusive), ``unit`` (for
people). Every field is optional."""
ADJUSTED_KEY: Final = "adjusted"
"""Key of a command's ``result`` naming the arguments the device changed before it ran the
action (a power cycle shorter than the socket's minimum off time is lengthened): argument →
``{"requested", "used", "why"}``."""
ACTION_NAME_PATTERN: Final = r"^[a-z][a-z0-9_.-]{0,63}$"
"""What a command's ``action`` may be (``protocol.messages.Command``)."""
ARG_NAME_PATTERN: Final = r"^[a-z][a-z0-9_]{0,31}$"
"""Argument names double as environment variable suffixes on the agent: a narrow alphabet."""
MAX_STR_ARG: Final = 256
MAX_INT_ARG: Final = 2**53
"""Integers beyond this do not survive a trip through JSON numbers in other languages."""

TypeName = Literal["int", "float", "bool", "str"]
ArgValue = bool | int | float | str


@dataclass(frozen=True, slots=True, kw_only=True)
class ArgDetails:
    """What a device says of one argument beyond its type (see :data:`ACTION_DETAILS_KEY`)."""

    default: ArgValue | None = None
    min: float | None = None
    max: float | None = None
    unit: str = ""

    def wire(self) -> dict[str, ArgValue]:
        """The argument's entry as reported: only the fields that are set."""
        fields: dict[str, ArgValue | None] = {
            "default": self.default,
            "min": self.min,
            "max": self.max,
            "unit": self.unit or None,
        }
        return {name: value for name, value in fields.items() if value is not None}


def describe_action(
    duration_s: float = 0.0,
    duration_arg: str | None = None,
    args: Mapping[str, ArgDetails] | None = None,
) -> dict[str, Any]:
    """An action's entry of :data:`ACTION_DETAILS_KEY` (empty when there is nothing to say)."""
    entry: dict[str, Any] = {}
    if duration_s:
        entry["duration_s"] = duration_s
    if duration_arg is not None:
        entry["duration_arg"] = duration_arg
    described = {arg: about.wire() for arg, about in (args or {}).items() if about.wire()}
    if described:
        entry["args"] = described
    return entry


def check_value(kind: str, value: Any) -> ArgValue:
    """``value`` as ``kind``, or ValueError saying what was expected. Strict: JSON ``1`` is
    not a bool, ``true`` is not an int, ``"5"`` is not a number. A kind this version does not
    know (a newer device's) takes any plain value: the device decides."""
    if kind == "bool":
        if isinstance(value, bool):
            return value
    elif kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            if abs(value) > MAX_INT_ARG:
                raise ValueError(f"must be an int within ±2**53, got {value}")
            return value
    elif kind == "float":
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ValueError("must be a finite number")
            return float(value)
    elif kind == "str":
        if isinstance(value, str):
            if len(value) > MAX_STR_ARG:
                raise ValueError(f"must be a str of at most {MAX_STR_ARG} characters")
            if "\0" in value:
                raise ValueError("must not contain NUL characters")
            return value
    elif isinstance(value, ArgValue):
        return value
    raise ValueError(f"must be {kind}, got {json_kind(value)}")


def check_arguments(
    action: str,
    declared: Mapping[str, str],
    args: Mapping[str, Any],
    details: Mapping[str, Any] | None = None,
) -> tuple[dict[str, ArgValue], list[str]]:
    """``args`` checked against the ``declared`` argument types of ``action`` and, when the
    device described them (``details``: the action's entry of :data:`ACTION_DETAILS_KEY`),
    their ranges; a left-out argument with a default takes it.

    Returns:
        The checked values (defaults included), and the problems (every missing, unexpected,
        wrongly typed and out-of-range argument, each named); valid when the list is empty.
    """
    described = _arg_details(details)
    given = dict(args)
    for arg, about in described.items():
        if arg in declared and arg not in given and "default" in about:
            given[arg] = about["default"]
    problems = [
        f"missing argument {arg!r} ({kind})" for arg, kind in declared.items() if arg not in given
    ]
    problems += [f"unexpected argument {str(arg)[:32]!r}" for arg in given if arg not in declared]
    checked: dict[str, ArgValue] = {}
    for arg, kind in declared.items():
        if arg in given:
            try:
                checked[arg] = _in_range(check_value(str(kind), given[arg]), described.get(arg))
            except ValueError as exc:
                problems.append(f"argument {arg!r} {exc}")
    return checked, problems


def _in_range(value: ArgValue, about: Mapping[str, Any] | None) -> ArgValue:
    """``value`` if it is within the argument's described ``min`` and ``max``."""
    if about is None or isinstance(value, bool) or not isinstance(value, int | float):
        return value
    unit = f" {about['unit']}" if isinstance(about.get("unit"), str) else ""
    low, high = _number(about.get("min")), _number(about.get("max"))
    if low is not None and value < low:
        raise ValueError(f"must be at least {low:g}{unit}, got {value:g}")
    if high is not None and value > high:
        raise ValueError(f"must be at most {high:g}{unit}, got {value:g}")
    return value


def action_details(details: Any, action: str) -> dict[str, Any] | None:
    """The entry of ``action`` in a reported :data:`ACTION_DETAILS_KEY` value, if it is an
    object; anything else (absent, an older device, a malformed report) is None."""
    if not isinstance(details, Mapping):
        return None
    entry = details.get(action)
    return dict(entry) if isinstance(entry, Mapping) else None


def _arg_details(details: Mapping[str, Any] | None) -> dict[str, Mapping[str, Any]]:
    args = details.get("args") if details is not None else None
    if not isinstance(args, Mapping):
        return {}
    return {str(arg): about for arg, about in args.items() if isinstance(about, Mapping)}


def expected_duration_s(details: Mapping[str, Any] | None, args: Mapping[str, Any]) -> float:
    """How long the action should take with ``args``, as its details say (0: not said):
    ``duration_s``, or the value of its ``duration_arg`` when that is longer."""
    if details is None:
        return 0.0
    duration = _number(details.get("duration_s")) or 0.0
    arg = details.get("duration_arg")
    if isinstance(arg, str):
        duration = max(duration, _number(args.get(arg)) or 0.0)
    return max(duration, 0.0)


def adjusted(requested: ArgValue, used: ArgValue, why: str) -> dict[str, ArgValue]:
    """One entry of a result's :data:`ADJUSTED_KEY`: what was asked, what was done, and why."""
    return {"requested": requested, "used": used, "why": why}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def json_kind(value: Any) -> str:
    """The JSON name of ``value``'s type, for messages."""
    if value is None:
        return "null"
    for kind, python in (("bool", bool), ("int", int), ("float", float), ("str", str)):
        if isinstance(value, python):
            return kind
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__
