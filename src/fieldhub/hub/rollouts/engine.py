"""Rollouts: one bundle to many devices, in waves, followed to each device's end.

The engine keeps every unfinished rollout in memory and its every change in the database
(``rollouts``, ``rollout_devices``), so a hub that restarts takes them up where they were
(:meth:`Rollouts.load`): the install commands themselves are the command machinery's, which
resends what a device has not taken and answers from the device's log what it has.

What moves a rollout, all handled by one task (:meth:`Rollouts.run`) under one lock:

- the install command's outcome (``CommandService.on_change``): accepted, or failed;
- the device's ``bundle.*`` events, from committed ingest batches (``Ingest.on_commit``), so
  an event is acted on only once it is stored;
- the clock: deadlines (``progress.py``), and the next wave's turn;
- operators: approve, pause, resume, abort (with or without rollback), retry.

The waves' rules (sizes, verdicts) are ``plan.py``'s, a device's states ``progress.py``'s.
A hub drives only the rollouts it holds a lease on (``lease.py``): those it created or took
up, not another live hub's.
Every step of a rollout (created, a wave started, promoted, paused, aborted, completed, an
operator's action) is in the audit log, written in the transaction of the change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from functools import partial
from typing import Any, Final

from sqlalchemy.ext.asyncio import AsyncEngine

from fieldhub.clock import now_ms
from fieldhub.hub.commands.batches import Pace
from fieldhub.hub.commands.check import CommandRefused, Fit, fit_group
from fieldhub.hub.commands.service import CommandService
from fieldhub.hub.devices.directory import DeviceDirectory
from fieldhub.hub.errors import Conflict, Invalid
from fieldhub.hub.ingest.batch import Batch
from fieldhub.hub.rollouts import lease, progress
from fieldhub.hub.rollouts.bundles import Bundles
from fieldhub.hub.rollouts.links import DownloadLinks
from fieldhub.hub.rollouts.plan import DONE, Plan, below, verdict, wave_sizes
from fieldhub.hub.rollouts.runs import Changes, Run, installed_version, load_runs, save_all
from fieldhub.hub.store import rollouts as sql
from fieldhub.hub.store.audit import audit_row
from fieldhub.hub.store.commands import CommandRecord
from fieldhub.hub.store.rollouts import (
    BundleRecord,
    RolloutDeviceRecord,
    RolloutNotFound,
    RolloutRecord,
)
from fieldhub.hub.store.writes import Writes

__all__ = ["INSTALL", "ROLLBACK", "Rollouts"]

log = logging.getLogger(__name__)

INSTALL: Final = "bundle.install"
ROLLBACK: Final = "bundle.rollback"
MAX_ATTEMPTS: Final = 10
"""However often operators retry, a device is sent a bundle at most this often per rollout."""
_TICK_S: Final = 1.0
_WAITING: Final = frozenset({"pending", *progress.MOVING})


class Rollouts:
    """Creates rollouts and drives them (see the module's text).

    Args:
        engine, writes: the store.
        commands: sends the install and rollback commands.
        directory: devices' labels and action catalogs (what the install is checked against).
        links: download addresses for the install commands.
        bundles: the stored bundles (their refusals are counted with the rollouts').
        instance: this hub process's name: whose leases are whose (``lease.py``).
    """

    def __init__(
        self,
        engine: AsyncEngine,
        writes: Writes,
        commands: CommandService,
        directory: DeviceDirectory,
        links: DownloadLinks,
        bundles: Bundles,
        *,
        instance: str,
        clock: Callable[[], int] = now_ms,
        lease_ms: int = lease.LEASE_MS,
    ) -> None:
        self._engine = engine
        self._writes = writes
        self._commands = commands
        self._directory = directory
        self.links = links
        self._bundles = bundles
        self._clock = clock
        self._instance = instance
        self._lease_ms = lease_ms
        self._leases_due = 0  # when the leases are renewed next (epoch ms)
        self._runs: dict[str, Run] = {}
        self._by_command: dict[str, tuple[str, str]] = {}  # command id → (rollout, device)
        self._inbox: list[tuple[str, str, str, Mapping[str, Any]]] = []
        self._wake = asyncio.Event()
        self.lock = asyncio.Lock()
        """Held while a rollout changes; the hub's stop cancels :meth:`run` only outside it."""
        self.counts: Counter[str] = Counter()
        """Rollouts by how they ended (completed, aborted) and refused requests (refused),
        since the start."""

    # -- life cycle ---------------------------------------------------------------------------
    async def load(self) -> int:
        """Take up the unfinished rollouts no other live hub holds (after a restart, or when
        another hub's lease ran out); returns how many. Install commands that ended while no
        hub followed them count now."""
        now = self._clock()
        claimed = await self._writes.run(
            partial(lease.claim, instance=self._instance, now=now, lease_ms=self._lease_ms)
        )
        self._leases_due = now + lease.RENEW_MS
        fresh = set(claimed) - self._runs.keys()
        if not fresh:
            return 0
        async with self._engine.connect() as conn:
            runs = [run for run in await conn.run_sync(load_runs) if run.record.id in fresh]
        changes = Changes()
        for run in runs:
            self._runs[run.record.id] = run
            for device in run.devices.values():
                if device.command_id is None or device.state not in progress.MOVING:
                    continue
                self._by_command[device.command_id] = (run.record.id, device.device_id)
                with contextlib.suppress(LookupError):
                    command = await self._commands.get(device.command_id)
                    if command.finished and progress.command_ended(
                        device, command.status, command.error, now, retries=run.plan.retries
                    ):
                        changes.device(device)
        await self._save(changes)
        self._wake.set()
        return len(runs)

    async def run(self) -> None:
        """Drive the rollouts: outcomes, events, deadlines, waves; forever."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_TICK_S):
                    await self._wake.wait()
            self._wake.clear()
            try:
                async with self.lock:
                    if self._clock() >= self._leases_due:
                        await self._keep_leases()
                    await self._round()
            except Exception:  # the store is down, most likely: the next round tries again
                log.exception("rollouts: a round failed; trying again in %s s", _TICK_S)
                await asyncio.sleep(_TICK_S)

    async def _keep_leases(self) -> None:
        """Renew this hub's leases (a rollout taken over meanwhile is dropped: another hub
        drives it), then take up those whose hub stopped renewing."""
        now = self._clock()
        held = await self._writes.run(
            partial(
                lease.renew, instance=self._instance, ids=list(self._runs), now=now,
                lease_ms=self._lease_ms,
            )
        )  # fmt: skip
        for lost in self._runs.keys() - held:
            log.warning("rollout %s: another hub took it over; no longer driven here", lost)
            del self._runs[lost]
        self._by_command = {c: at for c, at in self._by_command.items() if at[0] in self._runs}
        if await self.load():
            log.info("rollouts: took up rollouts whose hub stopped renewing its lease")

    def drives(self, rollout_id: str) -> bool:
        """Whether this hub process drives the rollout now (it holds the rollout's lease)."""
        return rollout_id in self._runs

    async def release(self) -> None:
        """Give back this hub's leases as it stops: the next hub to start, or to look, takes
        its rollouts up at once instead of after the lease."""
        await self._writes.run(partial(lease.release, instance=self._instance))

    def refusals(self) -> dict[tuple[str, str], int]:
        """What was refused, for ``/metrics``: uploads by reason code, download tokens by
        reason, rollout requests."""
        counted = {("upload", reason): n for reason, n in self._bundles.refusals.items()}
        counted |= {("download", reason): n for reason, n in self.links.refusals.items()}
        counted[("rollout", "request")] = self.counts["refused"]
        return counted

    # -- what moves rollouts --------------------------------------------------------------
    def committed(self, batch: Batch) -> None:
        """Ingest committed ``batch``: queue its ``bundle.*`` events (nothing more here: this
        runs on ingest's path)."""
        for device_id, _received, event in batch.events:
            if event.type.startswith("bundle.") and self._runs:
                self._inbox.append(("event", device_id, event.type[7:], event.data))
                self._wake.set()

    def command_changed(self, record: CommandRecord) -> None:
        """A command moved: queue the end of an install or rollback command of a rollout."""
        if record.finished and record.id in self._by_command:
            self._inbox.append(("command", record.id, record.status, {"error": record.error}))
            self._wake.set()

    # -- requests -------------------------------------------------------------------------
    async def create(
        self,
        bundle: BundleRecord,
        plan: Plan,
        devices: Iterable[tuple[str, Mapping[str, Any]]],
        *,
        actor: str,
        source: str,
    ) -> Run:
        """A new rollout of ``bundle`` to ``devices`` (id, reported state) as ``plan`` says:
        devices already running this version (or, with ``below`` in the target, not below it)
        are left out; the first wave starts at once.

        Raises:
            Invalid: no device is left to update.
        """
        wanted = plan.target.get("below")
        chosen = []
        for device_id, reported in devices:
            running = installed_version(reported, bundle.name)
            if running is not None and not below(running, bundle.version):
                continue  # has it (or newer) already
            if wanted is not None and not below(running, str(wanted)):
                continue
            chosen.append(device_id)
        if not chosen:
            self.counts["refused"] += 1
            raise Invalid("no device of the target needs this bundle", ("body", "target"))
        now = self._clock()
        record = RolloutRecord(
            id="r-" + secrets.token_hex(8),
            bundle_id=bundle.id,
            plan=plan.as_dict(),
            status="running",
            wave=0,
            reason="",
            created_by=actor,
            created_at=now,
            updated_at=now,
        )
        rows: dict[str, RolloutDeviceRecord] = {}
        start = 0
        for wave, size in enumerate(wave_sizes(len(chosen), plan.canary, plan.waves)):
            for device_id in chosen[start : start + size]:
                rows[device_id] = RolloutDeviceRecord(record.id, device_id, wave, "pending", now)
            start += size
        detail = {
            "bundle": bundle.name,
            "version": bundle.version,
            "devices": len(rows),
            "waves": wave_sizes(len(chosen), plan.canary, plan.waves),
            "target": plan.target,
        }
        audit = audit_row(actor, "rollout.created", record.id, "ok", source, detail, ts=now)
        await self._writes.run(
            partial(
                lease.insert_leased, rollout=record, devices=list(rows.values()), audit=audit,
                instance=self._instance, lease_ms=self._lease_ms,
            )
        )  # fmt: skip
        run = Run(record, plan, bundle, rows)
        async with self.lock:
            self._runs[record.id] = run
            await self._round()
        return run

    async def act(
        self, rollout_id: str, action: str, *, actor: str, source: str, rollback: bool | None = None
    ) -> Run:
        """An operator's ``action`` on an unfinished rollout: ``approve`` (the next wave,
        when it waits for approval), ``pause``, ``resume``, ``abort`` (``rollback``: undo the
        devices already updated; None: as the plan says), ``retry`` (failed devices once more).

        Raises:
            RolloutNotFound: no such rollout.
            Conflict: not possible in the rollout's state (the message says why).
        """
        async with self.lock:
            run = self._runs.get(rollout_id)
            if run is None and action == "retry":  # a completed rollout's failed devices
                run = await self.get(rollout_id)
                if run.record.status == "completed":
                    self._runs[rollout_id] = run
                    await self._writes.run(
                        partial(
                            lease.reopen, rollout_id=rollout_id, instance=self._instance,
                            until=self._clock() + self._lease_ms,
                        )
                    )  # fmt: skip
            if run is None or rollout_id not in self._runs:
                self.counts["refused"] += 1
                if (await self.get(rollout_id)).record.status in sql.UNFINISHED:
                    raise Conflict(
                        f"rollout {rollout_id} is driven by another hub process: {action} it "
                        "there (docs/rollouts.md, several hubs)"
                    )
                raise Conflict(f"rollout {rollout_id} is finished: nothing to {action}")
            changes = Changes()
            now = self._clock()
            status = run.record.status
            if action == "approve" and status == "waiting":
                self._next_wave(run, now, changes, actor, source)
            elif action == "pause" and status == "running":
                self._set(run, "paused", "paused by an operator", now, changes, actor, source)
            elif action == "resume" and status == "paused":
                self._set(run, "running", "", now, changes, actor, source)
                if verdict(run.wave_states(run.record.wave), run.plan) == "pause":
                    self._promote(run, now, changes, actor, source)  # the operator accepts it
            elif action == "abort" and status in ("running", "waiting", "paused"):
                undo = run.plan.rollback_on_abort if rollback is None else rollback
                await self._abort(run, undo, "aborted by an operator", now, changes, actor, source)
            elif action == "retry" and status != "aborting":
                retried = self._retry(run, now, changes)
                if not retried:
                    raise Conflict(f"rollout {rollout_id} has no failed device to retry")
                self._set(run, "running", "", now, changes, actor, source, "retry")
            else:
                self.counts["refused"] += 1
                raise Conflict(f"rollout {rollout_id} is {status}: cannot {action}")
            await self._save(changes)
            self._wake.set()
            return run

    async def get(self, rollout_id: str) -> Run:
        """A rollout as it is now (the live one, or the stored one once finished).

        Raises:
            RolloutNotFound: none with this id.
        """
        run = self._runs.get(rollout_id)
        if run is not None:
            return run
        async with self._engine.connect() as conn:
            found = await conn.run_sync(partial(load_runs, rollout_id=rollout_id))
        if not found:
            raise RolloutNotFound(f"no rollout {rollout_id!r}")
        return found[0]

    async def listing(self) -> list[Run]:
        """Every rollout, newest first, each as it is now."""
        async with self._engine.connect() as conn:
            stored = await conn.run_sync(partial(load_runs, everything=True))
        return [self._runs.get(run.record.id, run) for run in stored]

    # -- one round ------------------------------------------------------------------------
    async def _round(self) -> None:
        now = self._clock()
        changes = Changes()
        inbox, self._inbox = self._inbox, []
        for kind, key, what, data in inbox:
            self._take(kind, key, what, data, now, changes)
        for run in list(self._runs.values()):
            retries = run.plan.retries
            for device in run.devices.values():
                if progress.past_deadline(device, now, retries=retries):
                    changes.device(device)
            await self._advance(run, now, changes)
        await self._save(changes)

    def _take(
        self, kind: str, key: str, what: str, data: Mapping[str, Any], now: int, changes: Changes
    ) -> None:
        if kind == "command":
            found = self._by_command.pop(key, None)
            run = self._runs.get(found[0]) if found else None
            if found is None or run is None:
                return
            sent = run.devices[found[1]]
            if sent.command_id == key and progress.command_ended(
                sent, what, str(data.get("error", "")), now, retries=run.plan.retries
            ):
                changes.device(sent)
            return
        for run in self._runs.values():
            device = run.devices.get(key)
            if device is None or data.get("name") != run.bundle.name:
                continue
            if what != "rolled_back" and data.get("version") != run.bundle.version:
                continue
            if progress.event_arrived(device, what, data, now, retries=run.plan.retries):
                changes.device(device)

    async def _advance(self, run: Run, now: int, changes: Changes) -> None:
        record = run.record
        if record.status == "aborting":
            for device in run.devices.values():
                if device.state == "pending":
                    device.state, device.reason = "skipped", "not sent: the rollout was aborted"
                    device.updated_at = now
                    changes.device(device)
            if run.plan.rollback_on_abort:  # also those confirmed after the abort
                undo = [d for d in run.devices.values() if d.state == "confirmed"]
                if undo:
                    await self._send(run, ROLLBACK, undo, now, changes)
            if not any(device.state in progress.MOVING for device in run.devices.values()):
                self._set(run, "aborted", record.reason, now, changes, "hub", "", "aborted")
                self.counts["aborted"] += 1
                del self._runs[record.id]
            return
        if record.status != "running":
            return
        pending = [
            d for d in run.devices.values() if d.state == "pending" and d.wave <= record.wave
        ]
        if pending:
            await self._send(run, INSTALL, pending, now, changes)
        decided = verdict(run.wave_states(record.wave), run.plan)
        if decided == "abort":
            why = self._shortfall(run, "below abort_below")
            await self._abort(run, run.plan.rollback_on_abort, why, now, changes, "hub", "")
        elif decided == "pause":
            self._set(
                run, "paused", self._shortfall(run, "below promote_at"), now, changes, "hub", ""
            )
        elif decided == "promote":
            self._promote(run, now, changes, "hub", "")

    def _promote(self, run: Run, now: int, changes: Changes, actor: str, source: str) -> None:
        if run.record.wave < run.last_wave:
            if run.plan.approval and actor == "hub":
                why = f"wave {run.record.wave} done: waiting for an operator's approval"
                self._set(run, "waiting", why, now, changes, actor, source)
            else:
                self._next_wave(run, now, changes, actor, source)
            return
        if any(device.state in _WAITING for device in run.devices.values()):
            return  # retried devices of earlier waves are still under way
        self._set(run, "completed", "", now, changes, actor, source)
        self.counts["completed"] += 1
        del self._runs[run.record.id]

    def _next_wave(self, run: Run, now: int, changes: Changes, actor: str, source: str) -> None:
        run.record.wave += 1
        self._set(run, "running", "", now, changes, actor, source, f"wave.{run.record.wave}")
        self._wake.set()

    async def _abort(
        self,
        run: Run,
        rollback: bool,
        why: str,
        now: int,
        changes: Changes,
        actor: str,
        source: str,
    ) -> None:
        run.plan = replace(run.plan, rollback_on_abort=rollback)
        run.record.plan = run.plan.as_dict()
        batches = set()
        for device in run.devices.values():
            command = self._commands.current(device.command_id or "")
            if device.state == "sending" and command is not None and command.batch_id:
                batches.add(command.batch_id)
        self._commands.abort_unsent(batches, "not sent: the rollout was aborted")
        self._set(run, "aborting", why, now, changes, actor, source, "abort")
        await self._advance(run, now, changes)

    def _retry(self, run: Run, now: int, changes: Changes) -> int:
        retried = 0
        for device in run.devices.values():
            if device.state == "failed" and device.attempts < MAX_ATTEMPTS:
                device.state, device.updated_at = "pending", now
                changes.device(device)
                retried += 1
        return retried

    def _set(
        self,
        run: Run,
        status: str,
        reason: str,
        now: int,
        changes: Changes,
        actor: str,
        source: str,
        step: str | None = None,
    ) -> None:
        """Move the rollout to ``status``, audited as ``rollout.<step or status>``."""
        record = run.record
        record.status, record.reason, record.updated_at = status, reason[:512], now
        changes.rollout(record)
        counts = Counter(device.state for device in run.devices.values())
        detail = {"status": status, "wave": record.wave, "reason": reason, "devices": dict(counts)}
        action = f"rollout.{step or status}"
        changes.audit.append(audit_row(actor, action, record.id, "ok", source, detail, ts=now))

    @staticmethod
    def _shortfall(run: Run, rule: str) -> str:
        states = run.wave_states(run.record.wave)
        good = sum(state == "confirmed" for state in states)
        bad = sum(state in DONE and state != "confirmed" for state in states)
        return f"wave {run.record.wave}: {good} of {len(states)} confirmed, {bad} failed ({rule})"

    # -- sending --------------------------------------------------------------------------
    async def _send(
        self,
        run: Run,
        action: str,
        devices: list[RolloutDeviceRecord],
        now: int,
        changes: Changes,
    ) -> None:
        """Send ``action`` to ``devices`` as one paced group command; a device that cannot
        run it (an older agent, a deleted device) is ``skipped`` (``rollback_failed`` for a
        rollback), never sent anything."""
        bundle, plan = run.bundle, run.plan
        install = action == INSTALL
        args: dict[str, Any] = {"name": bundle.name}
        if install:
            args |= {"version": bundle.version, "sha256": bundle.id, "size": bundle.size, "url": ""}
        entries = []
        refused: dict[str, str] = {}
        for device in devices:
            entry = self._directory.get(device.device_id)
            if entry is None:
                refused[device.device_id] = "the device was deleted"
            else:
                entries.append((entry.id, entry.reported))
        fits: list[Fit] = []
        if entries:
            try:
                fits, unsupported = fit_group(entries, action, args, None)
            except CommandRefused as exc:
                unsupported = {device_id: str(exc) for device_id, _reported in entries}
            refused |= unsupported
        for device_id, why in refused.items():
            device = run.devices[device_id]
            device.state = "skipped" if install else "rollback_failed"
            device.reason, device.updated_at, device.deadline_at = why[:512], now, None
            changes.device(device)
        if not fits:
            return
        per_minute = plan.per_minute if install else None
        deadline_ms = plan.deadline_s * 1000
        if install:  # each device its own download address, valid until past its deadline
            slot_ms = 60_000 / per_minute if per_minute else 0
            fits = [
                replace(
                    fit,
                    args={
                        **fit.args,
                        "url": self.links.url(
                            fit.device_id, bundle.id, round(n * slot_ms) + 2 * deadline_ms
                        ),
                    },
                )
                for n, fit in enumerate(fits)
            ]
        shown_args = {k: v for k, v in args.items() if k != "url"}
        _batch, records = await self._commands.submit_group(
            fits,
            action,
            shown_args,
            target={"rollout": run.record.id, "wave": run.record.wave},
            ttl_s=plan.deadline_s,
            actor=f"rollout:{run.record.id}",
            pace=Pace(per_second=per_minute / 60 if per_minute else None),
        )
        for command in records:
            device = run.devices[command.device_id]
            device.state = "sending" if install else "rolling_back"
            device.attempts += install
            device.command_id = command.id
            device.deadline_at = (command.not_before or command.created_at) + deadline_ms
            device.updated_at = now
            changes.device(device)
            self._by_command[command.id] = (run.record.id, device.device_id)

    async def _save(self, changes: Changes) -> None:
        if not changes.runs:
            return
        jobs = []
        for rollout_id, record in sorted(changes.runs.items()):
            devices = [d for (rid, _), d in changes.devices.items() if rid == rollout_id]
            jobs.append((record, devices))
        await self._writes.run(partial(save_all, jobs=jobs, audit=changes.audit))
