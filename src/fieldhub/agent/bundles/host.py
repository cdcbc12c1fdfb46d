"""The agent's side of bundles: install, trial start, confirm or roll back, resume after a crash.

The host outlives each :class:`~fieldhub.agent.service.Agent`: installing a bundle ends with a
**restart in the process** (the running agent stops, units, uplink and outbox closed; a new one
starts with the new actions and ``agent.yaml``), not a re-exec. A bundle changes site actions
(programs run as processes) and configuration, never the agent's own Python code, so a new
process would add nothing but a gap; and the host, which must survive the switch to judge the
trial, stays in memory. What must survive a crash is on disk: the journal (``journal``) and the
links of the active area (``installed``).

An install (``bundle.install``, a built-in action): download and verify in memory, check
against the device, then journal ``writing`` → version directory → journal ``switching`` →
``previous`` and ``current`` links → journal ``trial`` → restart. The new agent starts and
the host runs the **trial**: the uplink connects, the bundle's actions are registered, its
health action (if any) passes, all before the deadline → journal ``confirmed`` → old versions
pruned. Otherwise, or when the new agent fails to start → journal ``rolling_back`` → links
back → restart. Outcomes are events on the device's event channel (``bundle.installing``,
``bundle.confirmed``, ``bundle.rolled_back``, ``bundle.refused``); what runs is reported under
``software`` in the reported state at every start.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from fieldhub.agent.actions import ActionRegistry, SiteAction
from fieldhub.agent.bundles import SOFTWARE_KEY, software_state
from fieldhub.agent.bundles import journal as journals
from fieldhub.agent.bundles.installed import CURRENT, PREVIOUS, Installed, InstalledBundle
from fieldhub.agent.bundles.journal import Journal, crash_point
from fieldhub.agent.config import AgentConfig, load_config
from fieldhub.agent.reporting import Reporter
from fieldhub.agent.units.base import ActionSpec
from fieldhub.bundles.manifest import (
    BUNDLE_NAME_PATTERN,
    SHA256_PATTERN,
    VERSION_PATTERN,
    parse_version,
)
from fieldhub.bundles.refusal import BundleRefused, Reason
from fieldhub.clock import now_ms
from fieldhub.protocol.actions import ArgDetails
from fieldhub.protocol.messages import Severity

__all__ = ["BundleHost"]

log = logging.getLogger(__name__)

_INSTALLING, _CONFIRMED = "bundle.installing", "bundle.confirmed"
_ROLLED_BACK, _REFUSED = "bundle.rolled_back", "bundle.refused"
_POLL_S: Final = 0.2

Spawn = Callable[[Coroutine[Any, Any, None], str], None]


@dataclass(frozen=True)
class _Attached:
    """The running agent's parts the host uses."""

    reporter: Reporter
    registry: ActionRegistry
    connected: Callable[[], bool]
    spawn: Spawn


class BundleHost:
    """Bundles of one agent (see the module docstring). Call :meth:`recover` once at start,
    then for each agent start :meth:`config`, the actions, and :meth:`attach`."""

    def __init__(self, config: AgentConfig) -> None:
        self._base = config
        self._config = config
        root = config.bundles_dir
        self.installed = Installed(root / "installed")
        self._journal_path = root / "journal.json"
        self._scratch = root / "scratch"
        self._events: list[tuple[str, Severity, str, dict[str, Any]]] = []
        self._attached: _Attached | None = None
        self._busy = False
        self._restart = asyncio.Event()
        self.trial: Journal | None = None
        self.stats: Counter[str] = Counter()
        """Outcomes by event and reason (``bundle.refused:downgrade``): the technician page."""

    # -- at start ---------------------------------------------------------------------------

    def recover(self) -> None:
        """Finish or undo an install a crash interrupted (blocking; before the agent starts)."""
        journal = journals.load(self._journal_path)
        if journal is None:
            return
        log.warning(
            "bundle %s %s: resuming after step %s", journal.name, journal.version, journal.step
        )
        if journal.step == "confirmed":
            self._finish_confirm(journal)
        elif journal.step == "rolling_back":
            reason = Reason(journal.reason) if journal.reason else None  # none: requested
            self._finish_rollback(journal, reason, journal.detail)
        elif journal.step == "writing" or (
            journal.step == "switching"
            and self.installed.target(journal.name, CURRENT) != journal.directory
        ):
            self._undo_write(journal)
            self._emit(_REFUSED, "warning", journal, Reason.INTERRUPTED, "the agent stopped")
        else:  # switched, or on trial: the new version may be what crashed
            self._roll_back(journal, Reason.CRASHED, f"the agent stopped during {journal.step}")

    def config(self) -> AgentConfig:
        """The configuration to start with: a running bundle's ``agent.yaml``, else the base.

        Raises:
            ConfigError: the bundle's file no longer loads (it was checked when installed).
        """
        self._restart.clear()
        self._config = self._base
        for bundle in self.installed.running().values():
            if bundle.manifest.config is not None:
                self._config = load_config(bundle.path / "files" / bundle.manifest.config)
        return self._config

    def site_actions(self) -> list[SiteAction]:
        """The actions of the running bundles: their Python programs, each run as a site
        action (its own process, under its timeout, isolated interpreter ``-I``)."""
        return [
            SiteAction(
                name=action.name,
                command=[sys.executable, "-I", str(bundle.path / "files" / action.program)],
                args=dict(action.args),
                timeout_s=action.timeout_s,
                duration_s=action.duration_s,
                description=action.description,
            )
            for bundle in self.installed.running().values()
            for action in bundle.manifest.actions
        ]

    def builtin_actions(self) -> list[ActionSpec]:
        """``bundle.install`` and ``bundle.rollback``, for the agent's registry."""
        return [
            ActionSpec(
                name="bundle.install",
                handler=self._install_command,
                args={
                    "url": str,
                    "sha256": str,
                    "size": int,
                    "name": str,
                    "version": str,
                    "force": str,
                },
                details={"force": ArgDetails(default="")},
                description="Install a signed bundle (outcome: bundle.* events)",
            ),
            ActionSpec(
                name="bundle.rollback",
                handler=self._rollback_command,
                args={"name": str},
                description="Go back to a bundle's previous version (none: remove it)",
            ),
        ]

    def software(self) -> dict[str, Any]:
        """What this device runs, for the reported state; ``trial``: a version that runs but
        is not confirmed yet (it may still be rolled back)."""
        running = software_state({n: b.version for n, b in self.installed.running().items()})
        if self.trial is not None:
            running["trial"] = {self.trial.name: self.trial.version}
        return running

    def attach(
        self,
        reporter: Reporter,
        registry: ActionRegistry,
        connected: Callable[[], bool],
        spawn: Spawn,
    ) -> None:
        """The agent has started: report what runs and what happened, start a trial."""
        self._attached = _Attached(reporter, registry, connected, spawn)
        reporter.state({SOFTWARE_KEY: self.software()})
        for event in self._events:
            reporter.event(*event)
        self._events.clear()
        if self.trial is not None:
            spawn(self._run_trial(self.trial), "bundle-trial")

    def detach(self) -> None:
        """The agent stops: events wait for the next one."""
        self._attached = None

    async def restart_requested(self) -> None:
        """Returns when an install or a rollback needs the agent started again."""
        await self._restart.wait()

    def start_failed(self, error: str) -> bool:
        """The agent could not start: on trial, roll back (True: start again); else False
        (blocking)."""
        if self.trial is None:
            return False
        self._roll_back(self.trial, Reason.CRASHED, error)
        return True

    # -- commands ---------------------------------------------------------------------------

    async def _install_command(
        self, url: str, sha256: str, size: int, name: str, version: str, force: str
    ) -> dict[str, Any]:
        """Accept an install (the outcome follows as events) or refuse it at once."""
        current = self.installed.get(name) if _valid(name, BUNDLE_NAME_PATTERN) else None
        try:
            self._precheck(name, version, size, sha256, force, current)
        except BundleRefused as exc:
            self._emit_about(_REFUSED, "warning", name, version, exc.reason, exc.message)
            raise ValueError(f"{exc.reason.value}: {exc.message}") from None
        if current is not None and parse_version(current.version) == parse_version(version):
            self._emit_about(_CONFIRMED, "info", name, version)  # already there: done
            return {"accepted": True, "name": name, "version": version, "installed": True}
        self._busy = True
        assert self._attached is not None  # commands arrive only to a started agent
        self._attached.spawn(self.install(url, sha256, size, name, version, force), "bundle")
        return {"accepted": True, "name": name, "version": version}

    def _precheck(
        self,
        name: str,
        version: str,
        size: int,
        sha256: str,
        force: str,
        current: InstalledBundle | None,
    ) -> None:
        """What can be refused before downloading anything."""
        if not _valid(name, BUNDLE_NAME_PATTERN) or not _valid(version, VERSION_PATTERN):
            raise BundleRefused(Reason.MALFORMED, "name or version is not valid")
        if not _valid(sha256, SHA256_PATTERN):
            raise BundleRefused(Reason.MALFORMED, "sha256 is not 64 lower-case hex digits")
        if not 0 < size <= self._config.bundles.max_bytes:
            raise BundleRefused(
                Reason.TOO_LARGE, f"size {size} is not within 1..{self._config.bundles.max_bytes}"
            )
        if self._busy or self.trial is not None or self._journal_path.exists():
            raise BundleRefused(Reason.BUSY, "another install is under way")
        if not self._config.bundles.trusted_keys:
            raise BundleRefused(Reason.UNKNOWN_KEY, "bundles.trusted_keys is empty")
        from fieldhub.agent.bundles.checks import is_downgrade

        if current is not None and not force and is_downgrade(current.version, version):
            raise BundleRefused(
                Reason.DOWNGRADE, f"{version} is older than the installed {current.version}"
            )

    async def _rollback_command(self, name: str) -> dict[str, Any]:
        current = self.installed.get(name) if _valid(name, BUNDLE_NAME_PATTERN) else None
        if current is None:
            raise ValueError(f"{Reason.NOT_INSTALLED.value}: no bundle {name[:64]!r} runs here")
        if self._busy or self.trial is not None:
            raise ValueError(f"{Reason.BUSY.value}: an install is under way")
        back_to = self.installed.target(name, PREVIOUS)
        journal = Journal(
            step="rolling_back",
            name=name,
            version=current.version,
            directory=current.directory,
            previous=back_to,
        )
        await asyncio.to_thread(self._roll_back, journal, None, "requested")
        self._restart.set()
        return {"name": name, "from": current.version, "to": self._version_of(name, back_to)}

    # -- the install ------------------------------------------------------------------------

    async def install(
        self, url: str, sha256: str, size: int, name: str, version: str, force: str = ""
    ) -> None:
        """Download, verify, check, write, switch; then ask for the restart that starts the
        trial. A refusal is reported as ``bundle.refused`` and leaves the active area as it
        was (or removes what this install wrote)."""
        from fieldhub.agent.bundles.install import prepare, write_and_switch

        self._busy = True
        try:
            prepared = await prepare(
                self._config,
                self.installed,
                self._scratch,
                url=url,
                sha256=sha256,
                size=size,
                announced=(name, version),
                force=force,
            )
            crash_point("verified")
            self._emit_about(_INSTALLING, "info", name, version)
            journal = await asyncio.to_thread(
                write_and_switch, self.installed, self._journal_path, prepared, sha256
            )
        except BundleRefused as exc:
            self._emit_about(_REFUSED, "warning", name, version, exc.reason, exc.message)
            return
        finally:
            self._busy = False
        self.trial = journal
        self._restart.set()

    async def _run_trial(self, journal: Journal) -> None:
        """Confirm the new version, or roll it back, by the journal's deadline."""
        attached = self._attached
        assert attached is not None
        try:
            async with asyncio.timeout(max(0.0, (journal.deadline_ms - now_ms()) / 1000)):
                problem = await self._trial_checks(attached, journal)
        except TimeoutError:
            problem = "not confirmed in time: " + (
                "the hub was not reached" if not attached.connected() else "the check ran over"
            )
        if problem is not None:
            await asyncio.to_thread(self._roll_back, journal, Reason.HEALTH_FAILED, problem)
            self._restart.set()  # here, on the loop: an Event is not thread-safe
            return
        crash_point("trial")
        await asyncio.to_thread(self._finish_confirm, journal)

    async def _trial_checks(self, attached: _Attached, journal: Journal) -> str | None:
        """What the trial requires, in order; None when all passed, else what failed."""
        # The uplink has no event for "connected" (a claim may even create it later): poll.
        while not attached.connected():  # noqa: ASYNC110
            await asyncio.sleep(_POLL_S)
        bundle = self.installed.load(journal.name, journal.directory)
        registered = {action.name for action in attached.registry.describe()}
        missing = [a.name for a in bundle.manifest.actions if a.name not in registered]
        if missing:
            return f"actions did not load: {missing}"
        health = bundle.manifest.health
        if health is None:
            return None
        outcome = await attached.registry.run(
            attached.registry.bind(health.action, {}), origin="bundle.trial"
        )
        return None if outcome.ok else f"health action {health.action}: {outcome.error}"

    # -- transitions (blocking: file system) ------------------------------------------------

    def _finish_confirm(self, journal: Journal) -> None:
        journals.save(self._journal_path, msgspec.structs.replace(journal, step="confirmed"))
        crash_point("confirmed")
        self.installed.prune(journal.name)
        journals.clear(self._journal_path)
        self.trial = None
        if self._attached is not None:  # no longer on trial
            self._attached.reporter.state({SOFTWARE_KEY: self.software()})
        self._emit(
            _CONFIRMED, "info", journal, previous=self._version_of(journal.name, journal.previous)
        )
        log.info("bundle %s %s confirmed", journal.name, journal.version)

    def _roll_back(self, journal: Journal, reason: Reason | None, detail: str) -> None:
        """Journal the way back (no reason: an operator asked), then take it."""
        why = reason.value if reason is not None else ""
        journals.save(
            self._journal_path,
            msgspec.structs.replace(journal, step="rolling_back", reason=why, detail=detail),
        )
        crash_point("rolling_back")
        self._finish_rollback(journal, reason, detail)

    def _finish_rollback(self, journal: Journal, reason: Reason | None, detail: str) -> None:
        """Links back to where they were before ``journal``'s install (idempotent)."""
        self.installed.point(journal.name, CURRENT, journal.previous)
        self.installed.point(journal.name, PREVIOUS, journal.older)
        previous = self._version_of(journal.name, journal.previous)
        self.installed.prune(journal.name)
        journals.clear(self._journal_path)
        self.trial = None
        self._emit(_ROLLED_BACK, "warning", journal, reason, detail, previous=previous)
        log.warning(
            "bundle %s %s rolled back to %s: %s", journal.name, journal.version, previous, detail
        )

    def _undo_write(self, journal: Journal) -> None:
        self.installed.prune(journal.name)
        journals.clear(self._journal_path)

    def _version_of(self, name: str, directory: str | None) -> str | None:
        if directory is None:
            return None
        try:
            return self.installed.load(name, directory).version
        except (OSError, BundleRefused):
            return None

    # -- events -----------------------------------------------------------------------------

    def _emit(
        self,
        kind: str,
        severity: Severity,
        journal: Journal,
        reason: Reason | None = None,
        detail: str = "",
        *,
        previous: str | None = None,
    ) -> None:
        self._emit_about(kind, severity, journal.name, journal.version, reason, detail, previous)

    def _emit_about(
        self,
        kind: str,
        severity: Severity,
        name: str,
        version: str,
        reason: Reason | None = None,
        detail: str = "",
        previous: str | None = None,
    ) -> None:
        self.stats[f"{kind}:{reason.value}" if reason is not None else kind] += 1
        data: dict[str, Any] = {"name": name[:64], "version": version[:32]}
        if reason is not None:
            data["reason"] = reason.value
        if detail:
            data["detail"] = detail[:500]
        if previous is not None:
            data["previous"] = previous
        if self._attached is not None:
            self._attached.reporter.event(kind, severity, detail[:200], data)
        else:
            self._events.append((kind, severity, detail[:200], data))


def _valid(text: str, pattern: str) -> bool:
    return re.match(pattern, text) is not None
