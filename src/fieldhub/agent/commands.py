"""Commands from the hub, run at most once each, answered on the hub's reply topic.

The wire contract (``docs/protocol.md``, cmd and reply) lets the transport deliver a command
more than once: MQTT QoS 1 redelivers after a reconnect, and the hub resends a command it has
no reply for. Locking a door twice is harmless; power-cycling a socket twice is not. So every
command id goes through this state machine, kept in SQLite (``_command_store``)::

    (unknown) ──expired / unknown action / bad args / log full──► refused   (nothing stored)
        │
        └─ claim: row 'running', committed to disk ─► action runs ─► reply sent, then
                         │                                          'done' + reply stored
                         │
                         └── agent killed, crashed, lost power ──► next start: 'done' with
                                                                   "interrupted, not retried"

The hub hears of a command twice only if it takes a while: an action still running
``ACCEPTED_AFTER_S`` after its claim gets a ``stage: accepted`` reply ("recorded, still
running"); a quicker one gets only its outcome, which the hub takes as acknowledged too.

The outcome goes to the hub first and to the log (committed to disk) after, so the reply does
not wait for a disk sync. Nothing is lost by the order:

- Until the write is queued on the store's thread, this delivery stays in ``_inflight`` and a
  redelivery is answered with the outcome in memory; after that, a redelivery's look at the
  log runs on that thread, behind the write, and finds ``done``. No delivery finds the row
  ``running`` while the outcome exists, so none hears "interrupted" by mistake.
- A crash or power cut between reply and write leaves the row ``running``: the next start
  answers "interrupted, not retried", as it did for one between the action and the write
  (the window is the same sync). It never runs again. A hub that did get the outcome keeps it
  and counts the later "interrupted" as a duplicate; one that did not hears "interrupted",
  as it did when the reply waited for the write and so was never sent.

- A delivery of an id this process is running now waits for that run and gets its reply;
  if the action has started, it is told "accepted" at once as well (the first "accepted" may
  be what was lost, and the hub keeps asking until it hears that the device took it).
- A delivery of a ``done`` id gets the stored reply; the action does not run again.
- A ``running`` row of an earlier agent process was cut short: the action may or may not
  have had its effect, so it is answered "interrupted, not retried" and never re-run. The
  same reply is announced to the hub when the agent starts again (:meth:`recover`).

Refusals run nothing and are not stored: a redelivered refusal is refused again the same
way. Every reply goes out through ``publish_reply(hub instance, Reply)``; a reply lost on the
way is not lost for good: the hub asks again and is answered from the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final, ParamSpec, Self, TypeVar

from fieldhub.agent._command_store import INTERRUPTED, CommandLog, Stored, StoreFull
from fieldhub.agent.actions import ActionError, ActionRegistry
from fieldhub.clock import now_ms
from fieldhub.logthrottle import LogThrottle, held_back
from fieldhub.protocol import Command, Reply

__all__ = ["ACCEPTED_AFTER_S", "INTERRUPTED", "CommandHandler", "CommandStats", "PublishReply"]

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

PublishReply = Callable[[str, Reply], Awaitable[None] | None]
"""``publish_reply(hub_instance, reply)``: sends a reply on ``reply/{hub_instance}``."""

MAX_ERROR: Final = 1024
"""The wire contract's limit on a reply's ``error``."""
EXPIRED: Final = "expired"
ACCEPTED_AFTER_S: Final = 0.05
"""An action still running this long after its claim is announced as accepted. Built-in
actions (a relay, a lock, an LED) end well within it, so they cost one reply, not two, and
the hub learns nothing later than it would have; a person watching a site program of seconds
still sees it acknowledged at once (50 ms is below what they notice)."""


@dataclass(slots=True)
class CommandStats:
    """Counters since the agent started (for the technician page and the logs)."""

    received: int = 0
    """Deliveries, duplicates included."""
    executed: int = 0
    succeeded: int = 0
    failed: int = 0
    """Executed, and the action reported failure."""
    answered_from_log: int = 0
    """Redeliveries answered with a stored (or in-progress) reply instead of running again."""
    refused: int = 0
    """Not executed: expired, unknown action, bad arguments, busy, storage trouble."""
    interrupted: int = 0
    """Found cut short by an earlier crash or stop; answered, never re-run."""
    publish_failures: int = 0


class CommandHandler:
    """Takes commands from the uplink, runs each id at most once, and replies.

    Use as an async context manager: entering opens the log (``db_path``) and announces
    commands an earlier run left unfinished; leaving cancels runs still going (their site
    programs are killed; they count as interrupted at the next start).

    Args:
        registry: the actions that may run.
        db_path: the agent's SQLite file for the command log.
        publish_reply: how replies reach the hub (the uplink's).
        max_pending: commands being handled at once; more are refused as busy.
        max_rows, retain_s: bounds of the command log (see ``_command_store``).
        clock: wall clock in epoch ms (tests move it).
    """

    def __init__(
        self,
        registry: ActionRegistry,
        db_path: Path,
        publish_reply: PublishReply,
        *,
        max_pending: int = 64,
        max_rows: int = 100_000,
        retain_s: float = 3600.0,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self._registry = registry
        self._db_path = db_path
        self._publish_reply = publish_reply
        self._max_pending = max_pending
        self._max_rows = max_rows
        self._retain_ms = round(retain_s * 1000)
        self._clock = clock
        self._executor: ThreadPoolExecutor | None = None
        self._store: CommandLog | None = None
        self._inflight: dict[str, asyncio.Future[Reply | None]] = {}
        self._started: set[str] = set()  # ids of _inflight whose action runs now
        self._tasks: set[asyncio.Task[None]] = set()
        self._throttle = LogThrottle()
        self.stats = CommandStats()

    async def __aenter__(self) -> Self:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="fieldhub-commands")
        try:
            self._store = await self._db(
                CommandLog, self._db_path, max_rows=self._max_rows, retain_ms=self._retain_ms
            )
            await self.recover()
        except BaseException:
            await self._shutdown_db()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        tasks, self._tasks = self._tasks, set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._shutdown_db()

    async def recover(self) -> int:
        """Mark what an earlier run left running as interrupted, and tell the hubs that
        asked. Returns how many there were. Entering the handler does this once."""
        marked = await self._db(self._open_store().interrupt, self._clock())
        for reply_to, reply in marked:
            log.warning("command %s was interrupted by the last stop; not retried", reply.id)
            self.stats.interrupted += 1
            await self._publish(reply_to, reply)
        return len(marked)

    def on_command(self, command: Command) -> None:
        """Take a command from the uplink (on the event loop; returns at once)."""
        self.stats.received += 1
        if self._store is None:
            raise RuntimeError("CommandHandler is not open; use it with 'async with'.")
        running = self._inflight.get(command.id)
        if running is not None:  # delivered twice while the first delivery is being handled
            if command.id in self._started:
                accepted = Reply(id=command.id, ok=True, ts=self._clock(), stage="accepted")
                self._publish_soon(command.reply, accepted)
            self._spawn(self._answer_when_done(command, running), command.id)
            return
        if len(self._inflight) >= self._max_pending:
            self._spawn(self._send(command, self._refuse(command, "busy", "too many commands")))
            return
        done: asyncio.Future[Reply | None] = asyncio.get_running_loop().create_future()
        self._inflight[command.id] = done
        self._spawn(self._handle(command, done), command.id)

    # -- one delivery ---------------------------------------------------------------------

    async def _handle(self, command: Command, done: asyncio.Future[Reply | None]) -> None:
        reply = None
        ran = False
        try:
            reply, ran = await self._once(command)
            done.set_result(reply)  # deliveries from now on are answered with it
            await self._publish(command.reply, reply)
        finally:
            if ran and reply is not None:
                # Queued before this delivery leaves ``_inflight``: a later one looks the id
                # up in the log, on the same thread, so after this write.
                self._store_outcome(reply)
            del self._inflight[command.id]
            if not done.done():
                done.set_result(reply)

    async def _once(self, command: Command) -> tuple[Reply, bool]:
        """The reply to one delivery, and whether the action ran (its outcome is to store)."""
        store = self._open_store()
        now = self._clock()
        # Checked before the log is touched, so that a new command's only trip to the log
        # before it runs is its claim; a delivered-before one is answered from the log below
        # whatever these checks say now.
        refusal: tuple[str, str] | None = None
        bound = None
        if command.expires <= now:
            refusal = (EXPIRED, EXPIRED)
        else:
            try:
                bound = self._registry.bind(command.action, command.args)
            except ActionError as exc:
                refusal = (type(exc).__name__, str(exc))
        try:
            claimed = False
            if bound is not None:
                try:
                    claimed = await self._db(
                        store.claim, command.id, command.action, command.reply, now, command.expires
                    )
                except StoreFull as exc:
                    refusal = ("busy", f"busy: {exc}")
            if bound is None or not claimed:  # delivered before (the id is in the log), or refused
                stored = await self._db(store.lookup, command.id)
                if stored is not None or refusal is None:
                    return await self._from_log(command, stored), False
                return self._refuse(command, *refusal), False
        except sqlite3.Error as exc:  # cannot promise "at most once": do not run
            return self._refuse(command, "storage", f"agent storage error, not run: {exc}"), False

        self.stats.executed += 1
        # Recorded as running; the hub hears so only if the action takes its time.
        accepted = Reply(id=command.id, ok=True, ts=now, stage="accepted")
        timer = asyncio.get_running_loop().call_later(
            ACCEPTED_AFTER_S, self._publish_soon, command.reply, accepted
        )
        self._started.add(command.id)
        try:
            outcome = await self._registry.run(bound, origin=command.id)
        finally:
            timer.cancel()
            self._started.discard(command.id)
        reply = Reply(
            id=command.id,
            ok=outcome.ok,
            ts=self._clock(),
            result=outcome.result,
            error=outcome.error[:MAX_ERROR],
        )
        if reply.ok:
            self.stats.succeeded += 1
        else:
            self.stats.failed += 1
        log.info("command %s %s: %s", command.id, command.action, "ok" if reply.ok else reply.error)
        return reply, True

    async def _from_log(self, command: Command, stored: Stored | None) -> Reply:
        """The answer to an id the log already holds; never runs anything."""
        if stored is not None and stored.reply is not None:
            self.stats.answered_from_log += 1
            return stored.reply
        self.stats.interrupted += 1
        now = self._clock()
        if stored is not None and not stored.mine:
            marked = await self._db(self._open_store().interrupt, now, command.id)
            if marked:
                return marked[0][1]
        return Reply(id=command.id, ok=False, ts=now, error=INTERRUPTED)

    async def _answer_when_done(
        self, command: Command, running: asyncio.Future[Reply | None]
    ) -> None:
        reply = await asyncio.shield(running)
        if reply is not None:
            self.stats.answered_from_log += 1
        await self._publish(command.reply, reply)

    def _refuse(self, command: Command, reason: str, error: str) -> Reply:
        """A reply saying no; counted, and logged once a minute per reason and action."""
        self.stats.refused += 1
        held = self._throttle.due((reason, command.action))
        if held is not None:
            log.warning(
                "command %s (%s) refused: %s%s",
                command.id,
                command.action,
                error[:200],
                held_back(held),
            )
        return Reply(id=command.id, ok=False, ts=self._clock(), error=error[:MAX_ERROR])

    # -- plumbing -------------------------------------------------------------------------

    async def _send(self, command: Command, reply: Reply) -> None:
        await self._publish(command.reply, reply)

    async def _publish(self, reply_to: str, reply: Reply | None) -> None:
        if reply is None:
            return
        sent = self._publish_now(reply_to, reply)
        if sent is not None:
            await self._settle(sent, reply.id)

    def _publish_soon(self, reply_to: str, reply: Reply) -> None:
        """Publish from a loop callback. The publisher is called here, not in a task, so that
        this reply goes out before any the command sends after it."""
        sent = self._publish_now(reply_to, reply)
        if sent is not None:
            self._spawn(self._settle(sent, reply.id), reply.id)

    def _publish_now(self, reply_to: str, reply: Reply) -> Awaitable[None] | None:
        """Hand a reply to the publisher; what is left to await, if it is asynchronous."""
        try:
            sent = self._publish_reply(reply_to, reply)
        except Exception as exc:  # the hub will ask again and be answered from the log
            self._publish_failed(reply.id, exc)
            return None
        return sent if inspect.isawaitable(sent) else None

    async def _settle(self, sent: Awaitable[None], command_id: str) -> None:
        try:
            await sent
        except Exception as exc:  # the hub will ask again and be answered from the log
            self._publish_failed(command_id, exc)

    def _publish_failed(self, command_id: str, exc: Exception) -> None:
        self.stats.publish_failures += 1
        held = self._throttle.due(("publish", type(exc)))
        if held is not None:
            log.warning("reply to command %s not sent: %s%s", command_id, exc, held_back(held))

    def _store_outcome(self, reply: Reply) -> None:
        """Queue a finished command's reply for the log; nothing waits for it (see the module
        docstring). The store's thread runs calls in order, closing the file last."""
        executor, store = self._executor, self._store
        if executor is None or store is None:  # closed meanwhile: the next start says so
            return
        executor.submit(_finish, store, reply)

    def _spawn(self, work: Coroutine[object, object, None], command_id: str = "") -> None:
        task = asyncio.get_running_loop().create_task(work, name=f"command {command_id}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("command task %s failed", task.get_name(), exc_info=exc)

    def _open_store(self) -> CommandLog:
        if self._store is None:
            raise RuntimeError("CommandHandler is not open; use it with 'async with'.")
        return self._store

    async def _db(self, call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a blocking store call on the store's own thread (SQLite wants one thread)."""
        if self._executor is None:
            raise RuntimeError("CommandHandler is not open; use it with 'async with'.")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: call(*args, **kwargs))

    async def _shutdown_db(self) -> None:
        store, self._store = self._store, None
        executor, self._executor = self._executor, None
        if executor is None:
            return
        if store is not None:
            with contextlib.suppress(sqlite3.Error):
                await asyncio.get_running_loop().run_in_executor(executor, store.close)
        executor.shutdown(wait=False)


def _finish(store: CommandLog, reply: Reply) -> None:
    """Store an outcome, on the store's thread. Nobody awaits this: a failure is logged here,
    and a redelivery will hear "interrupted" (the command ran; it is never run again)."""
    try:
        store.finish(reply, reply.ts)
    except Exception:
        log.exception("command %s: cannot store its reply", reply.id)
