"""``gateway.yaml``: the gateway, its hub, its data folder, its LAN and its display.

Loaded once at start; a wrong file stops the gateway with the file, line and field, as the
agent's does (``fieldhub.agent.yamlconfig``). The ``hub`` section is the agent's (broker URL,
user name, secret or secret file, TLS), since the gateway logs in to the hub's broker as a
device. ``lan`` and ``display`` belong to the LAN side and to the display
(``fieldhub.gateway.lan``, ``fieldhub.gateway.display``): this file holds them as given and
hands them over, and those parts say what is wrong in them. Example:
``deploy/gateway.example.yaml``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import msgspec

from fieldhub.agent.hub_section import HubSection
from fieldhub.agent.yamlconfig import ConfigError, load_yaml
from fieldhub.protocol.topics import DEVICE_ID_PATTERN

__all__ = ["ConfigError", "GatewayConfig", "load_config"]


class GatewaySection(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Who this gateway is: its device id in the hub."""

    id: Annotated[str, msgspec.Meta(pattern=DEVICE_ID_PATTERN)]


class OutboxSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """How much each child's outbox (and the gateway's) keeps while the hub is away."""

    max_messages: Annotated[int, msgspec.Meta(ge=100, le=10_000_000)] = 100_000


class CommandsSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """How long a command may run on a controller at most, whatever its expiry."""

    max_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 60.0


class GatewayConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The whole file."""

    gateway: GatewaySection
    hub: HubSection
    data_folder: str = msgspec.field(default="/var/lib/fieldhub-gateway", name="data_dir")
    outbox: OutboxSection = OutboxSection()
    commands: CommandsSection = CommandsSection()
    lan: dict[str, Any] = {}
    display: dict[str, Any] | None = None

    @property
    def data_dir(self) -> Path:
        """Where the outboxes and the LAN side's keys live."""
        return Path(self.data_folder)

    def __post_init__(self) -> None:
        if self.hub.claim is not None:
            raise ValueError("a gateway logs in with hub.username and a secret (no claim yet)")


def load_config(path: Path) -> GatewayConfig:
    """Read and check ``gateway.yaml``.

    Raises:
        ConfigError: the file is unreadable or wrong (the message names line and field).
    """
    return load_yaml(path, GatewayConfig)
