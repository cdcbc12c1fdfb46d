"""A bundle's manifest: what it holds, for whom, signed as exact bytes.

``manifest.json`` names the bundle and its version, the devices it is for, every payload file
with its size and SHA-256, and what the bundle brings (site actions, a new ``agent.yaml``, a
health check). ``manifest.sig`` signs its exact bytes, so nothing here is trusted before the
signature is checked (``verify``); :func:`parse_manifest` only says whether the bytes have the
right shape. Paths are relative to the archive's ``files/`` folder, in a form that cannot
climb out of it (no ``..``, no leading ``/``, no component starting with a dot).
"""

from __future__ import annotations

import re
from typing import Annotated, Final, Literal

import msgspec

from fieldhub.bundles.refusal import BundleRefused, Reason
from fieldhub.protocol.actions import ACTION_NAME_PATTERN, ARG_NAME_PATTERN, TypeName

__all__ = [
    "BUNDLE_NAME_PATTERN",
    "FILE_PATH_PATTERN",
    "FORMAT",
    "KEY_ID_PATTERN",
    "MAX_MANIFEST_BYTES",
    "PUBLIC_KEY_PATTERN",
    "SHA256_PATTERN",
    "VERSION_PATTERN",
    "BundleAction",
    "FileEntry",
    "Health",
    "Manifest",
    "Target",
    "encode_manifest",
    "parse_manifest",
    "parse_version",
]

FORMAT: Final = 1
KEY_ID_PATTERN: Final = r"^[0-9a-f]{16}$"
"""A key id: the first 16 hex digits of the SHA-256 of the raw Ed25519 public key."""
PUBLIC_KEY_PATTERN: Final = r"^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$"
"""A public key's one-line form: the base64 of its 32 raw bytes (``fieldhub bundle keygen``)."""
BUNDLE_NAME_PATTERN: Final = r"^[a-z0-9][a-z0-9._-]{0,63}$"
VERSION_PATTERN: Final = r"^[0-9]{1,9}(\.[0-9]{1,9}){0,3}$"
SHA256_PATTERN: Final = r"^[0-9a-f]{64}$"
FILE_PATH_PATTERN: Final = r"^[A-Za-z0-9_][A-Za-z0-9._-]*(/[A-Za-z0-9_][A-Za-z0-9._-]*){0,15}$"
MAX_MANIFEST_BYTES: Final = 256 * 1024
"""A manifest lists files, it does not hold them: a larger one is refused unread."""
MAX_FILES: Final = 4096

_FILE_PATH = re.compile(FILE_PATH_PATTERN)
_Version = Annotated[str, msgspec.Meta(pattern=VERSION_PATTERN)]
_Path = Annotated[str, msgspec.Meta(pattern=FILE_PATH_PATTERN, max_length=255)]


def parse_version(version: str) -> tuple[int, ...]:
    """``"1.4.0"`` → ``(1, 4)``: compared numerically, trailing zeros do not count, so
    ``1.4`` and ``1.4.0`` are the same version and ``1.10`` is above ``1.9``."""
    parts = [int(part) for part in version.split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


class FileEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One payload file: what its bytes must be."""

    sha256: Annotated[str, msgspec.Meta(pattern=SHA256_PATTERN)]
    size: Annotated[int, msgspec.Meta(ge=0)]


class Target(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Which devices the bundle is for: any of ``device_types`` (empty = any type) and every
    one of ``labels`` (empty = no condition)."""

    device_types: list[Annotated[str, msgspec.Meta(min_length=1, max_length=64)]] = []
    labels: dict[str, str] = {}

    def fits(self, device_type: str, labels: dict[str, str]) -> bool:
        """Whether a device of that type with those labels is one the bundle is for."""
        if self.device_types and device_type not in self.device_types:
            return False
        return all(labels.get(key) == value for key, value in self.labels.items())


class BundleAction(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """An action the bundle adds: a Python program among its files, run by the agent as a site
    action (a process of its own under a timeout), never imported into the agent."""

    name: Annotated[str, msgspec.Meta(pattern=ACTION_NAME_PATTERN)]
    program: _Path
    args: dict[Annotated[str, msgspec.Meta(pattern=ARG_NAME_PATTERN)], TypeName] = {}
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 30.0
    duration_s: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 0.0
    description: Annotated[str, msgspec.Meta(max_length=200)] = ""


class Health(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The trial start's check: an action that must succeed within ``timeout_s``."""

    action: Annotated[str, msgspec.Meta(pattern=ACTION_NAME_PATTERN)]
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 60.0


class Manifest(msgspec.Struct, frozen=True, forbid_unknown_fields=False, kw_only=True):
    """``manifest.json`` (unknown fields are ignored, so a newer signer's additions do not break
    an older device; ``format`` changes when an addition must not be ignored)."""

    format: Literal[1]
    name: Annotated[str, msgspec.Meta(pattern=BUNDLE_NAME_PATTERN)]
    version: _Version
    min_agent_version: _Version = "0"
    target: Target = Target()
    files: dict[_Path, FileEntry]
    config: _Path | None = None
    actions: list[BundleAction] = []
    health: Health | None = None
    created_at: Annotated[int, msgspec.Meta(ge=0)]
    key_id: Annotated[str, msgspec.Meta(pattern=KEY_ID_PATTERN)]

    def __post_init__(self) -> None:
        if len(self.files) > MAX_FILES:
            raise ValueError(f"at most {MAX_FILES} files")
        needed = [self.config] if self.config is not None else []
        needed += [action.program for action in self.actions]
        missing = sorted(path for path in needed if path not in self.files)
        if missing:
            raise ValueError(f"config and action programs must be listed in files: {missing}")
        names = [action.name for action in self.actions]
        if len(set(names)) != len(names):
            raise ValueError("action names must be unique")
        if self.health is not None:
            # A built-in action could be the check too, but then a bundle could not fail it
            # any differently after the update than before: useless as a trial.
            check = next((a for a in self.actions if a.name == self.health.action), None)
            if check is None:
                raise ValueError(f"health.action {self.health.action!r} is not one of the actions")
            if check.args:
                raise ValueError(f"health.action {check.name!r} must take no arguments")

    @property
    def payload_bytes(self) -> int:
        """The payload's total size: what installing it writes."""
        return sum(entry.size for entry in self.files.values())


def parse_manifest(data: bytes) -> Manifest:
    """``manifest.json``'s bytes → :class:`Manifest`, checked for shape only (not trusted).

    Raises:
        BundleRefused: ``malformed`` (too large, not JSON, not the schema), naming the field.
    """
    if len(data) > MAX_MANIFEST_BYTES:
        raise BundleRefused(Reason.MALFORMED, f"manifest.json over {MAX_MANIFEST_BYTES} bytes")
    try:
        return msgspec.json.decode(data, type=Manifest)
    except msgspec.ValidationError as exc:
        raise BundleRefused(Reason.MALFORMED, f"manifest.json: {exc}") from None
    except msgspec.DecodeError as exc:
        raise BundleRefused(Reason.MALFORMED, f"manifest.json is not JSON: {exc}") from None


def encode_manifest(manifest: Manifest) -> bytes:
    """The bytes to sign: JSON with sorted keys and an indent, readable in ``inspect``."""
    return msgspec.json.format(msgspec.json.encode(manifest, order="sorted"), indent=2) + b"\n"


def is_safe_path(path: str) -> bool:
    """Whether ``path`` (relative to ``files/``) has the only form a payload path may have."""
    return _FILE_PATH.match(path) is not None
