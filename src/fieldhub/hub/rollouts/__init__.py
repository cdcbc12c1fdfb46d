"""Signed bundles and rollouts: bundles verified and kept by the hub, sent to devices in
waves, followed to each device's end, rolled back on abort (docs/rollouts.md)."""

from fieldhub.hub.rollouts.plan import below
from fieldhub.hub.rollouts.runs import Run, installed_version, software_of
from fieldhub.hub.store.rollouts import (
    BundleKeyRecord,
    BundleNotFound,
    BundleRecord,
    RolloutDeviceRecord,
    RolloutNotFound,
    RolloutRecord,
)

__all__ = [
    "BundleKeyRecord",
    "BundleNotFound",
    "BundleRecord",
    "RolloutDeviceRecord",
    "RolloutNotFound",
    "RolloutRecord",
    "Run",
    "below",
    "installed_version",
    "software_of",
]
