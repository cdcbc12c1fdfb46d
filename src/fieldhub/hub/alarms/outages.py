"""Suppression by cause: a device that is away raises no data alarms for the outage.

While a device is offline or stale (its presence), the values it does not send are the
offline alarm's business, not a threshold's, a state's or an absence rule's: a sensor "gone
quiet" because the whole cabinet lost power is one problem, reported once (by the presence
rule), not five. So while a device is away, those rules raise no new alarm on it and their
pending timers are dropped; once it is back their clocks start again from its return (an
absence rule counts its ``seconds`` from then). Alarms already open stay open, and event and
presence rules are not touched.

Presence is stored; so at start (``AlarmEngine.load``) the devices away are read back from it
(:meth:`Outages.load`): a hub restarted during an outage keeps suppressing, though the device
sends no new presence change (it is still offline, as the store says).

A child behind an absent gateway reads ``unreachable`` (``devices/presence.py``): away like an
offline device for the data rules, and never a presence alarm of its own, neither raised nor
cleared (nobody knows how it is; the gateway's own offline alarm is the one alarm).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from fieldhub.hub.alarms.rules import Rule
from fieldhub.hub.ingest.batch import PresenceChange

__all__ = ["AWAY", "UNREACHABLE", "Outages"]

UNREACHABLE: Final = "unreachable"
AWAY: Final = frozenset({"offline", "stale", UNREACHABLE})
SUPPRESSED_KINDS: Final = frozenset({"threshold", "state", "absence"})


class Outages:
    """Which devices are away now, and when each came back last (hub clock, ms)."""

    def __init__(self) -> None:
        self._away: set[str] = set()
        self._back_at: dict[str, int] = {}

    def load(self, away: Iterable[str]) -> None:
        """Start from the devices stored as away (their return times are not kept: their
        clocks count from the hub's start, as for every device)."""
        self._away = set(away)
        self._back_at.clear()

    def update(self, changes: Iterable[PresenceChange], at: int) -> list[str]:
        """Take the committed presence ``changes``; the devices that went away now."""
        gone = []
        for change in changes:
            device_id = change.device_id
            if change.presence in AWAY:
                if device_id not in self._away:
                    self._away.add(device_id)
                    gone.append(device_id)
            elif device_id in self._away:
                self._away.discard(device_id)
                self._back_at[device_id] = at
        return gone

    def suppresses(self, rule: Rule, device_id: str) -> bool:
        """True when ``rule`` must raise nothing new on ``device_id`` now."""
        return device_id in self._away and rule.condition.kind in SUPPRESSED_KINDS

    def back_at(self, device_id: str) -> int:
        """When ``device_id`` last came back from an outage (0: not since the start)."""
        return self._back_at.get(device_id, 0)

    def forget(self, device_ids: Iterable[str]) -> None:
        """Deleted devices."""
        for device_id in device_ids:
            self._away.discard(device_id)
            self._back_at.pop(device_id, None)
