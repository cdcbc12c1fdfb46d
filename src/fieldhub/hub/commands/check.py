"""Check a command against the actions a device says it offers, before anything is queued.

An agent reports its action catalog in its state (key ``actions``: action name → argument
name → ``int | float | bool | str``, see ``agent/service.py``). With it the hub refuses an
unknown action or wrong arguments at once, with the device's own list in the message, instead
of queueing a command the device would refuse later. A device that reported no catalog gets
its commands unchecked; it still refuses what it cannot run, and the refusal is the result.
The rules are the agent's own: both use ``protocol.actions.check_arguments``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fieldhub.hub.errors import Invalid
from fieldhub.protocol.actions import ACTION_CATALOG_KEY, check_arguments


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
    _, problems = check_arguments(action, declared, args)
    if problems:
        raise CommandRefused(f"action {action!r}: " + "; ".join(problems))
