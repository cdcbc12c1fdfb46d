"""Signed bundles: the format every side shares (the signer's CLI, the hub, the agent).

A bundle (``.fhb``) is a plain tar of ``manifest.json``, ``manifest.sig`` (Ed25519 over the
manifest's exact bytes) and the payload under ``files/``. The hub reads manifests
(:func:`read_manifest`) and may verify them for display; only the agent installs, and only
what :func:`verify_bundle` / :func:`open_verified` accept. Nothing here imports a program:
this package is below the hub, the agent and the CLI (docs/bundles.md).

The names below are imported on first use: the agent reads its installed manifests at every
start (``fieldhub.bundles.manifest``, msgspec only) and must not pay for ``cryptography``
(about 6 MB of a 30 MB budget) until a bundle actually arrives.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fieldhub.bundles.build import (
        BuildError,
        draft_manifest,
        make_bundle,
        read_payload,
        sign_bundle,
    )
    from fieldhub.bundles.keys import BadKey, PublicKey, SigningKey, key_id_of
    from fieldhub.bundles.manifest import Manifest, parse_version
    from fieldhub.bundles.refusal import BundleRefused, Reason
    from fieldhub.bundles.verify import VerifiedBundle, open_verified, read_manifest, verify_bundle

_HOMES = {
    "BadKey": "keys",
    "BuildError": "build",
    "BundleRefused": "refusal",
    "Manifest": "manifest",
    "PublicKey": "keys",
    "Reason": "refusal",
    "SigningKey": "keys",
    "VerifiedBundle": "verify",
    "draft_manifest": "build",
    "key_id_of": "keys",
    "make_bundle": "build",
    "open_verified": "verify",
    "parse_version": "manifest",
    "read_manifest": "verify",
    "read_payload": "build",
    "sign_bundle": "build",
    "verify_bundle": "verify",
}
__all__ = [
    "BadKey",
    "BuildError",
    "BundleRefused",
    "Manifest",
    "PublicKey",
    "Reason",
    "SigningKey",
    "VerifiedBundle",
    "draft_manifest",
    "key_id_of",
    "make_bundle",
    "open_verified",
    "parse_version",
    "read_manifest",
    "read_payload",
    "sign_bundle",
    "verify_bundle",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'fieldhub.bundles' has no attribute {name!r}")
    return getattr(importlib.import_module(f"fieldhub.bundles.{home}"), name)
