"""A stand-in for ``smbus2.SMBus`` with an HD44780 LCD on a PCF8574 backpack behind it.

No I2C bus exists on a test machine: this is the one fake the display tests use. It has
``SMBus``'s interface (``write_byte``, ``close``) and plays the LCD the way the datasheet
describes it, written here independently of the sink: the backpack's byte sets the pins
(P0 RS, P2 E, P3 backlight, P4-P7 D4-D7), the LCD latches D4-D7 when E falls, starts in 8-bit
mode, switches on a function set, and in 4-bit mode builds each byte from two nibbles. So a
test reads back the characters in the LCD's memory, as a person would read the glass.
"""

from __future__ import annotations

from dataclasses import dataclass, field

RS, ENABLE, BACKLIGHT = 0x01, 0x04, 0x08
_GLYPHS = {0xDF: "°", 0xE1: "ä", 0xF5: "ü", 0xE4: "µ"}  # a few of the A00 ROM's upper half


@dataclass
class Lcd:
    """The LCD and its backpack: what they hold, and whether they answer on the bus."""

    address: int = 0x27
    present: bool = True
    eight_bit: bool = True
    backlight: bool = False
    display_on: bool = False
    inits: int = 0  # switches from 8-bit into 4-bit mode: the start sequence ran
    ddram: bytearray = field(default_factory=lambda: bytearray(b" " * 128))
    _cursor: int = 0
    _half: int | None = None
    _pins: int = 0

    def unplug(self) -> None:
        """The module loses power: it stops answering and forgets everything."""
        self.present = False
        self.eight_bit, self.display_on, self._half, self._pins = True, False, None, 0
        self.ddram[:] = bytes(range(0x30, 0x30 + 128))  # power-on garbage, surely not blank

    def rows(self, width: int, count: int) -> list[str]:
        """The text on the glass, row by row (HD44780 row addresses)."""
        starts = [0x00, 0x40, width, 0x40 + width][:count]
        return ["".join(_GLYPHS.get(b, chr(b)) for b in self.ddram[s : s + width]) for s in starts]

    def pins(self, value: int) -> None:
        falling = self._pins & ENABLE and not value & ENABLE
        if falling:
            self._latch(self._pins)
        self._pins = value
        self.backlight = bool(value & BACKLIGHT)

    def _latch(self, pins: int) -> None:
        rs, nibble = pins & RS, pins >> 4
        if self.eight_bit:
            self._execute(rs, nibble << 4)
        elif self._half is None:
            self._half = nibble
        else:
            byte, self._half = (self._half << 4) | nibble, None
            self._execute(rs, byte)

    def _execute(self, rs: int, byte: int) -> None:
        if rs:
            self.ddram[self._cursor] = byte
            self._cursor = (self._cursor + 1) & 0x7F
        elif byte & 0x80:
            self._cursor = byte & 0x7F
        elif byte & 0x20:  # function set: DL (0x10) chooses 8 or 4 data lines
            four_bit = not byte & 0x10
            self.inits += self.eight_bit and four_bit
            self.eight_bit = not four_bit
        elif byte & 0x08:
            self.display_on = bool(byte & 0x04)
        elif byte == 0x01:
            self.ddram[:] = b" " * 128
            self._cursor = 0


class FakeSMBus:
    """``smbus2.SMBus``'s interface, in front of an :class:`Lcd`."""

    def __init__(self, bus: int, lcd: Lcd) -> None:
        self.bus = bus
        self._lcd = lcd

    def write_byte(self, i2c_addr: int, value: int, force: bool | None = None) -> None:
        if not self._lcd.present or i2c_addr != self._lcd.address:
            raise OSError(121, "Remote I/O error")
        self._lcd.pins(value)

    def close(self) -> None:
        pass
