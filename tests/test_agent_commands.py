"""Commands on the agent run at most once: whatever the transport or the hub redelivers,
whenever, and even across a crash in the middle of a run."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from fieldhub.agent._command_store import CommandLog
from fieldhub.agent.actions import ActionRegistry
from fieldhub.agent.commands import ACCEPTED_AFTER_S, INTERRUPTED, CommandHandler
from fieldhub.agent.units.base import ActionSpec
from fieldhub.clock import now_ms
from fieldhub.protocol import Command, Reply

HOUR_MS = 3_600_000


class Relay:
    """A socket whose power cycles are counted; ``hold`` keeps a cycle going until set."""

    def __init__(self) -> None:
        self.cycles = 0
        self.hold: asyncio.Event | None = None

    async def cycle(self, off_s: float) -> dict[str, Any]:
        if off_s > 60:
            raise ValueError("off_s must be at most 60")
        self.cycles += 1
        if self.hold is not None:
            await self.hold.wait()
        return {"off_s": off_s, "cycle": self.cycles}

    def registry(self) -> ActionRegistry:
        registry = ActionRegistry()
        registry.add_builtin(
            ActionSpec(name="socket.cycle", handler=self.cycle, args={"off_s": float})
        )
        return registry


class Hubside:
    """What the uplink would publish, as the hub would receive it."""

    def __init__(self) -> None:
        self.replies: list[tuple[str, Reply]] = []
        """Final replies (stage ``done``), in order."""
        self.accepted: list[str] = []
        """Ids of commands the agent said it took, in order."""
        self.fail_next = False
        self.stages: list[tuple[str, str]] = []
        """Every reply's id and stage, in the order they were published."""

    def publish(self, instance: str, reply: Reply) -> None:
        if self.fail_next:
            self.fail_next = False
            raise ConnectionError("broker unreachable")
        self.stages.append((reply.id, reply.stage))
        if reply.stage == "accepted":
            assert reply.ok
            self.accepted.append(reply.id)
        else:
            self.replies.append((instance, reply))

    async def until(self, count: int, within_s: float = 5.0) -> list[Reply]:
        deadline = time.monotonic() + within_s
        while len(self.replies) < count:
            assert time.monotonic() < deadline, f"{len(self.replies)} replies, not {count}"
            await asyncio.sleep(0.01)
        return [reply for _instance, reply in self.replies]


async def until(condition: Callable[[], bool], within_s: float = 5.0) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.01)


def command(
    cid: str = "c-1", action: str = "socket.cycle", expires: int | None = None, **args: Any
) -> Command:
    return Command(
        id=cid,
        action=action,
        args=args if args else {"off_s": 5},
        expires=now_ms() + HOUR_MS if expires is None else expires,
        reply="hub-a",
    )


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "agent.db"


@pytest.fixture
def hub() -> Hubside:
    return Hubside()


@pytest.fixture
def relay() -> Relay:
    return Relay()


@asynccontextmanager
async def handler_for(
    relay: Relay, db: Path, hub: Hubside, **options: Any
) -> AsyncIterator[CommandHandler]:
    async with CommandHandler(relay.registry(), db, hub.publish, **options) as handler:
        yield handler


async def test_a_command_runs_and_is_answered(relay: Relay, db: Path, hub: Hubside) -> None:
    async with handler_for(relay, db, hub) as handler:
        handler.on_command(command())
        [reply] = await hub.until(1)
    assert hub.accepted == []  # done within the grace: the outcome alone says it was taken
    assert hub.replies[0][0] == "hub-a"
    assert (reply.id, reply.ok, reply.result) == ("c-1", True, {"off_s": 5.0, "cycle": 1})
    assert relay.cycles == 1
    assert (handler.stats.received, handler.stats.executed, handler.stats.succeeded) == (1, 1, 1)


async def test_a_slow_command_is_acknowledged_before_its_outcome(
    relay: Relay, db: Path, hub: Hubside
) -> None:
    relay.hold = asyncio.Event()
    async with handler_for(relay, db, hub) as handler:
        sent = time.monotonic()
        handler.on_command(command())
        await until(lambda: hub.accepted == ["c-1"])
        assert time.monotonic() - sent >= ACCEPTED_AFTER_S
        assert hub.replies == []  # recorded, still running
        relay.hold.set()
        [reply] = await hub.until(1)
    assert reply.ok
    assert hub.stages == [("c-1", "accepted"), ("c-1", "done")]


async def test_a_duplicate_during_the_run_waits_for_it(
    relay: Relay, db: Path, hub: Hubside
) -> None:
    relay.hold = asyncio.Event()
    async with handler_for(relay, db, hub) as handler:
        handler.on_command(command())
        handler.on_command(command())
        await until(lambda: relay.cycles == 1)
        handler.on_command(command())  # a third, while it runs
        await asyncio.sleep(0.1)
        assert hub.replies == []
        relay.hold.set()
        first, second, third = await hub.until(3)
    assert relay.cycles == 1
    assert first == second == third
    assert first.ok
    assert handler.stats.answered_from_log == 2


async def test_a_redelivery_while_it_runs_hears_at_once_that_it_was_taken(
    relay: Relay, db: Path, hub: Hubside
) -> None:
    # The hub delivers a command again until it hears the device took it: when the first
    # "accepted" was lost, the next delivery must say so without waiting for the outcome.
    relay.hold = asyncio.Event()
    hub.fail_next = True  # the broker is gone as the first "accepted" goes out
    async with handler_for(relay, db, hub) as handler:
        handler.on_command(command())
        await until(lambda: relay.cycles == 1 and hub.fail_next is False)
        await asyncio.sleep(ACCEPTED_AFTER_S * 2)
        assert hub.accepted == []
        handler.on_command(command())  # delivered again, while it runs
        await until(lambda: hub.accepted == ["c-1"])
        assert hub.replies == []
        relay.hold.set()
        first, second = await hub.until(2)
    assert relay.cycles == 1
    assert first == second
    assert first.ok


async def test_a_redelivery_after_the_run_is_answered_from_the_log(
    relay: Relay, db: Path, hub: Hubside
) -> None:
    async with handler_for(relay, db, hub) as handler:
        handler.on_command(command())
        await hub.until(1)
        handler.on_command(command())
        first, second = await hub.until(2)
    assert relay.cycles == 1
    assert second == first  # the very reply, its time included
    assert handler.stats.answered_from_log == 1


async def test_a_redelivery_while_the_outcome_is_being_stored_waits_for_it(
    relay: Relay, db: Path, hub: Hubside, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reply goes out before the log has it; a redelivery in between must neither run
    the action again nor hear "interrupted"."""
    disk = threading.Event()  # a slow card: storing an outcome waits for it
    store_finish = CommandLog.finish

    def slow_finish(store: CommandLog, reply: Reply, now: int) -> None:
        disk.wait(5)
        store_finish(store, reply, now)

    monkeypatch.setattr(CommandLog, "finish", slow_finish)
    async with handler_for(relay, db, hub) as handler:
        handler.on_command(command())
        await hub.until(1)  # answered, not yet stored
        handler.on_command(command())
        await asyncio.sleep(0.1)
        assert len(hub.replies) == 1  # its look at the log queues behind the write
        disk.set()
        first, second = await hub.until(2)
    assert second == first
    assert relay.cycles == 1
    assert handler.stats.answered_from_log == 1


async def test_after_a_restart_the_log_answers(relay: Relay, db: Path, hub: Hubside) -> None:
    async with handler_for(relay, db, hub) as handler:
        handler.on_command(command())
        [before] = await hub.until(1)
    again = Relay()
    async with handler_for(again, db, hub) as handler:
        handler.on_command(command())
        _, after = await hub.until(2)
    assert after == before
    assert again.cycles == 0


AGENT_SCRIPT = """
import asyncio, os, sys
from pathlib import Path
from fieldhub.agent.actions import ActionRegistry
from fieldhub.agent.commands import CommandHandler
from fieldhub.agent.units.base import ActionSpec
from fieldhub.protocol import Command

db, marker, expires = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])

def ran() -> None:
    with marker.open("a") as out:
        out.write("ran\\n")

{cycle_and_publish}

async def main() -> None:
    registry = ActionRegistry()
    registry.add_builtin(ActionSpec(name="socket.cycle", handler=cycle, args={{"off_s": float}}))
    async with CommandHandler(registry, db, publish) as handler:
        handler.on_command(
            Command(id="c-1", action="socket.cycle", args={{"off_s": 5}}, expires=expires,
                    reply="hub-a")
        )
        await asyncio.sleep(3600)

asyncio.run(main())
"""
"""An agent process that takes command c-1 (``socket.cycle``) and dies somewhere in it; the
tests kill it or let it die, then start a handler on the same log."""

CRASHING_AGENT = AGENT_SCRIPT.format(
    cycle_and_publish="""
async def cycle(off_s: float) -> None:
    ran()
    await asyncio.sleep(3600)  # killed in here

def publish(instance, reply):
    pass
"""
)


async def test_a_run_cut_short_by_a_crash_is_never_retried(
    relay: Relay, db: Path, hub: Hubside, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    script = tmp_path / "agent.py"
    script.write_text(CRASHING_AGENT)
    expires = now_ms() + HOUR_MS
    agent = await asyncio.create_subprocess_exec(
        sys.executable, str(script), str(db), str(marker), str(expires)
    )
    try:
        await until(lambda: marker.exists() or agent.returncode is not None, within_s=20)
        assert agent.returncode is None, "the agent died before running the command"
    finally:
        agent.send_signal(signal.SIGKILL)
        await agent.wait()

    async with handler_for(relay, db, hub) as handler:
        [announced] = await hub.until(1)  # told at start, unasked
        handler.on_command(command(expires=expires))  # the hub sends it again
        _, answered = await hub.until(2)
    assert (announced.id, announced.ok, announced.error) == ("c-1", False, INTERRUPTED)
    assert answered == announced
    assert relay.cycles == 0
    assert marker.read_text() == "ran\n"
    assert handler.stats.interrupted == 1


DIES_AFTER_REPLYING = AGENT_SCRIPT.format(
    cycle_and_publish="""
def cycle(off_s: float) -> dict[str, float]:
    ran()
    return {"off_s": off_s}

def publish(instance, reply):
    if reply.stage == "done":  # the outcome is on its way; the agent dies before storing it
        os._exit(9)
"""
)


async def test_a_crash_between_reply_and_log_is_interrupted_not_retried(
    relay: Relay, db: Path, hub: Hubside, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    script = tmp_path / "agent.py"
    script.write_text(DIES_AFTER_REPLYING)
    expires = now_ms() + HOUR_MS
    agent = await asyncio.create_subprocess_exec(
        sys.executable, str(script), str(db), str(marker), str(expires)
    )
    assert await asyncio.wait_for(agent.wait(), 20) == 9
    assert marker.read_text() == "ran\n"

    async with handler_for(relay, db, hub) as handler:
        [announced] = await hub.until(1)
        handler.on_command(command(expires=expires))
        _, answered = await hub.until(2)
    assert (announced.id, announced.ok, announced.error) == ("c-1", False, INTERRUPTED)
    assert answered == announced
    assert relay.cycles == 0


async def test_expired_commands_are_refused_unrun(relay: Relay, db: Path, hub: Hubside) -> None:
    async with handler_for(relay, db, hub) as handler:
        handler.on_command(command("c-old", expires=now_ms() - 1))
        [reply] = await hub.until(1)
    assert (reply.id, reply.ok, reply.error) == ("c-old", False, "expired")
    assert relay.cycles == 0
    assert handler.stats.refused == 1


async def test_a_finished_command_redelivered_after_expiry_gets_its_result(
    relay: Relay, db: Path, hub: Hubside
) -> None:
    clock = FakeClock()
    async with handler_for(relay, db, hub, clock=clock) as handler:
        handler.on_command(command(expires=clock() + 1000))
        await hub.until(1)
        clock.advance(5000)
        handler.on_command(command(expires=clock() - 4000))
        first, second = await hub.until(2)
    assert second == first
    assert second.ok


async def test_bad_commands_get_a_clear_no_and_are_logged_sparingly(
    relay: Relay, db: Path, hub: Hubside, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "fieldhub.agent.commands")
    async with handler_for(relay, db, hub) as handler:
        for n in range(3):
            handler.on_command(command(f"c-x{n}", action="exec.python", code="import os"))
        handler.on_command(command("c-a", off_s="five"))
        handler.on_command(command("c-b", off_s=5, force=True))
        handler.on_command(command("c-c", off_s=600))
        replies = {reply.id: reply for reply in await hub.until(6)}
    assert relay.cycles == 0
    assert replies["c-x0"].error == "unknown action 'exec.python'"
    assert replies["c-a"].error == (
        "action 'socket.cycle': argument 'off_s' must be float, got str"
    )
    assert replies["c-b"].error == "action 'socket.cycle': unexpected argument 'force'"
    assert replies["c-c"].error == "off_s must be at most 60"  # the unit's own refusal
    assert not any(reply.ok for reply in replies.values())
    assert handler.stats.refused == 5  # the unit's refusal ran, and failed
    assert handler.stats.failed == 1
    unknown = [r for r in caplog.records if "exec.python" in r.getMessage()]
    assert len(unknown) == 1  # three refusals, one line


async def test_a_lost_reply_is_sent_again_on_redelivery(
    relay: Relay, db: Path, hub: Hubside
) -> None:
    hub.fail_next = True
    async with handler_for(relay, db, hub) as handler:
        handler.on_command(command())
        await until(lambda: handler.stats.publish_failures == 1)
        handler.on_command(command())
        [reply] = await hub.until(1)
    assert reply.ok
    assert relay.cycles == 1


class FakeClock:
    """Wall clock in epoch ms that tests move."""

    def __init__(self) -> None:
        self.now = now_ms()

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> None:
        self.now += ms


async def test_a_full_log_refuses_rather_than_forgets(relay: Relay, db: Path, hub: Hubside) -> None:
    fake = FakeClock()
    async with handler_for(relay, db, hub, max_rows=2, retain_s=1, clock=fake) as handler:
        for n in range(3):
            handler.on_command(command(f"c-{n}", expires=fake() + 1000))
            await hub.until(n + 1)
        refused = hub.replies[2][1]
        assert refused.error.startswith("busy: the command log holds 2 commands")
        # Once c-0 and c-1 have expired (and the clock-skew margin passed), they may go.
        fake.advance(15 * 60 * 1000)
        handler.on_command(command("c-3", expires=fake() + 1000))
        await hub.until(4)
    assert [reply.ok for _i, reply in hub.replies] == [True, True, False, True]
    assert relay.cycles == 3
