"""Bundles, their public keys, rollouts and rollout devices: the SQL of ``hub/rollouts/``.

Every function takes a ``Connection`` and runs in the caller's transaction (a write job of the
hub's writer, or a read), so a rollout's state change and its audit entry commit together.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection, Row

from fieldhub.hub.errors import Conflict, NotFound
from fieldhub.hub.store.schema import audit_log, bundle_keys, bundles, rollout_devices, rollouts

__all__ = [
    "UNFINISHED",
    "BundleExists",
    "BundleKeyRecord",
    "BundleNotFound",
    "BundleRecord",
    "RolloutDeviceRecord",
    "RolloutNotFound",
    "RolloutRecord",
    "add_key",
    "bundle_rows",
    "delete_bundle",
    "insert_audit",
    "insert_bundle",
    "insert_rollout",
    "key_rows",
    "revoke_key",
    "rollout_device_rows",
    "rollout_rows",
    "save_rollout",
]


UNFINISHED = ("running", "waiting", "paused", "aborting")
"""Rollout states that still have work (loaded again when the hub starts)."""


class BundleNotFound(NotFound):
    """No bundle (or bundle key) with this id."""


class BundleExists(Conflict):
    """A bundle of this name and version is stored already (with other content)."""


class RolloutNotFound(NotFound):
    """No rollout with this id, or none of the caller's devices in it."""


@dataclass(frozen=True, slots=True)
class BundleKeyRecord:
    """A public key bundles may be signed with."""

    key_id: str
    name: str
    public_key: str
    added_at: int
    added_by: str
    revoked_at: int | None = None
    expires_at: int | None = None


@dataclass(frozen=True, slots=True)
class BundleRecord:
    """A stored bundle: its file is ``DATA/bundles/<id>.fhb``."""

    id: str
    name: str
    version: str
    size: int
    key_id: str
    manifest: dict[str, Any]
    uploaded_at: int
    uploaded_by: str


@dataclass(slots=True)
class RolloutRecord:
    """A rollout as stored; ``plan`` as ``rollouts/plan.py`` reads it."""

    id: str
    bundle_id: str
    plan: dict[str, Any]
    status: str
    wave: int
    reason: str
    created_by: str
    created_at: int
    updated_at: int


@dataclass(slots=True)
class RolloutDeviceRecord:
    """One device's part in a rollout."""

    rollout_id: str
    device_id: str
    wave: int
    state: str
    updated_at: int
    attempts: int = 0
    command_id: str | None = None
    deadline_at: int | None = None
    reason: str = ""
    previous: str = ""


def _from(cls: Any, row: Row[Any]) -> Any:
    return cls(**row._mapping)


def insert_audit(conn: Connection, entry: dict[str, Any]) -> None:
    """One audit entry (``store/audit.py``'s ``audit_row``), in the change's transaction."""
    conn.execute(insert(audit_log).values(**entry))


def add_key(conn: Connection, record: BundleKeyRecord) -> None:
    """Register a public key (a key registered before, even revoked, is a conflict: a
    revoked key never comes back)."""
    if conn.execute(
        select(bundle_keys.c.key_id).where(bundle_keys.c.key_id == record.key_id)
    ).first():
        raise Conflict(f"key {record.key_id} is registered already")
    conn.execute(insert(bundle_keys).values(**asdict(record)))


def revoke_key(conn: Connection, key_id: str, at: int) -> None:
    """Mark a key revoked; bundles it signed can no longer be rolled out."""
    done = conn.execute(
        update(bundle_keys)
        .where(bundle_keys.c.key_id == key_id, bundle_keys.c.revoked_at.is_(None))
        .values(revoked_at=at)
    )
    if not done.rowcount:
        raise BundleNotFound(f"no key {key_id!r} that is not revoked")


def key_rows(conn: Connection) -> list[BundleKeyRecord]:
    """Every registered key, revoked ones too."""
    query = select(bundle_keys).order_by(bundle_keys.c.added_at)
    return [_from(BundleKeyRecord, row) for row in conn.execute(query)]


def insert_bundle(conn: Connection, record: BundleRecord) -> bool:
    """Store a bundle's record; False when this very file is stored already.

    Raises:
        BundleExists: another file has its name and version.
    """
    same = conn.execute(
        select(bundles.c.id).where(
            bundles.c.name == record.name, bundles.c.version == record.version
        )
    ).first()
    if same is not None:
        if same.id == record.id:
            return False
        raise BundleExists(
            f"bundle {record.name} {record.version} is stored already ({same.id[:12]})"
        )
    conn.execute(insert(bundles).values(**asdict(record)))
    return True


def bundle_rows(conn: Connection, bundle_id: str | None = None) -> list[BundleRecord]:
    """Every bundle, newest first (or the one ``bundle_id``)."""
    query = select(bundles).order_by(bundles.c.uploaded_at.desc(), bundles.c.id)
    if bundle_id is not None:
        query = query.where(bundles.c.id == bundle_id)
    return [_from(BundleRecord, row) for row in conn.execute(query)]


def delete_bundle(conn: Connection, bundle_id: str) -> None:
    """Forget a bundle that no unfinished rollout uses.

    Raises:
        BundleNotFound: no such bundle.
        Conflict: a rollout still sends it.
    """
    busy = conn.execute(
        select(rollouts.c.id).where(
            rollouts.c.bundle_id == bundle_id, rollouts.c.status.in_(UNFINISHED)
        )
    ).first()
    if busy is not None:
        raise Conflict(f"rollout {busy.id} still sends this bundle: abort it first")
    if not conn.execute(delete(bundles).where(bundles.c.id == bundle_id)).rowcount:
        raise BundleNotFound(f"no bundle {bundle_id!r}")


def insert_rollout(
    conn: Connection,
    rollout: RolloutRecord,
    devices: Iterable[RolloutDeviceRecord],
    audit: dict[str, Any],
) -> None:
    """A new rollout, its devices and its audit entry, together."""
    conn.execute(insert(rollouts).values(**asdict(rollout)))
    rows = [asdict(device) for device in devices]
    if rows:
        conn.execute(insert(rollout_devices), rows)
    conn.execute(insert(audit_log).values(**audit))


def save_rollout(
    conn: Connection,
    rollout: RolloutRecord | None,
    devices: Iterable[RolloutDeviceRecord],
    audit: Iterable[dict[str, Any]] = (),
) -> None:
    """Write a rollout's changed state and changed devices (and audit entries)."""
    if rollout is not None:
        values = {k: v for k, v in asdict(rollout).items() if k != "id"}
        conn.execute(update(rollouts).where(rollouts.c.id == rollout.id).values(**values))
    table = rollout_devices.c
    for device in devices:
        values = {k: v for k, v in asdict(device).items() if k not in ("rollout_id", "device_id")}
        conn.execute(
            update(rollout_devices)
            .where(table.rollout_id == device.rollout_id, table.device_id == device.device_id)
            .values(**values)
        )
    entries = list(audit)
    if entries:
        conn.execute(insert(audit_log), entries)


def rollout_rows(
    conn: Connection, *, rollout_id: str | None = None, unfinished: bool = False
) -> list[RolloutRecord]:
    """Rollouts, newest first: every one, one by id, or those still at work."""
    columns = [rollouts.c[field.name] for field in fields(RolloutRecord)]  # not the lease's
    query = select(*columns).order_by(rollouts.c.created_at.desc(), rollouts.c.id)
    if rollout_id is not None:
        query = query.where(rollouts.c.id == rollout_id)
    if unfinished:
        query = query.where(rollouts.c.status.in_(UNFINISHED))
    return [_from(RolloutRecord, row) for row in conn.execute(query)]


def rollout_device_rows(conn: Connection, rollout_ids: Iterable[str]) -> list[RolloutDeviceRecord]:
    """The devices of these rollouts, by rollout, wave and id."""
    table = rollout_devices.c
    query = (
        select(rollout_devices)
        .where(table.rollout_id.in_(list(rollout_ids)))
        .order_by(table.rollout_id, table.wave, table.device_id)
    )
    return [_from(RolloutDeviceRecord, row) for row in conn.execute(query)]
