"""Signed bundles kept by the hub: public keys registered by admins, bundles verified against
them on upload, stored once per content, served to devices.

Why the hub verifies at all, though every device verifies again before it installs: a bundle
signed by a key the fleet does not trust, or tampered on its way to the hub, is refused at
the upload with its reason (``unknown_key``, ``file_mismatch``, …), not discovered as 100
``bundle.refused`` events in the middle of a rollout. The hub never holds a private key: it
cannot sign, only pass on what a signer made (docs/rollouts.md).

Files are content-addressed (``DATA/bundles/<sha256>.fhb``, 0600, written all or nothing):
the SHA-256 is the bundle's id, the name the install command sends, and what the device
checks the download against.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from collections.abc import Callable, Coroutine
from functools import partial
from pathlib import Path
from typing import Any, Final, TypeVar

import msgspec
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from fieldhub.bundles.keys import BadKey, PublicKey
from fieldhub.bundles.refusal import BundleRefused
from fieldhub.bundles.verify import verify_bundle
from fieldhub.clock import now_ms
from fieldhub.hub.errors import Invalid
from fieldhub.hub.store import rollouts as sql
from fieldhub.hub.store.audit import audit_row
from fieldhub.hub.store.rollouts import BundleKeyRecord, BundleNotFound, BundleRecord
from fieldhub.hub.store.writes import Writes
from fieldhub.private_files import private_dir, write_private

__all__ = ["BundleInvalid", "Bundles"]

FOLDER: Final = "bundles"
T = TypeVar("T")
Audit = Callable[..., Coroutine[Any, Any, None]]


class BundleInvalid(Invalid):
    """An upload refused: not a bundle, tampered, or signed by a key the hub does not trust.

    ``reason`` is the refusal's code (``fieldhub.bundles.Reason``), as devices report it.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}", ("body",))
        self.reason = reason


class Bundles:
    """Public keys and bundles (see the module's text).

    Args:
        engine: for reads.
        writes: the hub's writer.
        data: the hub's data folder (bundle files go to ``bundles/`` in it).
    """

    def __init__(self, engine: AsyncEngine, writes: Writes, data: Path) -> None:
        self._engine = engine
        self._writes = writes
        self.folder = data / FOLDER
        self.refusals: Counter[str] = Counter()
        """Uploads refused, by reason code (``bad_key`` for a key that is not one)."""

    # -- keys -----------------------------------------------------------------------------
    async def add_key(
        self, text: str, name: str, *, expires_at: int | None = None, actor: str, source: str
    ) -> BundleKeyRecord:
        """Register a public key (base64 of the raw Ed25519 key, as ``bundle keygen`` prints),
        trusted until ``expires_at`` (epoch ms) if given.

        Raises:
            Invalid: not such a key (on ``public_key``).
            Conflict: registered already (a revoked key never comes back).
        """
        try:
            key = PublicKey.from_text(text)
        except BadKey as exc:
            self.refusals["bad_key"] += 1
            raise Invalid(str(exc), ("body", "public_key")) from None
        record = BundleKeyRecord(
            key.key_id, name, key.to_text(), now_ms(), actor, expires_at=expires_at
        )
        detail = {"name": name, "expires_at": expires_at}
        audit = audit_row(
            actor, "bundle.key.added", key.key_id, "ok", source, detail, ts=record.added_at
        )
        await self._writes.run(partial(_add_key, record=record, audit=audit))
        return record

    async def revoke_key(self, key_id: str, *, actor: str, source: str) -> None:
        """Revoke a key: bundles it signed are refused from now on (uploads and rollouts).

        Raises:
            BundleNotFound: no such key, or revoked already.
        """
        at = now_ms()
        audit = audit_row(actor, "bundle.key.revoked", key_id, "ok", source, ts=at)
        await self._writes.run(partial(_revoke_key, key_id=key_id, at=at, audit=audit))

    async def keys(self) -> list[BundleKeyRecord]:
        """Every key, revoked ones too."""
        return await self._read(sql.key_rows)

    # -- bundles --------------------------------------------------------------------------
    async def upload(self, data: bytes, *, actor: str, source: str) -> tuple[BundleRecord, bool]:
        """Verify and store a bundle file; the record, and whether it is new (the same file
        uploaded again is no error).

        Raises:
            BundleInvalid: refused, with the reason (counted by it).
            BundleExists: another file of the same name and version is stored.
        """
        if not data:  # the commonest mistake: a wrong file name given to curl
            self.refusals["malformed"] += 1
            raise BundleInvalid("malformed", "the body is empty: send the .fhb file's bytes")
        trusted, revoked = await self._trust()
        try:
            manifest = verify_bundle(data, trusted, revoked)
        except BundleRefused as refused:
            self.refusals[refused.reason.value] += 1
            raise BundleInvalid(refused.reason.value, refused.message) from None
        digest = hashlib.sha256(data).hexdigest()
        record = BundleRecord(
            id=digest,
            name=manifest.name,
            version=manifest.version,
            size=len(data),
            key_id=manifest.key_id,
            manifest=msgspec.to_builtins(manifest),
            uploaded_at=now_ms(),
            uploaded_by=actor,
        )
        await asyncio.to_thread(self._write_file, digest, data)  # before the row names it
        detail = {"name": record.name, "version": record.version, "size": record.size}
        audit = audit_row(
            actor, "bundle.uploaded", digest, "ok", source, detail, ts=record.uploaded_at
        )
        new = await self._writes.run(partial(_insert_bundle, record=record, audit=audit))
        return record, new

    async def listing(self) -> list[BundleRecord]:
        """Every bundle, newest first."""
        return await self._read(sql.bundle_rows)

    async def get(self, bundle_id: str) -> BundleRecord:
        """One bundle.

        Raises:
            BundleNotFound: none with this id.
        """
        found = await self._read(partial(sql.bundle_rows, bundle_id=bundle_id))
        if not found:
            raise BundleNotFound(f"no bundle {bundle_id!r}")
        return found[0]

    async def to_send(self, bundle_id: str) -> BundleRecord:
        """A bundle a rollout may send: stored, and its key neither revoked nor expired since
        the upload (devices would refuse it).

        Raises:
            BundleNotFound: none with this id.
            BundleInvalid: its key was revoked (``revoked_key``) or expired (``key_expired``).
        """
        bundle = await self.get(bundle_id)
        trusted, revoked = await self._trust()
        if bundle.key_id in revoked:
            self.refusals["revoked_key"] += 1
            raise BundleInvalid("revoked_key", f"signed by key {bundle.key_id}, revoked since")
        signer = next((key for key in trusted if key.key_id == bundle.key_id), None)
        if signer is not None and signer.expired(now_ms()):
            self.refusals["key_expired"] += 1
            raise BundleInvalid(
                "key_expired", f"signed by key {bundle.key_id}, which expired at {signer.until}"
            )
        return bundle

    async def delete(self, bundle_id: str, *, actor: str, source: str) -> None:
        """Forget a bundle and its file.

        Raises:
            BundleNotFound: none with this id.
            Conflict: an unfinished rollout sends it.
        """
        audit = audit_row(actor, "bundle.deleted", bundle_id, "ok", source, ts=now_ms())
        await self._writes.run(partial(_delete_bundle, bundle_id=bundle_id, audit=audit))
        self.path(bundle_id).unlink(missing_ok=True)

    async def _trust(self) -> tuple[list[PublicKey], set[str]]:
        """The registered keys with their expiry, and the ids of revoked ones."""
        keys = await self.keys()
        trusted = [PublicKey.from_text(key.public_key, until_ms=key.expires_at) for key in keys]
        return trusted, {key.key_id for key in keys if key.revoked_at is not None}

    def path(self, bundle_id: str) -> Path:
        """Where a bundle's file is."""
        return self.folder / f"{bundle_id}.fhb"

    def _write_file(self, digest: str, data: bytes) -> None:
        private_dir(self.folder)
        path = self.path(digest)
        if not path.exists():
            write_private(path, data)

    async def _read(self, job: Callable[[Connection], T]) -> T:
        async with self._engine.connect() as conn:
            return await conn.run_sync(job)


def _add_key(conn: Connection, *, record: BundleKeyRecord, audit: dict[str, Any]) -> None:
    sql.add_key(conn, record)
    sql.insert_audit(conn, audit)


def _revoke_key(conn: Connection, *, key_id: str, at: int, audit: dict[str, Any]) -> None:
    sql.revoke_key(conn, key_id, at)
    sql.insert_audit(conn, audit)


def _insert_bundle(conn: Connection, *, record: BundleRecord, audit: dict[str, Any]) -> bool:
    new = sql.insert_bundle(conn, record)
    if new:
        sql.insert_audit(conn, audit)
    return new


def _delete_bundle(conn: Connection, *, bundle_id: str, audit: dict[str, Any]) -> None:
    sql.delete_bundle(conn, bundle_id)
    sql.insert_audit(conn, audit)
