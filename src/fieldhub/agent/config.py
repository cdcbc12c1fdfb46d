"""``agent.yaml``: the device, its hub, its units, its actions, its local page.

Loaded once at start; a wrong file stops the agent with the file, line and field (see
``yamlconfig``), before any hardware is touched. Example: ``deploy/agent.example.yaml``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import msgspec

from fieldhub.agent.actions import SiteAction
from fieldhub.agent.units import UnitConfig
from fieldhub.agent.yamlconfig import ConfigError, load_yaml
from fieldhub.protocol.topics import DEVICE_ID_PATTERN

__all__ = ["AgentConfig", "ConfigError", "load_config"]


class DeviceSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Who this device is."""

    id: Annotated[str, msgspec.Meta(pattern=DEVICE_ID_PATTERN)]
    name: str = ""


class HubSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Where the hub's broker is and how this device logs in (see docs/provisioning.md)."""

    broker: Annotated[str, msgspec.Meta(pattern=r"^mqtts?://[^/\s]+$")]
    username: str
    secret: str | None = None  # or, better, in a file only root can read:
    secret_file: str | None = None

    def read_secret(self, config_path: Path) -> str:
        """The MQTT secret, from the file or inline.

        Raises:
            ConfigError: neither or both given, or the file cannot be read.
        """
        if (self.secret is None) == (self.secret_file is None):
            raise ConfigError(config_path, None, "hub", "give exactly one of secret, secret_file")
        if self.secret is not None:
            return self.secret
        assert self.secret_file is not None
        try:
            return Path(self.secret_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(config_path, None, "hub.secret_file", f"{exc}") from None


class OutboxSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """How much the agent keeps while the hub is unreachable."""

    max_messages: Annotated[int, msgspec.Meta(ge=100, le=10_000_000)] = 100_000


class WebSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The technician page: where it listens, and the argon2 hash of its password."""

    listen: str = "0.0.0.0:8081"
    password_hash: Annotated[str, msgspec.Meta(pattern=r"^\$argon2id?\$")] | None = None
    enabled: bool = True


class AgentConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The whole file."""

    device: DeviceSection
    hub: HubSection
    data_folder: str = msgspec.field(default="/var/lib/fieldhub-agent", name="data_dir")
    outbox: OutboxSection = OutboxSection()
    units: list[UnitConfig] = []
    actions: list[SiteAction] = []
    web: WebSection = WebSection()

    @property
    def data_dir(self) -> Path:
        """Where the outbox and the command log live."""
        return Path(self.data_folder)

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
