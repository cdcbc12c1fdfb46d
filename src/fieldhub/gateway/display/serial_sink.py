"""A display at the other end of a serial port, spoken to in a line protocol.

The protocol is what a small sketch (an M5Stack's) can read with ``readStringUntil('\\n')``:
UTF-8 lines ending in LF, gateway → display only (docs/gateway-display.md):

- ``HELLO <rows> <width>``: sent after every (re)open; the sketch may size its font to fit.
- ``CLR``: clear the screen.
- ``L<n> <text>``: show ``text`` on row ``n`` (0 is the top); ``text`` is exactly ``width``
  characters (padded with spaces) and never holds a control character.

After an open the whole screen follows (``HELLO``, ``CLR``, every row); afterwards only the
rows that changed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import serial

from fieldhub.gateway.display.config import SerialSinkConfig

__all__ = ["SerialSink", "protocol_lines"]

WRITE_TIMEOUT_S = 2.0
"""A display that stops reading (its buffer full) fails the write instead of hanging it."""


def protocol_lines(lines: Sequence[str], previous: Sequence[str] | None, width: int) -> str:
    """The protocol text that turns ``previous`` (None: unknown) into ``lines``."""
    head = [f"HELLO {len(lines)} {width}", "CLR"] if previous is None else []
    rows = [row for row, text in enumerate(lines) if previous is None or previous[row] != text]
    return "".join(f"{line}\n" for line in [*head, *(f"L{row} {lines[row]}" for row in rows)])


class SerialSink:
    """The line protocol over pyserial (see the module doc)."""

    def __init__(self, config: SerialSinkConfig) -> None:
        self.name = config.name
        self.width, self.rows = config.width, config.rows
        self._config = config
        self._port: serial.Serial | None = None

    def open(self) -> None:
        """Open the port. DTR and RTS stay low: on ESP32 boards (the M5Stack) raising them
        resets the board, which would lose the screen just sent."""
        port = serial.Serial(baudrate=self._config.baud, write_timeout=WRITE_TIMEOUT_S)
        port.port = self._config.port
        port.dtr = False
        port.rts = False
        port.open()
        self._port = port

    def show(self, lines: Sequence[str], previous: Sequence[str] | None) -> None:
        """Write what changed; pyserial's errors are OSErrors (``SerialException``)."""
        if self._port is None:
            raise OSError("the port is not open")
        self._port.write(protocol_lines(lines, previous, self.width).encode("utf-8"))
        self._port.flush()

    def close(self) -> None:
        """Close the port, whatever state it is in."""
        port, self._port = self._port, None
        if port is not None:
            with contextlib.suppress(
                OSError
            ):  # the device is gone already; nothing left to release
                port.close()
