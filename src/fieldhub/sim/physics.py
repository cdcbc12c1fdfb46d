"""Plausible readings for a simulated ATM or terminal: drifting temperature, a supply voltage
with noise and the odd sag, a door opened now and then, a socket switched rarely."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from fieldhub.protocol.messages import Value


@dataclass(slots=True)
class DoorState:
    """The door's limit switch and how long it has been open."""

    open: bool = False
    opened_at: float = 0.0
    warned: bool = False


@dataclass(slots=True)
class Physics:
    """The simulated hardware of one device; ``step`` advances it by ``dt`` seconds."""

    rng: random.Random
    ambient: float = 22.0
    temperature: float = 22.0
    voltage: float = 12.0
    socket_on: bool = True
    door: DoorState = field(default_factory=DoorState)
    elapsed: float = 0.0

    def step(self, dt: float) -> None:
        """Move temperature toward a daily cycle, jitter the voltage."""
        self.elapsed += dt
        target = self.ambient + 3.0 * math.sin(self.elapsed / 3600.0 * math.pi)
        if self.door.open:
            target -= 4.0  # outside air
        self.temperature += (target - self.temperature) * min(1.0, dt / 120.0)
        self.temperature += self.rng.gauss(0.0, 0.05)
        sag = 1.5 if self.rng.random() < 0.01 else 0.0
        self.voltage = 12.0 + self.rng.gauss(0.0, 0.05) - sag

    def readings(self) -> dict[str, Value]:
        """The values a device reports each interval."""
        return {
            "temperature": round(self.temperature, 2),
            "voltage": round(self.voltage, 3),
            "door_open": self.door.open,
            "socket_on": self.socket_on,
        }
