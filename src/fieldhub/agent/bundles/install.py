"""The two halves of an install: judge everything in memory, then write and switch.

:func:`prepare` downloads, verifies (signature, then files: ``fieldhub.bundles.verify``) and
checks against the device (``checks``) without touching the active area. Only a bundle that
passed reaches :func:`write_and_switch`, which moves the active area forward one journaled
step at a time (``journal``), ending with the trial's deadline recorded and ``current``
pointing to the new version.
"""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass
from pathlib import Path

import msgspec

from fieldhub.agent.bundles import journal as journals
from fieldhub.agent.bundles.checks import check_config, check_for_device
from fieldhub.agent.bundles.download import download
from fieldhub.agent.bundles.installed import CURRENT, FULL_DISK, PREVIOUS, Installed
from fieldhub.agent.bundles.journal import Journal, crash_point
from fieldhub.agent.config import AgentConfig
from fieldhub.bundles.refusal import BundleRefused, Reason
from fieldhub.clock import now_ms
from fieldhub.private_files import private_dir

__all__ = ["Prepared", "prepare", "write_and_switch"]

_SPACE_MARGIN = 1 << 20  # beyond the payload: manifest, directories, the journal


@dataclass(frozen=True)
class Prepared:
    """A bundle that passed every check, ready to be written."""

    name: str
    version: str
    manifest: bytes
    payload: dict[str, bytes]
    payload_bytes: int
    trial_s: float


async def prepare(
    config: AgentConfig,
    installed: Installed,
    scratch: Path,
    *,
    url: str,
    sha256: str,
    size: int,
    announced: tuple[str, str],
    force: str,
) -> Prepared:
    """Download and judge a bundle; nothing is written to the active area.

    Raises:
        BundleRefused: the first fault, with its reason code.
    """
    settings = config.bundles
    data = await asyncio.to_thread(download, url, size, sha256, settings)
    from fieldhub.bundles.keys import BadKey, PublicKey
    from fieldhub.bundles.verify import open_verified

    try:
        keys = [
            PublicKey.from_text(text, until_ms=until) for text, until in settings.keys_with_expiry()
        ]
    except BadKey as exc:  # the config's pattern lets only 32-byte keys through
        raise BundleRefused(Reason.UNKNOWN_KEY, f"bundles.trusted_keys: {exc}") from None
    verified = await asyncio.to_thread(open_verified, data, keys, settings.revoked_keys)
    manifest = verified.manifest
    current = installed.get(manifest.name)
    check_for_device(
        manifest,
        config,
        announced=announced,
        installed=current.version if current is not None else None,
        force=force,
        keys=keys,
    )
    if manifest.config is not None:
        others = [
            b.name
            for b in installed.running().values()
            if b.name != manifest.name and b.manifest.config is not None
        ]
        if others:
            raise BundleRefused(
                Reason.BAD_CONFIG, f"agent.yaml already comes from bundle {others[0]}"
            )
        try:
            await asyncio.to_thread(
                check_config, verified.payload[manifest.config], config, private_dir(scratch)
            )
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    needed = manifest.payload_bytes + _SPACE_MARGIN
    free = installed.free_bytes()
    if needed > free:
        raise BundleRefused(Reason.DISK_FULL, f"needs {needed} bytes, {free} free")
    health = manifest.health
    return Prepared(
        name=manifest.name,
        version=manifest.version,
        manifest=msgspec.json.encode(manifest),
        payload=verified.payload,
        payload_bytes=manifest.payload_bytes,
        trial_s=health.timeout_s if health is not None else settings.trial_timeout_s,
    )


def write_and_switch(
    installed: Installed, journal_path: Path, prepared: Prepared, sha256: str
) -> Journal:
    """Write the version, switch to it, record the trial; the journal of the trial (blocking).

    Raises:
        BundleRefused: ``disk_full`` or ``write_failed``; what was written is removed.
    """
    name = prepared.name
    journal = Journal(
        step="writing",
        name=name,
        version=prepared.version,
        directory=f"{prepared.version}-{sha256[:12]}",
        previous=installed.target(name, CURRENT),
        older=installed.target(name, PREVIOUS),
    )
    try:
        journals.save(journal_path, journal)
        crash_point("writing")
        installed.write(name, journal.directory, prepared.manifest, prepared.payload)
    except (BundleRefused, OSError) as exc:
        installed.prune(name)
        journals.clear(journal_path)
        if isinstance(exc, BundleRefused):
            raise
        if exc.errno in FULL_DISK:
            raise BundleRefused(Reason.DISK_FULL, f"writing {name}: {exc.strerror}") from None
        raise BundleRefused(Reason.WRITE_FAILED, f"writing {name}: {exc}") from None
    crash_point("written")
    journal = msgspec.structs.replace(journal, step="switching")
    journals.save(journal_path, journal)
    crash_point("switching")
    installed.point(name, PREVIOUS, journal.previous)
    installed.point(name, CURRENT, journal.directory)
    crash_point("switched")
    deadline = now_ms() + int(prepared.trial_s * 1000)
    journal = msgspec.structs.replace(journal, step="trial", deadline_ms=deadline)
    journals.save(journal_path, journal)
    return journal
