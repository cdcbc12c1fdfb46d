"""Whether a bundle may be trusted: the one place that decides, for the agent and the hub.

The order is the point. The signature is checked over the manifest's exact bytes **before**
the manifest is parsed, so nothing an attacker wrote is interpreted before a trusted key has
vouched for it (only the key id is peeked at, to say *why* a bundle is refused); a revoked
key, or one past its expiry by the verifier's clock, vouches for nothing. Then each
archive member is judged against the signed manifest: its kind (files only), its path (under
``files/``, no way out), its presence in the manifest, its size and SHA-256; last, every
listed file must be there. The first fault refuses the whole bundle with its reason code.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable
from dataclasses import dataclass

import msgspec

from fieldhub.bundles.archive import PAYLOAD_DIR, Kind, Member, unpack
from fieldhub.bundles.keys import PublicKey, utc_text
from fieldhub.bundles.manifest import Manifest, is_safe_path, parse_manifest
from fieldhub.bundles.refusal import BundleRefused, Reason
from fieldhub.clock import now_ms

__all__ = ["VerifiedBundle", "open_verified", "read_manifest", "verify_bundle"]


@dataclass(frozen=True)
class VerifiedBundle:
    """A bundle that passed every check: its manifest and its payload (path → bytes)."""

    manifest: Manifest
    payload: dict[str, bytes]


def read_manifest(data: bytes) -> Manifest:
    """The manifest of a bundle file, checked for shape only: **not** a proof of anything.

    For showing a bundle (the hub's list, ``fieldhub bundle inspect``) before or without
    verifying it.

    Raises:
        BundleRefused: ``malformed``.
    """
    return parse_manifest(unpack(data).manifest)


def verify_bundle(
    data: bytes,
    trusted_keys: Iterable[PublicKey],
    revoked_key_ids: Collection[str] = (),
    *,
    at_ms: int | None = None,
) -> Manifest:
    """The manifest of a bundle that passes every check (see the module's docstring), with
    keys' expiry judged at ``at_ms`` (now by default).

    Raises:
        BundleRefused: the first fault found, with its reason code.
    """
    return open_verified(data, trusted_keys, revoked_key_ids, at_ms=at_ms).manifest


def open_verified(
    data: bytes,
    trusted_keys: Iterable[PublicKey],
    revoked_key_ids: Collection[str] = (),
    *,
    at_ms: int | None = None,
) -> VerifiedBundle:
    """Like :func:`verify_bundle`, and also the payload's bytes, for installing.

    Raises:
        BundleRefused: the first fault found, with its reason code.
    """
    parts = unpack(data)
    signer = _signer(parts.manifest, parts.signature, list(trusted_keys), revoked_key_ids)
    if signer.expired(now_ms() if at_ms is None else at_ms):
        raise BundleRefused(Reason.KEY_EXPIRED, _expiry_explained(signer, parts.manifest))
    manifest = parse_manifest(parts.manifest)
    if manifest.key_id != signer.key_id:
        raise BundleRefused(
            Reason.MALFORMED, f"signed by key {signer.key_id}, manifest names {manifest.key_id}"
        )
    return VerifiedBundle(manifest, _payload(manifest, parts.members))


def _signer(
    manifest: bytes, signature: bytes, trusted: list[PublicKey], revoked: Collection[str]
) -> PublicKey:
    """The trusted, unrevoked key whose signature this is."""
    signer = next((key for key in trusted if key.verifies(signature, manifest)), None)
    if signer is not None and signer.key_id not in revoked:
        return signer
    claimed = signer.key_id if signer is not None else _claims(manifest).key_id
    if claimed in revoked:
        raise BundleRefused(Reason.REVOKED_KEY, f"signed by revoked key {claimed}")
    if claimed is not None and all(key.key_id != claimed for key in trusted):
        raise BundleRefused(Reason.UNKNOWN_KEY, f"signed by key {claimed}, which is not trusted")
    raise BundleRefused(Reason.BAD_SIGNATURE, "the signature does not match the manifest")


class _Claims(msgspec.Struct):
    key_id: str | None = None
    created_at: int | None = None


def _claims(manifest: bytes) -> _Claims:
    """The key id and making time the (unverified) manifest names, where they can be read:
    only to explain a refusal, never to decide that a bundle is good."""
    try:
        return msgspec.json.decode(manifest, type=_Claims)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return _Claims()


def _expiry_explained(signer: PublicKey, manifest: bytes) -> str:
    """Why an expired key's bundle is refused, with when the bundle says it was made: made
    after the expiry means the key signed past its date (a leaked or forgotten key); made
    before, it is refused all the same (docs/bundles.md: a signer can back-date anything)."""
    said = f"signed by key {signer.key_id}, which expired at {signer.until}"
    made, until = _claims(manifest).created_at, signer.until_ms
    if made is None or until is None:
        return said
    if made >= until:
        return f"{said}; the bundle was made at {utc_text(made)}, after its key had expired"
    return (
        f"{said}; the bundle was made at {utc_text(made)}, before that, but a key past its "
        "date vouches for nothing: sign it again with a current key"
    )


def _payload(manifest: Manifest, members: list[Member]) -> dict[str, bytes]:
    payload: dict[str, bytes] = {}
    seen: set[str] = set()
    prefix = f"{PAYLOAD_DIR}/"
    for member in members:
        shown = ascii(member.name)
        if member.kind is Kind.OTHER:
            raise BundleRefused(Reason.UNSAFE_MEMBER, f"{shown} is not a regular file")
        path = member.name.removeprefix(prefix)
        if member.kind is Kind.DIRECTORY and member.name == PAYLOAD_DIR:
            continue
        if not member.name.startswith(prefix) or not is_safe_path(path):
            raise BundleRefused(Reason.UNSAFE_PATH, f"{shown} is not a path under {prefix}")
        if path in seen:
            raise BundleRefused(Reason.DUPLICATE_MEMBER, f"{shown} is in the archive twice")
        seen.add(path)
        if member.kind is Kind.DIRECTORY:
            continue
        entry = manifest.files.get(path)
        if entry is None:
            raise BundleRefused(Reason.UNLISTED_FILE, f"{shown} is not in the manifest")
        if len(member.data) != entry.size:
            raise BundleRefused(
                Reason.FILE_MISMATCH, f"{shown} has {len(member.data)} bytes, not {entry.size}"
            )
        if hashlib.sha256(member.data).hexdigest() != entry.sha256:
            raise BundleRefused(Reason.FILE_MISMATCH, f"{shown} does not match its SHA-256")
        payload[path] = member.data
    missing = sorted(set(manifest.files) - set(payload))
    if missing:
        raise BundleRefused(Reason.MISSING_FILE, f"missing from the archive: {missing[:5]}")
    return payload
