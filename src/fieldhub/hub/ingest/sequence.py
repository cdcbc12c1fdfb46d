"""Per-device sequence bookkeeping: what is a duplicate, and what the hub may acknowledge.

The hub acknowledges the highest *contiguous* committed seq (the watermark), never more, so a
device may delete from its outbox exactly what is stored. Seqs committed above a gap are kept
in ``above`` until the gap fills, or until the device says (through ``oldest``, see
``fieldhub.protocol.Sequenced``) that nothing below some seq will ever come again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_ABOVE = 100_000
"""Committed seqs kept above a gap per device. A device that loses messages without saying so
(no ``oldest``) could otherwise grow this forever; past the bound the gap is given up."""


@dataclass(slots=True)
class SeqTracker:
    """Watermark and out-of-order seqs of one device, mirrored in the ``devices`` table."""

    acked: int = 0
    above: set[int] = field(default_factory=set)

    def is_duplicate(self, seq: int) -> bool:
        """True when ``seq`` is already committed."""
        return seq <= self.acked or seq in self.above

    def commit(self, seqs: list[tuple[int, int]]) -> bool:
        """Record committed ``(seq, floor)`` pairs; return True when the watermark moved.

        ``floor`` is the lowest seq the device may still send (its ``oldest``): everything
        below it is either committed or given up by the device, so the watermark may pass it.
        """
        before = self.acked
        for seq, floor in seqs:
            self.acked = max(self.acked, floor - 1)
            if seq > self.acked:
                self.above.add(seq)
        self._advance()
        if len(self.above) > MAX_ABOVE:
            self.acked = min(self.above) - 1
            self._advance()
        return self.acked != before

    def _advance(self) -> None:
        above = self.above
        if not above:
            return
        acked = self.acked
        # Drop what the watermark passed (when a floor jumped), then walk the contiguous run.
        if min(above) <= acked:
            above.difference_update([s for s in above if s <= acked])
        while acked + 1 in above:
            acked += 1
            above.discard(acked)
        self.acked = acked

    def above_sorted(self) -> list[int]:
        """The out-of-order seqs, sorted, for storage."""
        return sorted(self.above)
