"""The agent's action registry: only registered names run, arguments are checked before
anything runs, and site actions are real programs that are killed, with their children, when
they run over."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml

from fieldhub.agent.actions import (
    ActionDefinitionError,
    ActionRegistry,
    InvalidArguments,
    SiteAction,
    UnknownAction,
)
from fieldhub.agent.units.base import ActionSpec

SH = "/bin/sh"


def site(name: str, script: str, **fields: Any) -> SiteAction:
    """A site action as agent.yaml would declare it (through the same conversion)."""
    return msgspec.convert(
        {"name": name, "command": [SH, "-c", script], **fields}, SiteAction, strict=False
    )


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for a reaper counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


async def until(condition: Callable[[], bool], within_s: float = 5.0) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.02)


async def gone(pid: int) -> bool:
    await until(lambda: not alive(pid))
    return True


class Socket:
    """A pretend relay with a built-in action, shaped like a unit's."""

    def __init__(self) -> None:
        self.cycles: list[float] = []

    async def cycle(self, off_s: float) -> dict[str, float]:
        if off_s > 60:
            raise ValueError("off_s must be at most 60")
        self.cycles.append(off_s)
        return {"off_s": off_s}

    def spec(self) -> ActionSpec:
        return ActionSpec(
            name="socket.cycle",
            handler=self.cycle,
            args={"off_s": float},
            description="Power-cycle the socket",
        )


@pytest.fixture
def socket() -> Socket:
    return Socket()


@pytest.fixture
def registry(socket: Socket) -> ActionRegistry:
    registry = ActionRegistry(output_limit=1000, kill_grace_s=0.5)
    registry.add_builtin(socket.spec())
    registry.add_site(site("modem.restart", "echo restarting", args={"delay_s": "int"}))
    return registry


# -- names and arguments ------------------------------------------------------------------


def test_unknown_action_is_named(registry: ActionRegistry) -> None:
    with pytest.raises(UnknownAction, match=r"unknown action 'exec\.python'"):
        registry.bind("exec.python", {"code": "import os"})


def test_every_argument_problem_is_named_and_nothing_runs(
    registry: ActionRegistry, socket: Socket
) -> None:
    with pytest.raises(InvalidArguments) as caught:
        registry.bind("modem.restart", {"delay": 5, "force": True})
    assert str(caught.value) == (
        "action 'modem.restart': missing argument 'delay_s' (int); "
        "unexpected argument 'delay'; unexpected argument 'force'"
    )
    with pytest.raises(InvalidArguments, match=r"argument 'off_s' must be float, got str"):
        registry.bind("socket.cycle", {"off_s": "5"})
    assert socket.cycles == []


@pytest.mark.parametrize(
    ("kind", "value", "accepted"),
    [
        ("int", 5, 5),
        ("int", True, None),  # JSON true is not a number
        ("int", 5.0, None),
        ("int", 2**60, None),
        ("float", 5, 5.0),  # an int is a fine float
        ("float", False, None),
        ("bool", True, True),
        ("bool", 1, None),
        ("str", "x" * 256, "x" * 256),
        ("str", "x" * 257, None),
        ("str", "a\0b", None),
        ("str", None, None),
        ("str", ["a"], None),
    ],
)
def test_argument_types_are_strict(kind: str, value: object, accepted: object) -> None:
    registry = ActionRegistry()
    registry.add_site(site("x.run", "true", args={"v": kind}))
    if accepted is None:
        with pytest.raises(InvalidArguments, match="argument 'v'"):
            registry.bind("x.run", {"v": value})
    else:
        bound = registry.bind("x.run", {"v": value})
        assert bound.args == {"v": accepted}
        assert type(bound.args["v"]) is type(accepted)


def test_bad_definitions_are_refused(socket: Socket) -> None:
    registry = ActionRegistry()
    registry.add_builtin(socket.spec())
    with pytest.raises(ActionDefinitionError, match="defined twice"):
        registry.add_site(site("socket.cycle", "true"))
    with pytest.raises(ActionDefinitionError, match="has type"):
        registry.add_builtin(ActionSpec(name="a.b", handler=socket.cycle, args={"x": list}))
    with pytest.raises(ActionDefinitionError, match="action name 'Bad Name'"):
        registry.add_builtin(ActionSpec(name="Bad Name", handler=socket.cycle))
    with pytest.raises(ActionDefinitionError, match="argument name 'X-1'"):
        registry.add_builtin(ActionSpec(name="a.c", handler=socket.cycle, args={"X-1": int}))


def test_site_action_config_is_checked() -> None:
    with pytest.raises(msgspec.ValidationError, match="absolute path"):
        msgspec.convert({"name": "a.b", "command": ["reboot"]}, SiteAction)
    with pytest.raises(msgspec.ValidationError, match="args"):
        msgspec.convert(
            {"name": "a.b", "command": ["/sbin/reboot"], "args": {"x": "list"}}, SiteAction
        )
    with pytest.raises(msgspec.ValidationError, match="timeout_s"):
        msgspec.convert({"name": "a.b", "command": ["/sbin/reboot"], "timeout_s": 0}, SiteAction)
    with pytest.raises(msgspec.ValidationError, match="unknown field `shell`"):
        msgspec.convert({"name": "a.b", "command": ["/sbin/reboot"], "shell": True}, SiteAction)


def test_the_documented_site_actions_load() -> None:
    doc = (Path(__file__).parent.parent / "docs" / "agent-actions.md").read_text()
    [block] = [b for b in re.findall(r"```yaml\n(.*?)```", doc, re.S) if "actions:" in b]
    actions = msgspec.convert(yaml.safe_load(block)["actions"], list[SiteAction], strict=False)
    registry = ActionRegistry()
    for action in actions:
        registry.add_site(action)
    assert registry.bind("modem.restart", {"delay_s": 5}).args == {"delay_s": 5}
    assert [a.name for a in registry.describe()] == ["log.tail", "modem.restart"]


# -- built-ins ---------------------------------------------------------------------------


async def test_builtin_runs_with_checked_arguments(
    registry: ActionRegistry, socket: Socket
) -> None:
    outcome = await registry.run(registry.bind("socket.cycle", {"off_s": 5}))
    assert outcome.ok
    assert outcome.result == {"off_s": 5.0}
    assert socket.cycles == [5.0]


async def test_builtin_refusal_and_fault_are_outcomes(registry: ActionRegistry) -> None:
    refused = await registry.run(registry.bind("socket.cycle", {"off_s": 600}))
    assert (refused.ok, refused.error) == (False, "off_s must be at most 60")

    async def broken() -> None:
        raise OSError("pin 17 is busy")

    async def slow() -> None:
        await asyncio.sleep(10)

    async def odd() -> object:
        return {"pin": object()}

    quick = ActionRegistry(builtin_timeout_s=0.2)
    for name, handler in (("x.broken", broken), ("x.slow", slow), ("x.odd", odd)):
        quick.add_builtin(ActionSpec(name=name, handler=handler))
    assert (await quick.run(quick.bind("x.broken", {}))).error == "OSError: pin 17 is busy"
    assert (await quick.run(quick.bind("x.slow", {}))).error == "timed out after 0.2 s"
    assert "not JSON" in (await quick.run(quick.bind("x.odd", {}))).error


async def test_a_builtin_may_take_its_declared_duration_beyond_the_timeout() -> None:
    """A power cycle of ``off_s`` seconds is not cut off by the registry's timeout: the
    action's declared duration (with its arguments) comes on top of it."""

    async def wait(seconds: float) -> dict[str, float]:
        await asyncio.sleep(seconds)
        return {"waited_s": seconds}

    registry = ActionRegistry(builtin_timeout_s=0.2)
    registry.add_builtin(
        ActionSpec(name="x.wait", handler=wait, args={"seconds": float}, duration_arg="seconds")
    )
    assert (await registry.run(registry.bind("x.wait", {"seconds": 0.5}))).ok
    registry.add_builtin(ActionSpec(name="x.fixed", handler=wait, args={"seconds": float}))
    late = await registry.run(registry.bind("x.fixed", {"seconds": 0.5}))
    assert late.error == "timed out after 0.2 s"


# -- site actions --------------------------------------------------------------------------


async def test_site_action_gets_arguments_as_environment_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FIELDHUB_BROKER", "mqtt://atm-1:s3cret@hub:1883")
    registry = ActionRegistry()
    registry.add_site(
        site(
            "door.note",
            'printf "%s|%s|%s|%s|%s" "$FIELDHUB_ARG_TEXT" "$FIELDHUB_ARG_N" '
            '"$FIELDHUB_ARG_LOUD" "$FIELDHUB_ORIGIN" "$FIELDHUB_BROKER"; echo oops >&2; exit 3',
            args={"text": "str", "n": "int", "loud": "bool"},
        )
    )
    hostile = "$(touch /tmp/pwned); --force"
    bound = registry.bind("door.note", {"text": hostile, "n": 7, "loud": False})
    outcome = await registry.run(bound, origin="c-1")
    assert not outcome.ok
    assert outcome.error == "exit code 3: oops"
    assert outcome.result["exit_code"] == 3
    assert outcome.result["stdout"] == f"{hostile}|7|false|c-1|"  # the agent's env stays home
    assert outcome.result["stderr"] == "oops\n"
    assert not await asyncio.to_thread(Path("/tmp/pwned").exists)


async def test_site_action_output_is_limited(registry: ActionRegistry) -> None:
    registry.add_site(site("log.dump", "head -c 100000 /dev/zero | tr '\\0' a; echo done >&2"))
    outcome = await registry.run(registry.bind("log.dump", {}))
    assert outcome.ok
    assert outcome.result["stdout"] == "a" * 1000
    assert outcome.result["dropped_bytes"] == {"stdout": 99000, "stderr": 0}
    assert outcome.result["stderr"] == "done\n"


async def test_site_action_over_time_is_killed_with_its_children(tmp_path: Path) -> None:
    registry = ActionRegistry(kill_grace_s=0.3)
    pids = tmp_path / "pids"
    # The script ignores SIGTERM, so only the group-wide SIGKILL ends it.
    registry.add_site(
        site(
            "slow.job",
            f"trap '' TERM; sleep 30 & echo $$ $! > {pids}; wait",
            timeout_s=0.5,
        )
    )
    started = time.monotonic()
    outcome = await registry.run(registry.bind("slow.job", {}))
    assert time.monotonic() - started < 3
    assert not outcome.ok
    assert outcome.error == "timed out after 0.5 s; killed"
    shell, child = map(int, pids.read_text().split())
    assert await gone(shell)
    assert await gone(child)


async def test_what_an_action_leaves_running_is_killed_when_it_exits(tmp_path: Path) -> None:
    registry = ActionRegistry()
    pid_file = tmp_path / "pid"
    registry.add_site(site("fork.exit", f"sleep 30 & echo $! > {pid_file}; echo bye"))
    started = time.monotonic()
    outcome = await registry.run(registry.bind("fork.exit", {}))
    assert time.monotonic() - started < 2  # not held until the timeout by sleep's open stdout
    assert outcome.ok
    assert outcome.result["stdout"] == "bye\n"
    assert await gone(int(pid_file.read_text()))


async def test_cancelled_run_kills_the_program(tmp_path: Path) -> None:
    registry = ActionRegistry()
    pid_file = tmp_path / "pid"
    registry.add_site(site("long.job", f"echo $$ > {pid_file}; exec sleep 30"))
    run = asyncio.create_task(registry.run(registry.bind("long.job", {})))
    await until(lambda: pid_file.exists() and pid_file.read_text().strip() != "")
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert await gone(int(pid_file.read_text()))


async def test_missing_program_is_an_outcome() -> None:
    registry = ActionRegistry()
    registry.add_site(
        msgspec.convert({"name": "x.y", "command": ["/nonexistent/tool"]}, SiteAction)
    )
    outcome = await registry.run(registry.bind("x.y", {}))
    assert not outcome.ok
    assert outcome.error.startswith("cannot start /nonexistent/tool")


async def test_runs_at_once_are_bounded(tmp_path: Path) -> None:
    registry = ActionRegistry(max_concurrent=2)
    log = tmp_path / "log"
    registry.add_site(site("x.run", f"echo start >> {log}; sleep 0.5; echo end >> {log}"))
    bound = registry.bind("x.run", {})
    await asyncio.gather(*(registry.run(bound) for _ in range(5)))
    running, most = 0, 0
    for line in log.read_text().split():
        running += 1 if line == "start" else -1
        most = max(most, running)
    assert most == 2
    assert log.read_text().count("start") == 5
