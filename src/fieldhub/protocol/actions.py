"""Actions as the wire contract knows them: names, the catalog a device reports, argument rules.

A device lists its actions in its reported state under :data:`ACTION_CATALOG_KEY`: action name
→ argument name → type name (``int``, ``float``, ``bool``, ``str``). Both sides check a
command's arguments with :func:`check_arguments`: the hub before it queues a command (so a
caller hears at once what the device would refuse), the agent before it runs one (the device
trusts no one). One function, so the two can never disagree about what is valid.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final, Literal

__all__ = [
    "ACTION_CATALOG_KEY",
    "ACTION_NAME_PATTERN",
    "ARG_NAME_PATTERN",
    "MAX_INT_ARG",
    "MAX_STR_ARG",
    "ArgValue",
    "TypeName",
    "check_arguments",
    "check_value",
    "json_kind",
]

ACTION_CATALOG_KEY: Final = "actions"
"""Reported-state key under which a device lists its actions: name → argument → type name
(``int``, ``float``, ``bool``, ``str``); the hub refuses commands that do not fit it."""
ACTION_NAME_PATTERN: Final = r"^[a-z][a-z0-9_.-]{0,63}$"
"""What a command's ``action`` may be (``protocol.messages.Command``)."""
ARG_NAME_PATTERN: Final = r"^[a-z][a-z0-9_]{0,31}$"
"""Argument names double as environment variable suffixes on the agent: a narrow alphabet."""
MAX_STR_ARG: Final = 256
MAX_INT_ARG: Final = 2**53
"""Integers beyond this do not survive a trip through JSON numbers in other languages."""

TypeName = Literal["int", "float", "bool", "str"]
ArgValue = bool | int | float | str


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
    action: str, declared: Mapping[str, str], args: Mapping[str, Any]
) -> tuple[dict[str, ArgValue], list[str]]:
    """``args`` checked against the ``declared`` argument types of ``action``.

    Returns:
        The checked values, and the problems (every missing, unexpected and wrongly typed
        argument, each named); the arguments are valid when the list is empty.
    """
    problems = [
        f"missing argument {arg!r} ({kind})" for arg, kind in declared.items() if arg not in args
    ]
    problems += [f"unexpected argument {str(arg)[:32]!r}" for arg in args if arg not in declared]
    checked: dict[str, ArgValue] = {}
    for arg, kind in declared.items():
        if arg in args:
            try:
                checked[arg] = check_value(str(kind), args[arg])
            except ValueError as exc:
                problems.append(f"argument {arg!r} {exc}")
    return checked, problems


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
