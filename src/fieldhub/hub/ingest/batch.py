"""What one ingest commit carries: accepted messages of many devices, in arrival order."""

from __future__ import annotations

from dataclasses import dataclass, field

from fieldhub.protocol import Event, State, Telemetry


@dataclass(slots=True)
class PresenceChange:
    """A device's presence moved: written to ``devices`` and recorded as an event."""

    device_id: str
    presence: str  # online | offline | stale
    since: int
    reason: str
    connected: bool | None


@dataclass(slots=True)
class Batch:
    """Messages accepted since the last commit."""

    telemetry: list[tuple[str, Telemetry]] = field(default_factory=list)
    events: list[tuple[str, int, Event]] = field(default_factory=list)  # device, received, event
    states: list[tuple[str, State]] = field(default_factory=list)
    presence: list[PresenceChange] = field(default_factory=list)
    seqs: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # device → (seq, floor)
    messages: int = 0
    points: int = 0

    def __bool__(self) -> bool:
        return bool(self.messages or self.presence)

    def drop_device(self, device_id: str) -> None:
        """Forget everything of ``device_id`` not yet committed (the device was deleted)."""
        self.points -= sum(m.point_count() for d, m in self.telemetry if d == device_id)
        self.telemetry = [t for t in self.telemetry if t[0] != device_id]
        self.events = [e for e in self.events if e[0] != device_id]
        self.states = [s for s in self.states if s[0] != device_id]
        self.presence = [p for p in self.presence if p.device_id != device_id]
        self.messages -= len(self.seqs.pop(device_id, ()))

    def absorb(self, later: Batch) -> None:
        """Append what ``later`` holds, in order: a batch the store could not take is retried
        together with what arrived meanwhile."""
        self.telemetry += later.telemetry
        self.events += later.events
        self.states += later.states
        self.presence += later.presence
        for device_id, seqs in later.seqs.items():
            self.seqs.setdefault(device_id, []).extend(seqs)
        self.messages += later.messages
        self.points += later.points

    def only(self, stored: set[tuple[str, int]]) -> Batch:
        """This batch with only the messages whose (device, seq) is in ``stored`` (the others
        are duplicates: ``ingest/ledger.py``), and all its presence changes."""
        telemetry = [(d, m) for d, m in self.telemetry if (d, m.seq) in stored]
        seqs: dict[str, list[tuple[int, int]]] = {}
        for device_id, entries in self.seqs.items():
            kept = [entry for entry in entries if (device_id, entry[0]) in stored]
            if kept:
                seqs[device_id] = kept
        return Batch(
            telemetry=telemetry,
            events=[(d, r, e) for d, r, e in self.events if (d, e.seq) in stored],
            states=[(d, s) for d, s in self.states if (d, s.seq) in stored],
            presence=self.presence,
            seqs=seqs,
            messages=sum(len(entries) for entries in seqs.values()),
            points=sum(m.point_count() for _, m in telemetry),
        )

    def add_seq(self, device_id: str, seq: int, floor: int) -> None:
        """Remember that ``seq`` of ``device_id`` is part of this commit."""
        entry = self.seqs.get(device_id)
        if entry is None:
            self.seqs[device_id] = [(seq, floor)]
        else:
            entry.append((seq, floor))
