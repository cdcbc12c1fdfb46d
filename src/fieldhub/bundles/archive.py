"""A bundle file (``.fhb``) as its parts, read from memory and never extracted by tarfile.

The archive is a plain (uncompressed) tar: ``manifest.json``, ``manifest.sig`` and the payload
under ``files/``. Compression is left out on purpose: a bundle is small, and an uncompressed
archive cannot expand beyond the bytes that were downloaded and counted. tarfile's own
extraction is never used (it would follow links and write where a name points); each
member's kind, name and bytes are only read into memory, to be judged by ``verify``.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Final

from fieldhub.bundles.refusal import BundleRefused, Reason

__all__ = [
    "MANIFEST_NAME",
    "PAYLOAD_DIR",
    "SIGNATURE_NAME",
    "Kind",
    "Member",
    "Parts",
    "pack",
    "unpack",
]

MANIFEST_NAME: Final = "manifest.json"
SIGNATURE_NAME: Final = "manifest.sig"
PAYLOAD_DIR: Final = "files"
_SIGNATURE_BYTES: Final = 64
_END_MARKER: Final = 1024  # two zero blocks end a tar
_FILE_MODE: Final = 0o644


class Kind(Enum):
    """What a tar member is, as far as a bundle cares."""

    FILE = "file"
    DIRECTORY = "directory"
    OTHER = "other"  # symlink, hard link, device, fifo, sparse: never allowed


@dataclass(frozen=True)
class Member:
    """One payload member as the archive declares it (name exactly as stored)."""

    name: str
    kind: Kind
    data: bytes = b""


@dataclass(frozen=True)
class Parts:
    """The archive split: the manifest's exact bytes, the signature, the other members."""

    manifest: bytes
    signature: bytes
    members: list[Member]


def unpack(data: bytes) -> Parts:
    """Split a bundle file into its parts, in memory.

    Raises:
        BundleRefused: ``malformed``: not a tar, truncated, no manifest or signature, either
            of them twice or of another kind.
    """
    manifest: bytes | None = None
    signature: bytes | None = None
    members: list[Member] = []
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for info in tar:
                kind = _kind(info)
                content = _content(tar, info) if kind is Kind.FILE else b""
                if info.name in (MANIFEST_NAME, SIGNATURE_NAME):
                    if kind is not Kind.FILE:
                        raise BundleRefused(Reason.MALFORMED, f"{info.name} is not a file")
                    if (manifest if info.name == MANIFEST_NAME else signature) is not None:
                        raise BundleRefused(Reason.MALFORMED, f"{info.name} given twice")
                    if info.name == MANIFEST_NAME:
                        manifest = content
                    else:
                        signature = content
                else:
                    members.append(Member(info.name, kind, content))
            end = tar.offset
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise BundleRefused(Reason.MALFORMED, f"not a readable bundle archive: {exc}") from None
    if data[end : end + _END_MARKER] != bytes(_END_MARKER):
        # tarfile stops quietly at a header cut short: without this, a truncated bundle would
        # look like a whole one that lacks files.
        raise BundleRefused(Reason.MALFORMED, "the archive is cut short (no end-of-archive mark)")
    if manifest is None or signature is None:
        raise BundleRefused(
            Reason.MALFORMED, f"a bundle holds {MANIFEST_NAME} and {SIGNATURE_NAME}"
        )
    if len(signature) != _SIGNATURE_BYTES:
        raise BundleRefused(Reason.MALFORMED, f"{SIGNATURE_NAME} is not an Ed25519 signature")
    return Parts(manifest, signature, members)


def pack(manifest: bytes, signature: bytes, payload: Mapping[str, bytes], mtime: int) -> bytes:
    """The bundle file: manifest, signature, then the payload (paths relative to ``files/``)
    in sorted order, with fixed owners and modes, so the same inputs give the same bytes."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:", format=tarfile.PAX_FORMAT) as tar:
        entries = [(MANIFEST_NAME, manifest), (SIGNATURE_NAME, signature)]
        entries += [(f"{PAYLOAD_DIR}/{path}", payload[path]) for path in sorted(payload)]
        for name, content in entries:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(content), mtime, _FILE_MODE
            tar.addfile(info, io.BytesIO(content))
    return out.getvalue()


def _kind(info: tarfile.TarInfo) -> Kind:
    if info.type in (tarfile.REGTYPE, tarfile.AREGTYPE):
        return Kind.FILE
    if info.type == tarfile.DIRTYPE:
        return Kind.DIRECTORY
    return Kind.OTHER


def _content(tar: tarfile.TarFile, info: tarfile.TarInfo) -> bytes:
    stream = tar.extractfile(info)
    if stream is None:  # pragma: no cover - only for non-files, which are not read
        return b""
    content = stream.read()
    if len(content) != info.size:
        raise EOFError(f"{info.name} is cut short")
    return content
