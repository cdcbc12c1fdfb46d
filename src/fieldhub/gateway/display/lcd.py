"""An HD44780 character LCD through a PCF8574 I2C backpack (the common blue 16x2 module).

The backpack's eight outputs drive the LCD: P0 RS (0 instruction, 1 character), P1 RW (kept
0: write only), P2 E (the LCD latches D4-D7 on its falling edge), P3 the backlight, P4-P7 the
data lines D4-D7. So the LCD runs in 4-bit mode: every byte is two nibbles, high first, each
one written to the backpack three times (E low, E high, E low). The start sequence is the
datasheet's "initialization by instruction" (three times 8-bit, then 4-bit), which brings the
LCD into 4-bit mode from any state, so a display replugged mid-byte comes back right.

The LCD's character ROM (A00, the common one) has ASCII from space to ``}`` but for ``\\``
(a yen sign there), plus a few Latin and Greek letters up high: ``°`` ``ä`` ``ö`` ``ü`` ``ß``
``µ`` ``Ω`` ``π`` ``Σ`` ``→`` ``←`` are mapped to them, accented letters lose their accent
(``é`` → ``e``), and anything else shows as ``?``.
"""

from __future__ import annotations

import contextlib
import time
import unicodedata
from collections.abc import Callable, Sequence
from typing import Final, Protocol

from fieldhub.gateway.display.config import LcdSinkConfig

__all__ = ["ROM_A00", "I2cBus", "LcdSink", "rom_bytes", "row_starts"]

RS: Final = 0x01
ENABLE: Final = 0x04
BACKLIGHT: Final = 0x08

CLEAR: Final = 0x01
ENTRY_INCREMENT: Final = 0x06
DISPLAY_ON: Final = 0x0C
DISPLAY_OFF: Final = 0x08
FUNCTION_4BIT_2LINE: Final = 0x28
FUNCTION_4BIT_1LINE: Final = 0x20
SET_DDRAM: Final = 0x80

ROM_A00: Final = {
    "¥": 0x5C, "→": 0x7E, "←": 0x7F, "°": 0xDF, "ä": 0xE1, "ß": 0xE2, "µ": 0xE4, "ö": 0xEF,
    "Ω": 0xF4, "ü": 0xF5, "Σ": 0xF6, "π": 0xF7, "÷": 0xFD,
}  # fmt: skip
"""Characters outside ASCII that the A00 ROM has, and where."""
_NOT_IN_ROM: Final = frozenset("\\~")  # ASCII codes that the ROM shows as ¥ and →


def row_starts(width: int) -> tuple[int, int, int, int]:
    """The display RAM address of each row's first character: rows 2 and 3 continue rows 0
    and 1 after ``width`` characters (HD44780 4-line modules)."""
    return (0x00, 0x40, width, 0x40 + width)


def rom_bytes(text: str) -> bytes:
    """``text`` in the LCD's character codes (see the module doc for what is replaced)."""
    return bytes(_rom_code(char) for char in text)


def _rom_code(char: str) -> int:
    if " " <= char <= "}" and char not in _NOT_IN_ROM:
        return ord(char)
    code = ROM_A00.get(char)
    if code is not None:
        return code
    base = unicodedata.normalize("NFKD", char)[:1]
    if base and " " <= base <= "}" and base not in _NOT_IN_ROM:
        return ord(base)
    return ord("?")


class I2cBus(Protocol):
    """The part of ``smbus2.SMBus`` this sink uses."""

    def write_byte(self, i2c_addr: int, value: int, force: bool | None = None) -> None:
        """Write one byte to the device at ``i2c_addr``. Raises OSError when it is absent."""

    def close(self) -> None:
        """Release the bus."""


def _smbus(bus: int) -> I2cBus:
    from smbus2 import SMBus  # only where an LCD is configured: the import opens nothing

    return SMBus(bus)


class LcdSink:
    """Shows the screen on the LCD (see the module doc)."""

    def __init__(self, config: LcdSinkConfig, open_bus: Callable[[int], I2cBus] = _smbus) -> None:
        self.name = config.name
        self.width: int = config.width
        self.rows: int = config.rows
        self._config = config
        self._open_bus = open_bus
        self._bus: I2cBus | None = None
        self._light = BACKLIGHT if config.backlight else 0

    def open(self) -> None:
        """Open the bus and bring the LCD into 4-bit mode, cleared, cursor off."""
        self._bus = self._open_bus(self._config.bus)
        time.sleep(0.05)  # the LCD needs 40 ms after power-up
        for pause in (0.0045, 0.0045, 0.00015):
            self._nibble(0x30, 0)
            time.sleep(pause)
        self._nibble(0x20, 0)
        self._instruction(FUNCTION_4BIT_2LINE if self.rows > 1 else FUNCTION_4BIT_1LINE)
        self._instruction(DISPLAY_OFF)
        self._instruction(CLEAR)
        time.sleep(0.002)  # clearing takes 1.52 ms
        self._instruction(ENTRY_INCREMENT)
        self._instruction(DISPLAY_ON)

    def show(self, lines: Sequence[str], previous: Sequence[str] | None) -> None:
        """Rewrite the rows that differ from ``previous`` (all when it is None)."""
        starts = row_starts(self.width)
        for row, text in enumerate(lines):
            if previous is not None and row < len(previous) and previous[row] == text:
                continue
            self._instruction(SET_DDRAM | starts[row])
            for code in rom_bytes(text):
                self._byte(code, RS)

    def close(self) -> None:
        """Release the bus, whatever state it is in."""
        bus, self._bus = self._bus, None
        if bus is not None:
            with contextlib.suppress(
                OSError
            ):  # the adapter is gone already; nothing left to release
                bus.close()

    def _instruction(self, code: int) -> None:
        self._byte(code, 0)

    def _byte(self, value: int, mode: int) -> None:
        self._nibble(value & 0xF0, mode)
        self._nibble((value << 4) & 0xF0, mode)

    def _nibble(self, high_bits: int, mode: int) -> None:
        if self._bus is None:
            raise OSError("the I2C bus is not open")
        out = high_bits | mode | self._light
        address = self._config.address
        self._bus.write_byte(address, out)
        self._bus.write_byte(address, out | ENABLE)
        self._bus.write_byte(address, out)
