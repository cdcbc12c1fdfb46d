"""What only the device can judge of a verified bundle: is it for me, now, and is it sane?

After the signature and the files (``fieldhub.bundles.verify``), in this order: the bundle is
the one the hub announced; it is for this device's type and labels; this agent is new enough;
it is not older than what runs (anti-rollback) unless a signed force allows exactly this; its
``agent.yaml``, if any, passes the agent's own schema and keeps what a bundle may not change.
Each refusal carries its reason code. Nothing here writes anything.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from fieldhub import __version__
from fieldhub.agent.config import AgentConfig, ConfigError, load_config
from fieldhub.bundles.keys import PublicKey
from fieldhub.bundles.manifest import Manifest, parse_version
from fieldhub.bundles.refusal import BundleRefused, Reason

__all__ = ["check_config", "check_for_device", "is_downgrade"]


def is_downgrade(installed: str | None, offered: str) -> bool:
    """Whether installing ``offered`` over ``installed`` goes back in versions."""
    return installed is not None and parse_version(offered) < parse_version(installed)


def check_for_device(
    manifest: Manifest,
    config: AgentConfig,
    *,
    announced: tuple[str, str],
    installed: str | None,
    force: str,
    keys: list[PublicKey],
) -> None:
    """Refuse a verified bundle that is not for this device, this agent or this moment.

    Raises:
        BundleRefused: ``malformed`` (not the announced bundle), ``wrong_target``,
            ``agent_too_old``, ``downgrade`` or ``bad_force``.
    """
    if (manifest.name, manifest.version) != announced:
        raise BundleRefused(
            Reason.MALFORMED,
            f"announced {announced[0]} {announced[1]}, the bundle is "
            f"{manifest.name} {manifest.version}",
        )
    device = config.device
    if not manifest.target.fits(device.type, device.labels):
        raise BundleRefused(
            Reason.WRONG_TARGET,
            f"for device types {manifest.target.device_types or 'any'} with labels "
            f"{manifest.target.labels}; this device is {device.type or 'untyped'} "
            f"with {device.labels}",
        )
    if parse_version(manifest.min_agent_version) > parse_version(__version__):
        raise BundleRefused(
            Reason.AGENT_TOO_OLD,
            f"needs agent {manifest.min_agent_version} or newer; this is {__version__}",
        )
    if is_downgrade(installed, manifest.version):
        if not force:
            raise BundleRefused(
                Reason.DOWNGRADE,
                f"{manifest.version} is older than the installed {installed}; "
                "a downgrade needs a signed force (fieldhub bundle force)",
            )
        from fieldhub.bundles.force import check_force

        check_force(
            force,
            keys,
            config.bundles.revoked_keys,
            device_id=device.id,
            name=manifest.name,
            version=manifest.version,
        )


def check_config(text: bytes, running: AgentConfig, scratch: Path) -> AgentConfig:
    """The bundle's ``agent.yaml``, loaded by the agent's own schema, if a bundle may apply it.

    A bundle may change units, actions, the hub's address, but not who the device is, where
    its data lives, nor leave it trusting no key (it could never be updated again).

    Raises:
        BundleRefused: ``bad_config``, naming the line and field.
    """
    with tempfile.NamedTemporaryFile(dir=scratch, suffix=".yaml") as file:
        file.write(text)
        file.flush()
        try:
            new = load_config(Path(file.name))
        except ConfigError as exc:
            raise BundleRefused(
                Reason.BAD_CONFIG, f"agent.yaml{str(exc).removeprefix(file.name)}"
            ) from None
    kept = {
        "device.id": (new.device.id, running.device.id),
        "data_dir": (new.data_folder, running.data_folder),
        "bundles.dir": (new.bundles.dir, running.bundles.dir),
    }
    changed = [field for field, (mine, theirs) in kept.items() if mine != theirs]
    if changed:
        raise BundleRefused(Reason.BAD_CONFIG, f"agent.yaml: a bundle may not change {changed}")
    if not new.bundles.trusted_keys:
        raise BundleRefused(
            Reason.BAD_CONFIG, "agent.yaml: bundles.trusted_keys is empty (no update could follow)"
        )
    return new
