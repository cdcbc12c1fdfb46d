"""The gateway's LAN side: finds, pairs and links controllers; implements ``ports.Lan``."""

from fieldhub.gateway.lan.manager import LanManager, LanSettings

__all__ = ["LanManager", "LanSettings"]
