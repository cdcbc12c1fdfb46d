"""Retention: how long each kind of data is kept, the trimmer that removes the rest in small
batches, and the disk budget guard (docs/retention.md)."""

from fieldhub.hub.retention.policy import RawOverride, RetentionPolicy
from fieldhub.hub.retention.service import RetentionService

__all__ = ["RawOverride", "RetentionPolicy", "RetentionService"]
