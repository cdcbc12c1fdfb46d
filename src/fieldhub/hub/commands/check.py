"""Check a command against the actions a device says it offers, before anything is queued.

An agent reports its action catalog in its state (key ``actions``: action name → argument
name → ``int | float | bool | str``, see ``agent/service.py``). With it the hub refuses an
unknown action or wrong arguments at once, with the device's own list in the message, instead
of queueing a command the device would refuse later. A device that reported no catalog gets
its commands unchecked; it still refuses what it cannot run, and the refusal is the result.
The rules match the agent's (``agent/actions.py`` ``ActionRegistry.bind``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from fieldhub.hub.errors import Invalid
from fieldhub.protocol.messages import ACTION_CATALOG_KEY

_CHECKS: Final = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "bool": lambda v: isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
}


class CommandRefused(Invalid):
    """The device does not offer the action, or not with these arguments."""


def check_command(
    device_id: str, reported: Mapping[str, Any], action: str, args: Mapping[str, Any]
) -> None:
    """Raise :class:`CommandRefused` if ``device_id``'s catalog rules the command out."""
    catalog = reported.get(ACTION_CATALOG_KEY)
    if not isinstance(catalog, dict):
        return
    declared = catalog.get(action)
    if not isinstance(declared, dict):
        offered = ", ".join(sorted(str(name) for name in catalog)) or "none"
        raise CommandRefused(f"device {device_id!r} has no action {action!r}; it offers: {offered}")
    problems = [
        f"missing argument {arg!r} ({kind})" for arg, kind in declared.items() if arg not in args
    ]
    problems += [f"unexpected argument {str(arg)[:32]!r}" for arg in args if arg not in declared]
    for arg, kind in declared.items():
        check = _CHECKS.get(str(kind))
        if arg in args and check is not None and not check(args[arg]):
            problems.append(f"argument {arg!r} must be {kind}, not {type(args[arg]).__name__}")
    if problems:
        raise CommandRefused(f"action {action!r}: " + "; ".join(problems))
