"""The hub and the agent judge a command's arguments by one rule (``protocol/actions.py``).

Before, each side had its own copy and they disagreed: the hub queued an int beyond 2**53, a
string of 10,000 characters or one with NUL for the device to refuse later, while the agent
refused them. Now the hub's answer (422 before anything is queued) and the agent's refusal
say the same thing for every kind of argument.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from fieldhub.agent.actions import ActionRegistry, InvalidArguments
from fieldhub.agent.units.base import ActionSpec
from fieldhub.hub.commands.check import CommandRefused, check_command
from fieldhub.protocol.actions import ACTION_CATALOG_KEY

CASES = [
    pytest.param("int", 2**53 + 1, "must be an int within ±2**53", id="int-too-large"),
    pytest.param("int", True, "must be int, got bool", id="bool-is-not-int"),
    pytest.param("float", math.inf, "must be a finite number", id="float-infinite"),
    pytest.param("float", "5", "must be float, got str", id="string-is-not-number"),
    pytest.param("bool", 1, "must be bool, got int", id="int-is-not-bool"),
    pytest.param("str", "x" * 257, "at most 256 characters", id="str-too-long"),
    pytest.param("str", "a\0b", "NUL", id="str-with-nul"),
    pytest.param("str", None, "must be str, got null", id="null-is-not-str"),
]


async def _noop(**_: Any) -> None:
    return None


def _agent(kind: type) -> ActionRegistry:
    registry = ActionRegistry()
    registry.add_builtin(ActionSpec(name="unit.act", handler=_noop, args={"value": kind}))
    return registry


@pytest.mark.parametrize(("kind", "value", "message"), CASES)
def test_hub_and_agent_refuse_the_same_arguments_alike(kind: str, value: Any, message: str) -> None:
    registry = _agent({"int": int, "float": float, "bool": bool, "str": str}[kind])
    with pytest.raises(InvalidArguments) as on_agent:
        registry.bind("unit.act", {"value": value})
    catalog = {ACTION_CATALOG_KEY: {a.name: dict(a.args) for a in registry.describe()}}
    with pytest.raises(CommandRefused) as on_hub:
        check_command("dev-1", catalog, "unit.act", {"value": value})
    assert message in str(on_agent.value)
    assert str(on_hub.value) == str(on_agent.value)


@pytest.mark.parametrize(
    ("kind", "value"), [("int", 2**53), ("float", 1), ("bool", False), ("str", "x" * 256)]
)
def test_both_sides_accept_the_edges(kind: str, value: Any) -> None:
    registry = _agent({"int": int, "float": float, "bool": bool, "str": str}[kind])
    registry.bind("unit.act", {"value": value})
    catalog = {ACTION_CATALOG_KEY: {a.name: dict(a.args) for a in registry.describe()}}
    check_command("dev-1", catalog, "unit.act", {"value": value})  # no refusal
