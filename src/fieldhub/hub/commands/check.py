"""Fit a command to the actions a device says it offers, before anything is queued.

An agent reports its action catalog in its state (key ``actions``: action name → argument
name → ``int | float | bool | str``) and, newer ones, the details (key ``action_details``:
durations, argument defaults, ranges, units; see ``protocol/actions.py``). With them the hub
refuses an unknown action or wrong arguments at once, with the device's own list in the
message, instead of queueing a command the device would refuse later; it fills in the
arguments left out that have a default; and it waits for the outcome as long as the action
takes. A device that reported no catalog gets its commands unchecked; it still refuses what it
cannot run, and the refusal is the result. The rules are the agent's own: both use
``protocol.actions.check_arguments``.

**Timeout.** A command's ``timeout_s`` left out is the action's expected duration (with these
arguments) times :data:`TIMEOUT_FACTOR` plus :data:`TIMEOUT_MARGIN_S`, at least
:data:`DEFAULT_TIMEOUT_S`: a 10-s power cycle is waited for 20 s, not reported timed out at
10. A ``timeout_s`` given that is not longer than the expected duration is refused: the
command would be reported timed out while it does what was asked.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from fieldhub.hub.errors import Invalid
from fieldhub.protocol.actions import (
    ACTION_CATALOG_KEY,
    ACTION_DETAILS_KEY,
    action_details,
    check_arguments,
    expected_duration_s,
)

DEFAULT_TIMEOUT_S: Final = 10.0
"""The timeout of a command whose action declares no duration (or a short one)."""
TIMEOUT_FACTOR: Final = 1.5
TIMEOUT_MARGIN_S: Final = 5.0
"""A loaded Pi, a slow relay, a round trip: what an action may take beyond its duration."""
MAX_TIMEOUT_S: Final = 3600.0


class CommandRefused(Invalid):
    """The device does not offer the action, or not with these arguments."""


class TimeoutTooShort(CommandRefused):
    """The ``timeout_s`` asked for ends before the action can."""


@dataclass(frozen=True, slots=True)
class Fit:
    """A command as it goes to one device: its arguments with the device's defaults filled in,
    and the time to wait for its outcome."""

    device_id: str
    args: dict[str, Any]
    timeout_s: float


def default_timeout_s(duration_s: float) -> float:
    """How long to wait for the outcome of an action expected to take ``duration_s``."""
    waited = duration_s * TIMEOUT_FACTOR + TIMEOUT_MARGIN_S
    return min(MAX_TIMEOUT_S, max(DEFAULT_TIMEOUT_S, waited))


def fit_command(
    device_id: str,
    reported: Mapping[str, Any],
    action: str,
    args: Mapping[str, Any],
    timeout_s: float | None,
) -> Fit:
    """The command ``action(args)`` for ``device_id``, given what the device reported.

    Args:
        timeout_s: as the caller asked; None derives it from the action's duration.

    Raises:
        CommandRefused: the action is not offered, or the arguments do not fit (each problem
            named), or (:class:`TimeoutTooShort`) ``timeout_s`` ends before the action can.
    """
    catalog = reported.get(ACTION_CATALOG_KEY)
    if not isinstance(catalog, dict):
        return Fit(device_id, dict(args), DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s)
    declared = catalog.get(action)
    if not isinstance(declared, dict):
        offered = ", ".join(sorted(str(name) for name in catalog)) or "none"
        raise CommandRefused(f"device {device_id!r} has no action {action!r}; it offers: {offered}")
    details = action_details(reported.get(ACTION_DETAILS_KEY), action)
    checked, problems = check_arguments(action, declared, args, details)
    if problems:
        raise CommandRefused(f"action {action!r}: " + "; ".join(problems))
    full = {**checked, **args}  # as given; the defaults the caller left out added
    duration_s = expected_duration_s(details, full)
    if timeout_s is None:
        return Fit(device_id, full, default_timeout_s(duration_s))
    if timeout_s <= duration_s:
        raise TimeoutTooShort(
            f"action {action!r} takes {duration_s:g} s on {device_id!r}: give a timeout_s "
            f"longer than that, or none ({default_timeout_s(duration_s):g} s)",
            ("body", "timeout_s"),
        )
    return Fit(device_id, full, timeout_s)


def fit_group(
    devices: Iterable[tuple[str, Mapping[str, Any]]],
    action: str,
    args: Mapping[str, Any],
    timeout_s: float | None,
) -> tuple[list[Fit], dict[str, str]]:
    """:func:`fit_command` for each of ``devices`` (id, reported state): the commands to send,
    and why each other device cannot run it (device id → reason).

    Raises:
        CommandRefused: no device can; with one device, its own refusal.
    """
    fits: list[Fit] = []
    refusals: dict[str, CommandRefused] = {}
    for device_id, reported in devices:
        try:
            fits.append(fit_command(device_id, reported, action, args, timeout_s))
        except CommandRefused as refused:
            refusals[device_id] = refused
    if not fits and len(refusals) == 1:
        raise next(iter(refusals.values()))
    if not fits:
        shown = "; ".join(f"{device}: {why}" for device, why in sorted(refusals.items())[:5])
        raise CommandRefused(f"no device of the {len(refusals)} can run {action!r} ({shown})")
    return fits, {device_id: str(refused) for device_id, refused in refusals.items()}
