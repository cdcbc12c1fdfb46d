"""An unfinished rollout as the engine holds it, and how rollouts are read and written.

Split from ``engine.py`` so that the engine is only the rules of motion: what a round
changed (``Changes``) is written in one transaction with its audit entries.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from sqlalchemy.engine import Connection

from fieldhub.hub.rollouts.plan import Plan
from fieldhub.hub.store import rollouts as sql
from fieldhub.hub.store.rollouts import BundleRecord, RolloutDeviceRecord, RolloutRecord

__all__ = [
    "SOFTWARE_KEY",
    "Changes",
    "Run",
    "installed_version",
    "load_runs",
    "save_all",
    "software_of",
]

SOFTWARE_KEY: Final = "software"
"""The reported state key where an agent says what it runs (``{"agent_version", "bundles"}``)."""


@dataclass(slots=True)
class Run:
    """An unfinished rollout: its record, plan, bundle and devices."""

    record: RolloutRecord
    plan: Plan
    bundle: BundleRecord
    devices: dict[str, RolloutDeviceRecord]

    def wave_states(self, wave: int) -> list[str]:
        """The states of the devices of ``wave``."""
        return [device.state for device in self.devices.values() if device.wave == wave]

    @property
    def last_wave(self) -> int:
        """The number of the last wave (0 is the first)."""
        return max((device.wave for device in self.devices.values()), default=0)


@dataclass(slots=True)
class Changes:
    """What one round changed, written in one transaction."""

    runs: dict[str, RolloutRecord | None] = field(default_factory=dict)
    """Rollouts changed: their record when it changed too (else None)."""
    devices: dict[tuple[str, str], RolloutDeviceRecord] = field(default_factory=dict)
    audit: list[dict[str, Any]] = field(default_factory=list)

    def device(self, device: RolloutDeviceRecord) -> None:
        """``device`` changed."""
        self.runs.setdefault(device.rollout_id, None)
        self.devices[device.rollout_id, device.device_id] = device

    def rollout(self, record: RolloutRecord) -> None:
        """The rollout's own record changed (its status, wave, plan)."""
        self.runs[record.id] = record


def software_of(reported: Mapping[str, Any]) -> tuple[str, dict[str, str]] | None:
    """What a device reports running (state key ``software``): its agent's version and its
    bundles' versions by name, the malformed parts left out; None if it reports nothing."""
    software = reported.get(SOFTWARE_KEY)
    if not isinstance(software, dict):
        return None
    agent = software.get("agent_version")
    bundles = software.get("bundles")
    named = bundles.items() if isinstance(bundles, dict) else ()
    versions = {str(name): v for name, v in named if isinstance(v, str)}
    return (agent if isinstance(agent, str) else "", versions)


def installed_version(reported: Mapping[str, Any], bundle: str) -> str | None:
    """The version of ``bundle`` a device reports running, if any."""
    software = software_of(reported)
    return software[1].get(bundle) if software is not None else None


def save_all(
    conn: Connection,
    *,
    jobs: list[tuple[RolloutRecord | None, list[RolloutDeviceRecord]]],
    audit: list[dict[str, Any]],
) -> None:
    """Write each rollout's record and changed devices, then the audit entries."""
    for record, devices in jobs:
        sql.save_rollout(conn, record, devices)
    sql.save_rollout(conn, None, (), audit)


def load_runs(
    conn: Connection, *, rollout_id: str | None = None, everything: bool = False
) -> list[Run]:
    """Rollouts with their bundles and devices: the unfinished ones, one, or every one."""
    records = sql.rollout_rows(
        conn, rollout_id=rollout_id, unfinished=not (everything or rollout_id)
    )
    bundles = {bundle.id: bundle for bundle in sql.bundle_rows(conn)}
    devices: dict[str, dict[str, RolloutDeviceRecord]] = {}
    for device in sql.rollout_device_rows(conn, [record.id for record in records]):
        devices.setdefault(device.rollout_id, {})[device.device_id] = device
    return [
        Run(
            record,
            Plan.from_dict(record.plan),
            bundles[record.bundle_id],
            devices.get(record.id, {}),
        )
        for record in records
        if record.bundle_id in bundles
    ]
