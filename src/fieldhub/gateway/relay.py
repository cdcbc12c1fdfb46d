"""Commands and desired state for the gateway's children, run through the LAN side.

The hub sends a child's command on the child's ``cmd`` topic, which the gateway reads; the
controller runs it (``ports.Lan.run_command``) and the gateway answers on the child's ``reply``
topic as the child would (docs/protocol.md). At most once: the controller itself remembers
the ids it ran and answers a repeated one with the first outcome (the LAN side's promise, which
also holds across gateway restarts); here, a redelivery while the first delivery still runs is
answered "accepted" and waits for that run instead of starting a second one, and recent
outcomes are answered from memory without a LAN trip. A command past its expiry is refused and
never reaches the controller.

Desired state (the twin) goes to the controller as the action ``state.set`` with the desired
state as its arguments, once per version; the outcome's ``result.errors`` (key → reason)
become the child's ``desired_errors``, reported with ``desired_version`` through its outbox.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Final

from fieldhub.agent._tasks import log_if_failed
from fieldhub.agent.reporting import StateValue
from fieldhub.clock import now_ms
from fieldhub.gateway.ports import CommandOutcome, Lan
from fieldhub.lan import DESIRED_ACTION
from fieldhub.protocol import Command, Desired, Reply

__all__ = ["DESIRED_ACTION", "Relay"]

log = logging.getLogger(__name__)

_REMEMBERED: Final = 1024  # outcomes answered from memory, per gateway
_MAX_ERROR: Final = 1024

PublishReply = Callable[[str, str, Reply], None]
"""``publish_reply(child_id, hub_instance, reply)``."""
ReportState = Callable[[str, Mapping[str, StateValue]], None]
"""``report_state(child_id, changes)``: into the child's outbox."""


def _reply(command_id: str, outcome: CommandOutcome) -> Reply:
    if outcome.status == "succeeded":
        return Reply(id=command_id, ok=True, ts=now_ms(), result=outcome.result)
    why = {
        "failed": "failed",
        "timed_out": "timed out on the controller",
        "unreachable": "not delivered: the controller is unreachable",
    }[outcome.status]
    error = f"{why}: {outcome.error}" if outcome.error else why
    return Reply(id=command_id, ok=False, ts=now_ms(), error=error[:_MAX_ERROR])


class Relay:
    """Runs children's commands and desired states on their controllers.

    Args:
        lan: the LAN side.
        publish_reply: sends a reply as the child.
        report_state: reports a child's state changes (``desired_version``, ``desired_errors``).
        max_timeout_s: the longest a command may run on a controller, whatever its expiry.
    """

    def __init__(
        self,
        lan: Lan,
        publish_reply: PublishReply,
        report_state: ReportState,
        max_timeout_s: float = 60.0,
    ) -> None:
        self._lan = lan
        self._publish_reply = publish_reply
        self._report_state = report_state
        self._max_timeout_s = max_timeout_s
        self._running: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._done: OrderedDict[tuple[str, str], Reply] = OrderedDict()
        self._desired_version: dict[str, int] = {}
        self.runs = 0  # commands handed to the LAN side
        self.refused = 0  # commands refused here (expired)

    def on_command(self, child_id: str, command: Command) -> None:
        """A command for ``child_id`` arrived (perhaps again)."""
        key = (child_id, command.id)
        done = self._done.get(key)
        if done is not None:
            self._publish_reply(child_id, command.reply, done)
            return
        if key in self._running:
            accepted = Reply(id=command.id, ok=True, ts=now_ms(), stage="accepted")
            self._publish_reply(child_id, command.reply, accepted)
            return
        left_s = (command.expires - now_ms()) / 1000
        if left_s <= 0:
            self.refused += 1
            expired = Reply(id=command.id, ok=False, ts=now_ms(), error="expired")
            self._publish_reply(child_id, command.reply, expired)
            return
        task = asyncio.create_task(
            self._run(child_id, command, min(left_s, self._max_timeout_s)),
            name=f"command-{child_id}",
        )
        task.add_done_callback(log_if_failed)
        self._running[key] = task

    async def _run(self, child_id: str, command: Command, timeout_s: float) -> None:
        key = (child_id, command.id)
        self.runs += 1
        try:
            outcome = await self._lan.run_command(
                child_id, command.id, command.action, dict(command.args), timeout_s
            )
        except Exception as exc:  # the LAN side failed: the hub hears why, the relay goes on
            log.exception("command %s for %s failed in the LAN side", command.id, child_id)
            outcome = CommandOutcome(status="failed", error=f"gateway error: {exc}")
        finally:
            self._running.pop(key, None)
        reply = _reply(command.id, outcome)
        if outcome.status != "unreachable":  # never delivered: a redelivery may try again
            self._done[key] = reply
            while len(self._done) > _REMEMBERED:
                self._done.popitem(last=False)
        self._publish_reply(child_id, command.reply, reply)

    def on_desired(self, child_id: str, desired: Desired) -> None:
        """A desired state for ``child_id`` (retained: again on every connection)."""
        if desired.version <= self._desired_version.get(child_id, 0):
            return
        self._desired_version[child_id] = desired.version
        task = asyncio.create_task(self._converge(child_id, desired), name=f"desired-{child_id}")
        task.add_done_callback(log_if_failed)

    async def _converge(self, child_id: str, desired: Desired) -> None:
        command_id = f"desired-{desired.version}"
        outcome = await self._lan.run_command(
            child_id, command_id, DESIRED_ACTION, dict(desired.state), self._max_timeout_s
        )
        if outcome.status == "unreachable":
            self._desired_version.pop(child_id, None)  # the next delivery tries again
            return
        errors = outcome.result.get("errors") if outcome.status == "succeeded" else None
        if outcome.status != "succeeded":
            errors = {key: outcome.error or outcome.status for key in desired.state}
        self._report_state(
            child_id, {"desired_version": desired.version, "desired_errors": errors or None}
        )
