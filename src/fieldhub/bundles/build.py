"""Making a bundle on the signer's machine: hash the payload, draft the manifest, sign, pack.

Two steps, so that a person can read what they sign: :func:`draft_manifest` describes a
folder's ``files/`` (``fieldhub bundle build`` writes it as ``manifest.json``), then
:func:`sign_bundle` sets the signer's key id, checks the payload still matches the draft,
signs the manifest's exact bytes and packs the archive (``fieldhub bundle sign``).
:func:`make_bundle` does both at once, for scripts and tests.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec

from fieldhub.bundles.archive import PAYLOAD_DIR, pack
from fieldhub.bundles.keys import SigningKey
from fieldhub.bundles.manifest import (
    FORMAT,
    FileEntry,
    Manifest,
    encode_manifest,
    is_safe_path,
    parse_manifest,
)
from fieldhub.bundles.refusal import BundleRefused

__all__ = ["BuildError", "draft_manifest", "make_bundle", "read_payload", "sign_bundle"]

_DRAFT_KEY_ID = "0" * 16


class BuildError(ValueError):
    """The folder or the options cannot make a valid bundle; the message says why."""


def read_payload(root: Path) -> dict[str, bytes]:
    """The files under ``root/files``, by path relative to it.

    Raises:
        BuildError: no such folder, a symlink or special file, or a name a bundle cannot hold.
    """
    base = root / PAYLOAD_DIR
    if not base.is_dir():
        raise BuildError(f"{base} is not a folder: put the payload under {PAYLOAD_DIR}/")
    payload: dict[str, bytes] = {}
    for path in sorted(base.rglob("*")):
        relative = path.relative_to(base).as_posix()
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            raise BuildError(f"{path}: only regular files and folders go into a bundle")
        if not is_safe_path(relative):
            raise BuildError(f"{path}: names are letters, digits, '.', '_', '-', no leading dot")
        if path.is_file():
            payload[relative] = path.read_bytes()
    return payload


def draft_manifest(
    payload: Mapping[str, bytes],
    *,
    name: str,
    version: str,
    min_agent_version: str = "0",
    target: Mapping[str, Any] | None = None,
    config: str | None = None,
    actions: Sequence[Mapping[str, Any]] | None = None,
    health: Mapping[str, Any] | None = None,
    created_at: int | None = None,
) -> dict[str, Any]:
    """The manifest, without the key id only the signer knows, as plain JSON data.

    Raises:
        BuildError: a field is not valid (the message names it).
    """
    draft: dict[str, Any] = {
        "format": FORMAT,
        "name": name,
        "version": version,
        "min_agent_version": min_agent_version,
        "target": dict(target or {}),
        "files": {
            path: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
            for path, data in sorted(payload.items())
        },
        "config": config,
        "actions": [dict(action) for action in actions or []],
        "health": dict(health) if health is not None else None,
        "created_at": created_at if created_at is not None else int(time.time() * 1000),
    }
    _checked(draft, _DRAFT_KEY_ID)
    return draft


def sign_bundle(
    draft: Mapping[str, Any], payload: Mapping[str, bytes], key: SigningKey
) -> tuple[bytes, bytes, bytes]:
    """Sign ``draft`` with ``key``: the manifest's bytes, its signature and the bundle file.

    Raises:
        BuildError: the draft is not valid, or the payload changed since it was drafted.
    """
    manifest = _checked(draft, key.public.key_id)
    actual = {
        path: FileEntry(hashlib.sha256(data).hexdigest(), len(data))
        for path, data in payload.items()
    }
    if actual != manifest.files:
        changed = sorted({path for path, _ in set(actual.items()) ^ set(manifest.files.items())})
        raise BuildError(f"files changed since the manifest was built: {changed}")
    manifest_bytes = encode_manifest(manifest)
    signature = key.sign(manifest_bytes)
    return manifest_bytes, signature, pack(manifest_bytes, signature, payload, _mtime(manifest))


def make_bundle(
    payload: Mapping[str, bytes], key: SigningKey, *, name: str, version: str, **fields: Any
) -> bytes:
    """A signed bundle file from a payload in memory (scripts, tests, benchmarks)."""
    draft = draft_manifest(payload, name=name, version=version, **fields)
    return sign_bundle(draft, payload, key)[2]


def _checked(draft: Mapping[str, Any], key_id: str) -> Manifest:
    data = msgspec.json.encode({**draft, "key_id": key_id})
    try:
        return parse_manifest(data)
    except BundleRefused as exc:  # always "malformed": the message names the field
        raise BuildError(exc.message) from None


def _mtime(manifest: Manifest) -> int:
    return manifest.created_at // 1000
