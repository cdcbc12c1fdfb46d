"""One device's part in a rollout: how command outcomes, ``bundle.*`` events and the clock
move it. Pure functions over a ``RolloutDeviceRecord``; the engine stores what they change.

```
pending ──install sent──► sending ──accepted──► installing ──bundle.confirmed──► confirmed
   ▲                        │                      │                               │ abort with
   └──── retry (bounded) ───┴── failed ◄───────────┘ refused, rolled back            │ rollback
                               (command failed, device's own refusal or rollback,    ▼
                                deadline passed)                              rolling_back
skipped: never sent (the device cannot install bundles, or the rollout          │
         was aborted before its turn)                                             ▼
                                                                rolled_back | rollback_failed
```

Why a deadline on every moving state: a device that takes the command and then goes silent
(power cut mid-install, an agent that never reports) would otherwise stay ``installing``
forever, the very fault users report of other platforms; at the deadline it is ``failed``
(and retried, while attempts remain), and a rollback that never answers is
``rollback_failed``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from fieldhub.hub.store.rollouts import RolloutDeviceRecord

__all__ = [
    "MOVING",
    "RETRIED_REFUSALS",
    "command_ended",
    "event_arrived",
    "fail",
    "past_deadline",
]

MOVING: Final = frozenset({"sending", "installing", "rolling_back"})
"""States with a deadline: something is under way on the device."""
RETRIED_REFUSALS: Final = frozenset({"download_failed", "busy", "disk_full"})
"""Refusals a second attempt may get past; the others (a bad signature, a wrong target) would
be refused again, so a retry only spends time."""
_REASON_MAX: Final = 512


def fail(
    device: RolloutDeviceRecord, reason: str, now: int, *, retries: int, retry: bool = True
) -> None:
    """``device`` failed for ``reason``: ``pending`` again while attempts remain (and
    ``retry``), else ``failed``."""
    device.reason = reason[:_REASON_MAX]
    device.deadline_at = None
    device.updated_at = now
    device.state = "pending" if retry and device.attempts <= retries else "failed"


def command_ended(
    device: RolloutDeviceRecord, status: str, error: str, now: int, *, retries: int
) -> bool:
    """The device's install or rollback command finished with ``status``; True if it moved."""
    if device.state == "rolling_back":
        device.updated_at = now
        if status == "succeeded":
            device.state, device.reason = "rolled_back", "rolled back by the rollout's abort"
        else:
            device.state, device.reason = (
                "rollback_failed",
                f"rollback {status}: {error}"[:_REASON_MAX],
            )
        device.deadline_at = None
        return True
    if device.state != "sending":
        return False
    if status == "succeeded":  # accepted: the outcome comes as events
        device.state, device.updated_at = "installing", now
        return True
    fail(
        device,
        f"install command {status}: {error}" if error else f"install command {status}",
        now,
        retries=retries,
    )
    return True


def event_arrived(
    device: RolloutDeviceRecord, kind: str, data: Mapping[str, Any], now: int, *, retries: int
) -> bool:
    """A ``bundle.<kind>`` event of the rollout's bundle came from the device; True if it
    moved. Events of a device that is done are ignored (a late repeat from its outbox)."""
    if kind == "rolled_back" and device.state == "rolling_back":
        device.state, device.reason, device.deadline_at = (
            "rolled_back",
            "rolled back by the rollout's abort",
            None,
        )
        device.updated_at = now
        return True
    if device.state not in ("sending", "installing"):
        return False
    device.updated_at = now
    if kind == "installing":
        device.state = "installing"
    elif kind == "confirmed":
        device.state, device.deadline_at, device.reason = "confirmed", None, ""
        device.previous = str(data.get("previous") or "")[:32]
    elif kind == "refused":
        code = str(data.get("reason") or "refused")
        detail = f"refused by the device: {code}: {data.get('detail') or ''}".rstrip(": ")
        fail(device, detail, now, retries=retries, retry=code in RETRIED_REFUSALS)
    elif kind == "rolled_back":
        code = str(data.get("reason") or "")
        fail(
            device,
            f"rolled back by the device: {code}: {data.get('detail') or ''}".rstrip(": "),
            now,
            retries=retries,
        )
    else:
        return False
    return True


def past_deadline(device: RolloutDeviceRecord, now: int, *, retries: int) -> bool:
    """Move ``device`` on if its deadline has passed; True if it did."""
    if device.state not in MOVING or device.deadline_at is None or device.deadline_at > now:
        return False
    if device.state == "rolling_back":
        device.state, device.reason = "rollback_failed", "no rollback outcome before the deadline"
        device.deadline_at, device.updated_at = None, now
    else:
        was = device.state
        fail(
            device,
            f"deadline passed while {was}: no bundle.confirmed in time",
            now,
            retries=retries,
        )
    return True
