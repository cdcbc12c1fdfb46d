"""Devices: the in-memory directory, presence, the twin and provisioning."""
