"""The device twin on the hub: desired state, versioned, published retained; compared with
what the device reports.

Operators say what a device should be (``{"socket": "off", "lock": "locked"}``); the hub keeps
it with a version, publishes it **retained** on the device's ``desired`` topic so a device that
connects later still gets it, and the device converges and reports through ``state``, adding
``desired_version``: the version it applied. The twin's view puts both side by side: the
*delta* (desired keys the device does not report as desired) and *in sync* (the device applied
this very version and nothing differs).

Publishing order: a change is published right after its commit, with no await in between, and
never below a version this process published already, so the broker's retained copy only moves
forward even when two changes commit back to back. Devices also refuse versions older than the
one they applied (several hub processes on one broker cannot order each other's publishes).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from fieldhub.hub.devices.events import DeviceEvent, DeviceRemoved
from fieldhub.hub.store.audit import AuditLog
from fieldhub.hub.store.devices import DeviceRecord
from fieldhub.hub.store.twin import DesiredState, DesiredStateError, TwinStore
from fieldhub.protocol import Channel, Desired, encode, topic_for
from fieldhub.protocol.actions import ACTION_CATALOG_KEY, ACTION_DETAILS_KEY
from fieldhub.protocol.messages import (
    DESIRED_ERRORS_KEY,
    DESIRED_VERSION_KEY,
    KEY_PATTERN,
)

__all__ = [
    "MAX_DESIRED_KEYS",
    "Delta",
    "DesiredStateError",
    "TwinService",
    "TwinView",
    "check_changes",
]

log = logging.getLogger(__name__)

MAX_DESIRED_KEYS: Final = 256
"""Keys a desired state may hold (as many as one ``state`` message may report)."""
MAX_TEXT: Final = 256
_RESERVED = frozenset(
    {DESIRED_VERSION_KEY, DESIRED_ERRORS_KEY, ACTION_CATALOG_KEY, ACTION_DETAILS_KEY}
)
_KEY = re.compile(KEY_PATTERN)

Publish = Callable[[str, bytes], None]
"""Publishes a retained message at QoS 1 on a topic (the hub's bus)."""


@dataclass(frozen=True, slots=True)
class Delta:
    """A desired key the device does not (yet) report as desired; ``reported`` is None when
    the device does not report the key at all."""

    desired: Any
    reported: Any


@dataclass(frozen=True, slots=True)
class TwinView:
    """Desired and reported state of one device, side by side."""

    desired: dict[str, Any]
    version: int
    reported: dict[str, Any]
    reported_ts: int | None
    delta: dict[str, Delta]
    in_sync: bool
    desired_at: int | None
    desired_by: str

    @classmethod
    def of(cls, record: DeviceRecord) -> TwinView:
        """The twin of a stored device.

        In sync means the device reported this version as applied and every desired key as
        desired; with nothing desired yet (version 0) a device is in sync by definition.
        """
        reported = record.reported
        delta = {
            key: Delta(value, reported.get(key))
            for key, value in record.desired.items()
            if not _same(reported.get(key), value)
        }
        applied = _same(reported.get(DESIRED_VERSION_KEY), record.desired_version)
        in_sync = not delta and (record.desired_version == 0 or applied)
        return cls(
            desired=record.desired,
            version=record.desired_version,
            reported=reported,
            reported_ts=record.reported_ts,
            delta=delta,
            in_sync=in_sync,
            desired_at=record.desired_at,
            desired_by=record.desired_by,
        )


def _same(reported: Any, desired: Any) -> bool:
    """Equal as JSON values: ``true`` is not ``1`` (Python says it is), ``1`` is ``1.0``."""
    return bool(reported == desired) and isinstance(reported, bool) == isinstance(desired, bool)


def check_changes(changes: Mapping[str, Any]) -> dict[str, bool | int | float | str | None]:
    """``changes`` if every key and value may go into a desired state.

    A key follows the wire contract's key rule and is not one a device reports about the
    twin itself; a value is a boolean, a finite number, a string of at most 256 characters,
    or null (remove the key).

    Raises:
        DesiredStateError: names the first key that breaks a rule, and the rule.
    """
    if not changes:
        raise DesiredStateError("desired is empty: give at least one key (null removes a key)")
    if len(changes) > MAX_DESIRED_KEYS:
        raise DesiredStateError(f"{len(changes)} keys given, at most {MAX_DESIRED_KEYS}")
    checked: dict[str, bool | int | float | str | None] = {}
    for key, value in changes.items():
        shown = repr(key[:70])
        if not _KEY.match(key):
            raise DesiredStateError(
                f"key {shown} is not valid: 1-64 letters, digits, '_', '.', '-', "
                "starting with a letter or '_'"
            )
        if key in _RESERVED:
            raise DesiredStateError(f"key {shown} is reserved: the device reports it")
        if isinstance(value, str) and len(value) > MAX_TEXT:
            raise DesiredStateError(f"desired[{shown}]: a string of at most {MAX_TEXT} characters")
        if isinstance(value, float) and not math.isfinite(value):
            raise DesiredStateError(f"desired[{shown}]: a number must be finite")
        if value is not None and not isinstance(value, bool | int | float | str):
            raise DesiredStateError(
                f"desired[{shown}]: a value is a boolean, a number, a string or null "
                f"(to remove the key), not {type(value).__name__}"
            )
        checked[key] = value
    return checked


class TwinService:
    """Changes desired state (store, audit log, broker, in that order) and republishes it.

    Args:
        store: the desired state in the database.
        audit: every accepted change is recorded there (who, which keys, which version).
        publish: sends a retained QoS 1 message (the hub's bus).
    """

    def __init__(self, store: TwinStore, audit: AuditLog, publish: Publish) -> None:
        self._store = store
        self._audit = audit
        self._publish = publish
        self._published: dict[str, int] = {}  # device id -> newest version sent

    async def change(
        self,
        device_id: str,
        *,
        version: int,
        changes: Mapping[str, Any],
        actor: str,
        source: str = "",
    ) -> TwinView:
        """Merge ``changes`` into the desired state read at ``version``, and publish it.

        Raises:
            DesiredStateError: a key or value breaks a rule, or the merged state would hold
                too many keys; nothing changed.
            DeviceNotFound: no such device.
            VersionConflict: the version is no longer ``version``; nothing changed.
        """
        checked = check_changes(changes)
        record = await self._store.change(
            device_id, version=version, changes=checked, actor=actor, max_keys=MAX_DESIRED_KEYS
        )
        self._send(DesiredState(device_id, record.desired_version, record.desired))
        await self._audit.record(
            actor,
            "device.desired.changed",
            device_id,
            source=source,
            detail={
                "version": record.desired_version,
                "set": sorted(k for k, v in checked.items() if v is not None),
                "removed": sorted(k for k, v in checked.items() if v is None),
            },
        )
        return TwinView.of(record)

    async def republish(self) -> int:
        """Publish every device's desired state again; returns how many.

        The embedded broker keeps retained messages in memory only: after a hub restart a
        device that connects would otherwise get no desired state at all. Idempotent for
        devices, which apply each version once.
        """
        states = await self._store.published()
        for state in states:
            self._send(state)
        if states:
            log.info("published the desired state of %d device(s) again", len(states))
        return len(states)

    def clear(self, device_id: str) -> None:
        """Remove a deleted device's retained desired state from the broker, which would
        otherwise hand it to whatever connects under that id later."""
        self._published.pop(device_id, None)
        self._publish(topic_for(device_id, Channel.DESIRED), b"")

    def on_device(self, event: DeviceEvent) -> None:
        """A deleted device's retained desired state goes with it."""
        if isinstance(event, DeviceRemoved):
            self.clear(event.device_id)

    def _send(self, state: DesiredState) -> None:
        if state.version <= self._published.get(state.device_id, 0):
            return  # a newer version went out meanwhile; the broker keeps that one
        self._published[state.device_id] = state.version
        message = Desired(version=state.version, state=state.state)
        self._publish(topic_for(state.device_id, Channel.DESIRED), encode(message))
