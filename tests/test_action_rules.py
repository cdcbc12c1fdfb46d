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
from fieldhub.hub.commands.check import CommandRefused, fit_command
from fieldhub.protocol.actions import ACTION_CATALOG_KEY, ACTION_DETAILS_KEY, ArgDetails

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
        fit_command("dev-1", catalog, "unit.act", {"value": value}, None)
    assert message in str(on_agent.value)
    assert str(on_hub.value) == str(on_agent.value)


@pytest.mark.parametrize(
    ("kind", "value"), [("int", 2**53), ("float", 1), ("bool", False), ("str", "x" * 256)]
)
def test_both_sides_accept_the_edges(kind: str, value: Any) -> None:
    registry = _agent({"int": int, "float": float, "bool": bool, "str": str}[kind])
    registry.bind("unit.act", {"value": value})
    catalog = {ACTION_CATALOG_KEY: {a.name: dict(a.args) for a in registry.describe()}}
    fit_command("dev-1", catalog, "unit.act", {"value": value}, None)  # no refusal


def _described() -> ActionRegistry:
    registry = ActionRegistry()
    registry.add_builtin(
        ActionSpec(
            name="socket.cycle",
            handler=_noop,
            args={"off_s": float},
            details={"off_s": ArgDetails(default=10.0, min=0.1, max=3600, unit="s")},
            duration_s=10,
            duration_arg="off_s",
        )
    )
    return registry


def _reported(registry: ActionRegistry, *, details: bool = True) -> dict[str, Any]:
    """What the agent reports (``agent/service.py``); without the details, as an older one."""
    described = registry.describe()
    state: dict[str, Any] = {ACTION_CATALOG_KEY: {a.name: dict(a.args) for a in described}}
    if details:
        state[ACTION_DETAILS_KEY] = {a.name: dict(a.details) for a in described if a.details}
    return state


@pytest.mark.parametrize(("off_s", "message"), [(0.05, "at least 0.1 s"), (7200, "at most 3600 s")])
def test_hub_and_agent_refuse_an_argument_out_of_its_declared_range_alike(
    off_s: float, message: str
) -> None:
    registry = _described()
    with pytest.raises(InvalidArguments) as on_agent:
        registry.bind("socket.cycle", {"off_s": off_s})
    with pytest.raises(CommandRefused) as on_hub:
        fit_command("dev-1", _reported(registry), "socket.cycle", {"off_s": off_s}, None)
    assert message in str(on_agent.value)
    assert str(on_hub.value) == str(on_agent.value)


def test_a_left_out_argument_takes_its_default_and_the_timeout_follows_the_duration() -> None:
    registry = _described()
    assert registry.bind("socket.cycle", {}).args == {"off_s": 10.0}
    fit = fit_command("dev-1", _reported(registry), "socket.cycle", {}, None)
    assert fit.args == {"off_s": 10.0}
    assert fit.timeout_s == 20.0  # 10 s x 1.5 + 5 s: a 10-s cycle is not timed out at 10 s
    longer = fit_command("dev-1", _reported(registry), "socket.cycle", {"off_s": 60}, None)
    assert (longer.args, longer.timeout_s) == ({"off_s": 60}, 95.0)
    with pytest.raises(CommandRefused) as short:
        fit_command("dev-1", _reported(registry), "socket.cycle", {}, 10)
    assert short.value.loc == ("body", "timeout_s")
    assert "takes 10 s" in str(short.value)
    assert fit_command("dev-1", _reported(registry), "socket.cycle", {}, 12).timeout_s == 12


def test_old_and_new_sides_keep_working_together() -> None:
    """A newer hub reading an older agent (no details) checks types only, every argument
    required, and waits 10 s; an older hub ignores the details key (unknown to it) and reads
    the catalog's usual shape."""
    older = _reported(_described(), details=False)
    fit = fit_command("dev-1", older, "socket.cycle", {"off_s": 0.05}, None)
    assert (fit.args, fit.timeout_s) == ({"off_s": 0.05}, 10.0)  # the device judges the range
    with pytest.raises(CommandRefused, match="missing argument 'off_s'"):
        fit_command("dev-1", older, "socket.cycle", {}, None)
    reported = _reported(_described())
    assert reported[ACTION_CATALOG_KEY] == {"socket.cycle": {"off_s": "float"}}
    # Malformed details (a device's bug, a future shape) are ignored, never fatal.
    for junk in ([1, 2], {"socket.cycle": "fast"}, {"socket.cycle": {"args": {"off_s": 3}}}):
        state = {**reported, ACTION_DETAILS_KEY: junk}
        fit = fit_command("dev-1", state, "socket.cycle", {"off_s": 1}, None)
        assert fit.timeout_s == 10.0
