"""What a rollout is asked to do, and the rules that decide its waves: the one home of both.

A rollout sends one bundle to a set of devices in **waves**: a canary of ``canary`` devices,
then up to each of ``waves`` (cumulative percentages of the whole target: ``[25, 100]`` is a
quarter of the devices, then the rest). Each wave is paced (``per_minute``) through the
command machinery. When a wave has ended (every device confirmed or failed), or can no longer
reach its goal, its success ratio decides:

- ratio ≥ ``promote_at``: the next wave starts (after an operator's approval when
  ``approval`` is set);
- ratio < ``abort_below``: the rollout aborts (rolling back the devices already updated when
  ``rollback_on_abort``);
- in between: the rollout pauses for an operator to resume or abort.

Why the verdict may come before a wave has ended: a canary of 10 where 6 failed cannot reach
``promote_at`` = 0.9 any more, and waiting for the other 4 only lets a broken bundle spread
its damage for longer.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Final, Literal

from fieldhub.bundles.manifest import VERSION_PATTERN, parse_version

__all__ = [
    "DONE",
    "Plan",
    "Verdict",
    "below",
    "verdict",
    "wave_sizes",
]

Verdict = Literal["promote", "pause", "abort"]

SUCCEEDED: Final = frozenset({"confirmed"})
FAILED: Final = frozenset({"failed", "skipped"})
DONE: Final = SUCCEEDED | FAILED
"""Device states that end a device's part in its wave."""
_VERSION = re.compile(VERSION_PATTERN)


def below(installed: str | None, version: str) -> bool:
    """True when ``installed`` (None: the bundle is not installed) is lower than ``version``
    (compared as ``fieldhub.bundles`` compares versions: numerically); a version the device
    reported that is not dotted integers counts as lower (replace it)."""
    if installed is None or not _VERSION.fullmatch(installed):
        return True
    return parse_version(installed) < parse_version(version)


@dataclass(frozen=True, slots=True)
class Plan:
    """How a rollout proceeds (validated at the edge, ``api/rollout_models.py``)."""

    target: dict[str, Any] = field(default_factory=dict)
    """``{"devices": [...]}``, ``{"labels": {...}}`` or ``{"all": true}``, optionally with
    ``"below": "X"``: only devices whose installed version of the bundle is lower than X."""
    canary: int = 1
    waves: tuple[float, ...] = (100.0,)
    per_minute: float | None = None
    promote_at: float = 1.0
    abort_below: float = 0.5
    approval: bool = False
    retries: int = 1
    deadline_s: int = 900
    rollback_on_abort: bool = True

    def __post_init__(self) -> None:
        if self.canary < 0:
            raise ValueError("canary: 0 or more devices")
        if not self.waves or list(self.waves) != sorted(set(self.waves)):
            raise ValueError("waves: increasing percentages, e.g. [25, 100]")
        if self.waves[0] <= 0 or self.waves[-1] != 100:
            raise ValueError("waves: above 0, the last one 100")
        if not 0 <= self.abort_below <= self.promote_at <= 1:
            raise ValueError("0 ≤ abort_below ≤ promote_at ≤ 1")

    def as_dict(self) -> dict[str, Any]:
        """The plan as stored and shown."""
        return {**asdict(self), "waves": list(self.waves)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Plan:
        """A stored plan."""
        return cls(**{**data, "waves": tuple(data.get("waves", (100.0,)))})


def wave_sizes(devices: int, canary: int, waves: Iterable[float]) -> list[int]:
    """How many devices each wave takes: the canary (at most all), then each percentage's
    cumulative share of ``devices`` less what went before; empty waves are dropped."""
    sizes = [min(canary, devices)] if canary else []
    done = sizes[0] if sizes else 0
    for percent in waves:
        upto = max(done, math.ceil(devices * percent / 100))
        if upto > done:
            sizes.append(upto - done)
            done = upto
    return sizes


def verdict(states: Iterable[str], plan: Plan) -> Verdict | None:
    """The decision on a wave whose devices are in ``states``, or None while it is open.

    Early: once the failures alone put the wave below ``abort_below`` (even if every open
    device still confirmed), it aborts at once; a pause waits for the wave to end.
    """
    states = list(states)
    size = len(states)
    if size == 0:
        return "promote"
    good = sum(state in SUCCEEDED for state in states)
    bad = sum(state in FAILED for state in states)
    best = (size - bad) / size  # if every open device still confirms
    if best < plan.abort_below:
        return "abort"
    if good + bad < size:
        return None
    ratio = good / size
    if ratio >= plan.promote_at:
        return "promote"
    return "abort" if ratio < plan.abort_below else "pause"
