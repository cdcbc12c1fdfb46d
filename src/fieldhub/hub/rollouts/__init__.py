"""Signed bundles and rollouts: bundles verified and kept by the hub, sent to devices in
waves, followed to each device's end, rolled back on abort (docs/rollouts.md)."""

from fieldhub.hub.rollouts.runs import Run
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
]
