"""``agent.yaml``: the device, its hub, its units, its actions, its local page.

Loaded once at start; a wrong file stops the agent with the file, line and field (see
``yamlconfig``), before any hardware is touched. Example: ``deploy/agent.example.yaml``.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from fieldhub.agent.actions import SiteAction
from fieldhub.agent.hub_section import ClaimSection, HubSection
from fieldhub.agent.units import UnitConfig
from fieldhub.agent.yamlconfig import ConfigError, load_yaml
from fieldhub.bundles.manifest import KEY_ID_PATTERN, PUBLIC_KEY_PATTERN
from fieldhub.protocol.topics import DEVICE_ID_PATTERN

__all__ = [
    "AgentConfig",
    "BundlesSection",
    "ClaimSection",
    "ConfigError",
    "HubSection",
    "MediaSection",
    "TrustedKey",
    "load_config",
]


class DeviceSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Who this device is."""

    id: Annotated[str, msgspec.Meta(pattern=DEVICE_ID_PATTERN)]
    name: str = ""
    type: Annotated[str, msgspec.Meta(max_length=64)] = ""  # a bundle's target names types
    labels: dict[str, str] = {}  # and labels it must carry (docs/bundles.md)


class OutboxSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """How much the agent keeps while the hub is unreachable."""

    max_messages: Annotated[int, msgspec.Meta(ge=100, le=10_000_000)] = 100_000


class MediaSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Pictures waiting for the hub (docs/agent-media.md): how much the spool keeps, and how an
    ``https`` upload URL is checked; ``ca_file`` and ``pin_sha256`` default to the hub
    section's (the hub's web server and its broker usually share a CA)."""

    max_mb: Annotated[float, msgspec.Meta(gt=0, le=1_000_000)] = 64.0
    upload: Literal["http", "mqtt"] = "http"  # mqtt: in 48 KiB chunks, with no HTTP route
    ca_file: str | None = (
        None  # a private CA for https uploads; else hub.ca_file, else the system's
    )
    pin_sha256: str | None = None  # SHA-256 of the upload server's public key, hex

    def __post_init__(self) -> None:
        if self.pin_sha256 is not None:
            from fieldhub.mqtt.tls import TlsSetupError, normalize_pin  # see HubSection

            try:
                normalize_pin(self.pin_sha256)
            except TlsSetupError as exc:
                raise ValueError(str(exc)) from None


class WebSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The technician page: where it listens, and the argon2 hash of its password."""

    listen: str = "0.0.0.0:8081"
    password_hash: Annotated[str, msgspec.Meta(pattern=r"^\$argon2id?\$")] | None = None
    enabled: bool = True


class TrustedKey(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A trusted key with an expiry: ``{key: <one-line form>, until: 2027-06-30T00:00:00Z}``.

    ``until`` needs its time zone (``Z`` for UTC), so that a Pi set to local time cannot move
    the date. From that moment the key is trusted for nothing, whenever it signed.
    """

    key: Annotated[str, msgspec.Meta(pattern=PUBLIC_KEY_PATTERN)]
    until: Annotated[datetime, msgspec.Meta(tz=True)]

    @property
    def until_ms(self) -> int:
        """The expiry in epoch milliseconds, fieldhub's unit of time."""
        return int(self.until.timestamp() * 1000)


class BundlesSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Which signed bundles this device installs, and where (docs/bundles.md).

    ``trusted_keys`` are public keys in their one-line form (``fieldhub bundle keygen``), or
    with an expiry (:class:`TrustedKey`); several, so that a new key can be trusted before the
    old one expires or is revoked by its id in ``revoked_keys``. Without a trusted key, every
    bundle is refused. ``ca_file`` and
    ``pin_sha256`` check the hub's HTTPS certificate for downloads (the system's trust store
    otherwise); a bundle's signature is checked either way.
    """

    trusted_keys: list[Annotated[str, msgspec.Meta(pattern=PUBLIC_KEY_PATTERN)] | TrustedKey] = []
    revoked_keys: list[Annotated[str, msgspec.Meta(pattern=KEY_ID_PATTERN)]] = []
    dir: str | None = None  # where versions are installed [data_dir/bundles]
    ca_file: str | None = None
    pin_sha256: str | None = None
    trial_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 120.0
    max_bytes: Annotated[int, msgspec.Meta(ge=1024, le=1 << 30)] = 64 << 20

    def keys_with_expiry(self) -> list[tuple[str, int | None]]:
        """Each trusted key's one-line form and its expiry in epoch ms (None: none), both
        forms alike."""
        return [
            (entry, None) if isinstance(entry, str) else (entry.key, entry.until_ms)
            for entry in self.trusted_keys
        ]


class AgentConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The whole file."""

    device: DeviceSection
    hub: HubSection
    data_folder: str = msgspec.field(default="/var/lib/fieldhub-agent", name="data_dir")
    outbox: OutboxSection = OutboxSection()
    media: MediaSection = MediaSection()
    units: list[UnitConfig] = []
    actions: list[SiteAction] = []
    web: WebSection = WebSection()
    bundles: BundlesSection = BundlesSection()

    @property
    def data_dir(self) -> Path:
        """Where the outbox and the command log live."""
        return Path(self.data_folder)

    @property
    def bundles_dir(self) -> Path:
        """Where installed bundles, the install journal and downloads live."""
        return Path(self.bundles.dir) if self.bundles.dir else self.data_dir / "bundles"

    def __post_init__(self) -> None:
        names = [unit.name for unit in self.units]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"unit names must be unique; given more than once: {twice}")


def load_config(path: Path) -> AgentConfig:
    """Read and check ``agent.yaml``.

    Raises:
        ConfigError: the file is unreadable or wrong (the message names line and field).
    """
    return load_yaml(path, AgentConfig)
