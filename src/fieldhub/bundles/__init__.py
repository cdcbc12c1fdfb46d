"""Signed bundles: the format every side shares (the signer's CLI, the hub, the agent).

A bundle (``.fhb``) is a plain tar of ``manifest.json``, ``manifest.sig`` (Ed25519 over the
manifest's exact bytes) and the payload under ``files/``. The hub reads manifests
(:func:`read_manifest`) and may verify them for display; only the agent installs, and only
what :func:`verify_bundle` / :func:`open_verified` accept. Nothing here imports a program:
this package is below the hub, the agent and the CLI (docs/bundles.md).
"""

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
