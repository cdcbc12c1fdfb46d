"""Desired state on a controller: the gateway's ``state.set`` (``gateway/relay.py``).

The hub's twin says what a child should be (docs/twin.md); the gateway hands the whole desired
state to the controller once per version as the action ``state.set``. The controller has no
state of its own to set: what can be set is what its actions do, so an action of the file names
the key it applies (``state: relay`` on ``relay.set``, whose one argument takes the value). A
key applies by running that action, with the runner's rules: arguments checked against their
types, a timeout, and at most once per version (the run's id is the ``state.set`` id and the
key, remembered across restarts, so a redelivered version runs nothing again). A key that no
action applies, or whose action fails, is named in ``errors`` with the reason; the gateway
reports those as the child's ``desired_errors``. Keys that applied are reported as the
controller's state, so the twin's ``reported`` side shows them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fieldhub.controller.actions import ActionRunner
from fieldhub.controller.config import ActionConfig

__all__ = ["apply_desired"]


async def apply_desired(
    runner: ActionRunner,
    actions: Mapping[str, ActionConfig],
    command_id: str,
    desired: Mapping[str, Any],
    timeout_s: float,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Apply every key of ``desired``, one action after the other (in key order).

    Returns the outcome for the gateway (``succeeded``, ``result.errors`` naming the keys not
    applied) and the keys that applied, with their values, to report as state.
    """
    by_key = {action.state: action for action in actions.values() if action.state}
    errors: dict[str, str] = {}
    applied: dict[str, Any] = {}
    for key in sorted(desired):
        action = by_key.get(key)
        if action is None:
            errors[key] = "no action of this controller applies it"
            continue
        (arg,) = action.args
        outcome = await runner.run(
            f"{command_id}/{key}", action.name, {arg: desired[key]}, timeout_s
        )
        if outcome.get("status") == "succeeded":
            applied[key] = desired[key]
        else:
            errors[key] = str(outcome.get("error") or outcome.get("status"))[:256]
    return {"status": "succeeded", "result": {"errors": errors}, "error": ""}, applied
