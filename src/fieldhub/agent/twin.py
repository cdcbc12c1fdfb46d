"""The device twin on the agent: converge the units to the desired state the hub publishes.

A desired key names a unit, its value is what the unit should report as its state, in the
unit's own words: a socket ``on``/``off``, a lock ``locked``/``unlocked``, an LED ``on``,
``off`` or one of its pattern names. So once converged, what the agent reports equals what is
desired, and the hub shows the twin in sync.

Applying goes through the action registry, the same built-in actions a command runs (a socket
still waits out its minimum off time), and only for units whose state differs: the broker hands
the retained desired state over again on every connection, and that must change nothing. Keys
that cannot be applied (no such unit, a unit that only reports, a value the unit does not know)
are reported, not fatal: the rest is applied. After each version the agent reports through the
outbox ``desired_version`` (the version it converged to) and ``desired_errors`` (key → reason,
removed when there are none).

Versions only go forward: the last applied one is kept in the data folder, and an older one
(from a second hub process republishing what it read before a change) is ignored. The same
version is applied again after a restart, since units start from their configured state.

An LED named in the desired state is the twin's: the agent's health display leaves it alone
(:meth:`Twin.holds`) until the key is removed, then shows health on it again
(:attr:`Twin.releases` counts those hand-backs, which may come and go between two looks).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgspec

from fieldhub.agent._tasks import log_if_failed
from fieldhub.agent.actions import ActionError, ActionRegistry, BoundAction
from fieldhub.agent.reporting import Reporter
from fieldhub.agent.units import LedUnit, SocketUnit, Unit
from fieldhub.private_files import write_private
from fieldhub.protocol import Desired
from fieldhub.protocol.messages import DESIRED_ERRORS_KEY, DESIRED_VERSION_KEY

__all__ = ["TWIN_FILE", "Twin", "TwinStats"]

log = logging.getLogger(__name__)

TWIN_FILE: Final = "twin.json"
"""In the data folder: the last desired version applied."""


class _Rejected(ValueError):
    """A desired key this agent cannot apply; the message says why."""


@dataclass(slots=True)
class TwinStats:
    """What the twin did, for the technician page and tests.

    Attributes:
        version: the desired version applied last (0: none yet).
        applied: desired versions applied since start.
        changed: unit changes made (keys whose unit differed from the desired state).
        ignored: desired states ignored for being older than the one applied.
    """

    version: int = 0
    applied: int = 0
    changed: int = 0
    ignored: int = 0


class Twin:
    """Applies desired states one at a time, newest first; see the module docstring.

    Create it before the uplink connects and give :meth:`on_desired` to
    ``Uplink.on_desired``: a desired state that arrives before the units are started waits
    for :meth:`applying`.

    Args:
        state_file: where the last applied version is kept (``TWIN_FILE`` in the data folder).
    """

    def __init__(self, state_file: Path) -> None:
        self._file = state_file
        self.stats = TwinStats()
        self.releases = 0
        """Times the desired state let go of an LED: the health display takes them back."""
        self._pending: Desired | None = None
        self._wake = asyncio.Event()
        self._registry: ActionRegistry | None = None
        self._units: dict[str, Unit] = {}
        self._reporter: Reporter | None = None
        self._held: frozenset[str] = frozenset()
        self._reported: tuple[int, dict[str, str]] | None = None

    def on_desired(self, desired: Desired) -> None:
        """Take a desired state from the uplink (on the loop; never blocks)."""
        if self._pending is None or desired.version >= self._pending.version:
            self._pending = desired
            self._wake.set()

    def holds(self, unit_name: str) -> bool:
        """True when the desired state sets the unit ``unit_name`` (an LED the health display
        must leave alone)."""
        return unit_name in self._held

    @contextlib.asynccontextmanager
    async def applying(
        self, registry: ActionRegistry, units: Sequence[Unit], reporter: Reporter
    ) -> AsyncIterator[Twin]:
        """Apply desired states while inside, with every unit started and its actions
        registered; leaving cancels a change under way, as a command's would be."""
        self._registry = registry
        self._units = {unit.name: unit for unit in units}
        self._reporter = reporter
        self.stats.version = await asyncio.to_thread(self._load)
        task = asyncio.create_task(self._run(), name="twin")
        task.add_done_callback(log_if_failed)
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            desired, self._pending = self._pending, None
            if desired is not None:
                await self._apply(desired)

    async def _apply(self, desired: Desired) -> None:
        version = desired.version
        if version < self.stats.version:
            self.stats.ignored += 1
            log.info(
                "ignored desired state version %d: version %d is applied already",
                version,
                self.stats.version,
            )
            return
        errors: dict[str, str] = {}
        steps: list[tuple[str, BoundAction]] = []
        for key, value in sorted(desired.state.items()):
            try:
                step = self._step(key, value)
            except _Rejected as exc:
                errors[key] = str(exc)
                continue
            if step is not None:
                steps.append((key, step))
        held = frozenset(
            key for key in desired.state if isinstance(self._units.get(key), LedUnit)
        ) - frozenset(errors)
        if self._held - held:
            self.releases += 1
        self._held = held
        registry = self._registry
        if registry is None:  # pragma: no cover - _run starts only in applying()
            raise RuntimeError("the twin is not started")
        # Units are independent: one socket waiting out its minimum off time holds up no other.
        outcomes = await asyncio.gather(
            *(registry.run(step, origin=f"desired:{version}") for _, step in steps)
        )
        for (key, _), outcome in zip(steps, outcomes, strict=True):
            if outcome.ok:
                self.stats.changed += 1
            else:
                errors[key] = outcome.error
        if errors:
            log.warning(
                "desired state version %d: not applied: %s",
                version,
                "; ".join(f"{key}: {error}" for key, error in errors.items()),
            )
        if version != self.stats.version:
            try:
                await asyncio.to_thread(self._save, version)
            except OSError as exc:  # applied all the same; only a restart could go back
                log.error("cannot keep desired version %d in %s: %s", version, self._file, exc)
        self.stats.version = version
        self.stats.applied += 1
        self._report(version, errors)

    def _step(self, key: str, value: Any) -> BoundAction | None:
        """The action that brings unit ``key`` to ``value``; None when it is there already.

        Raises:
            _Rejected: no such unit, a unit that cannot be set, or a value it does not know.
        """
        unit = self._units.get(key)
        if unit is None:
            raise _Rejected(f"no unit named {key!r} on this device")
        if isinstance(unit, SocketUnit) and unit.role == "lock":
            action, args = _choose(unit, value, {"locked": "lock", "unlocked": "unlock"}), {}
        elif isinstance(unit, SocketUnit):
            action = _choose(unit, value, {"on": "set", "off": "set"})
            args = {"on": value == "on"}
        elif isinstance(unit, LedUnit):
            action = _choose(unit, value, dict.fromkeys(unit.modes, "set"))
            args = {"state": value}
        else:
            raise _Rejected(f"unit {key!r} ({unit.kind}) reports its state but cannot be set")
        if unit.state.get(unit.name) == value:
            return None
        registry = self._registry
        if registry is None:  # pragma: no cover - _run starts only in applying()
            raise RuntimeError("the twin is not started")
        try:
            return registry.bind(f"{unit.name}.{action}", args)
        except ActionError as exc:
            raise _Rejected(str(exc)) from None

    def _report(self, version: int, errors: dict[str, str]) -> None:
        """Report the version and the errors, when they differ from what was reported since
        start (a redelivered desired state sends nothing)."""
        if self._reported == (version, errors) or self._reporter is None:
            return
        self._reported = (version, errors)
        changes: dict[str, int | Mapping[str, str] | None] = {
            DESIRED_VERSION_KEY: version,
            DESIRED_ERRORS_KEY: errors or None,
        }
        self._reporter.state(changes)

    def _load(self) -> int:
        try:
            # msgspec, not json: the agent has it loaded anyway, json would be 0.1 MB more.
            data = msgspec.json.decode(self._file.read_bytes())
        except FileNotFoundError:
            return 0
        except (OSError, ValueError) as exc:
            log.warning("cannot read %s (%s): taking any desired version", self._file, exc)
            return 0
        version = data.get("version") if isinstance(data, dict) else None
        if not isinstance(version, int) or isinstance(version, bool) or version < 0:
            log.warning("%s holds no version: taking any desired version", self._file)
            return 0
        return version

    def _save(self, version: int) -> None:
        """Replace the file in one step, so a power cut leaves the old version or the new."""
        write_private(self._file, msgspec.json.encode({"version": version}))


def _choose(unit: Unit, value: Any, verbs: Mapping[str, str]) -> str:
    """The action verb for ``value``, or _Rejected listing the values ``unit`` takes."""
    verb = verbs.get(value) if isinstance(value, str) else None
    if verb is None:
        choices = ", ".join(repr(v) for v in verbs)
        raise _Rejected(f"{unit.kind} {unit.name!r} takes {choices}, not {value!r}")
    return verb
