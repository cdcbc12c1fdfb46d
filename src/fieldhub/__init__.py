"""fieldhub: monitor and control devices in the field (hub, agent, gateway; one wire contract)."""

__version__ = "0.1.0"
