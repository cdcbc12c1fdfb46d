"""A generated picture for the simulated camera: a PNG made with the standard library only.

The demo and the tests need pictures that look like something and differ from each other,
without Pillow on the device (the agent's memory budget, docs/agent.md) and without a camera:
a dim "scene" (a gradient and a door frame) with the device id, the date and the time written
on it in large block letters, as a surveillance camera stamps its frames. PNG needs only
``zlib`` and ``struct``; each capture's time makes its bytes, and so its hash, its own.
"""

from __future__ import annotations

import struct
import time
import zlib
from typing import Final

__all__ = ["PNG_TYPE", "picture"]

PNG_TYPE: Final = "image/png"

_GLYPHS: Final = {
    "0": "111101101101111",
    "1": "010110010010111",
    "2": "111001111100111",
    "3": "111001111001111",
    "4": "101101111001001",
    "5": "111100111001111",
    "6": "111100111101111",
    "7": "111001010010010",
    "8": "111101111101111",
    "9": "111101111001111",
    "a": "010101111101101",
    "b": "110101110101110",
    "c": "011100100100011",
    "d": "110101101101110",
    "e": "111100110100111",
    "f": "111100110100100",
    "g": "011100101101011",
    "h": "101101111101101",
    "i": "111010010010111",
    "j": "001001001101010",
    "k": "101101110101101",
    "l": "100100100100111",
    "m": "101111111101101",
    "n": "110101101101101",
    "o": "010101101101010",
    "p": "110101110100100",
    "q": "010101101110011",
    "r": "110101110101101",
    "s": "011100010001110",
    "t": "111010010010010",
    "u": "101101101101111",
    "v": "101101101101010",
    "w": "101101111111101",
    "x": "101101010101101",
    "y": "101101010010010",
    "z": "111001010100111",
    "-": "000000111000000",
    "_": "000000000000111",
    ".": "000000000000010",
    ":": "000010000010000",
    " ": "000000000000000",
}
"""3 by 5 block letters, row by row: enough for device ids, dates and times."""
_UNKNOWN: Final = "111111111111111"


def picture(device_id: str, width: int, height: int, at: float | None = None) -> bytes:
    """A PNG (RGB, 8 bits) of ``width`` by ``height`` showing ``device_id`` and the local date
    and time of ``at`` (now when None), with the milliseconds, so two captures differ."""
    when = time.time() if at is None else at
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))
    lines = [device_id.lower(), stamp[:10], f"{stamp[11:]}.{int(when * 1000) % 1000:03d}"]
    rows = _scene(width, height)
    scale = max(1, min(width // (4 * max(len(line) for line in lines) + 4), height // 24))
    y = scale * 2
    for line in lines:
        _write(rows, line, scale * 2, y, scale)
        y += scale * 7
    raw = b"".join(b"\x00" + bytes(row) for row in rows)
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)),
            _chunk(b"IDAT", zlib.compress(raw, 6)),
            _chunk(b"IEND", b""),
        )
    )


def _scene(width: int, height: int) -> list[bytearray]:
    """A dim blue-grey gradient with a lighter door frame in the middle."""
    rows = []
    left, right = width * 3 // 8, width * 5 // 8
    top = height // 4
    for y in range(height):
        shade = 40 + 60 * y // max(1, height - 1)
        row = bytearray((shade // 2, shade // 2 + 8, shade) * width)
        if y >= top:
            for x in (left, left + 1, right - 2, right - 1):
                row[3 * x : 3 * x + 3] = b"\xb4\xa0\x78"
        elif y in (top - 2, top - 1):
            row[3 * left : 3 * right] = b"\xb4\xa0\x78" * (right - left)
        rows.append(row)
    return rows


def _write(rows: list[bytearray], text: str, x0: int, y0: int, scale: int) -> None:
    """Draw ``text`` in white blocks of ``scale`` pixels, clipped to the picture."""
    height, width = len(rows), len(rows[0]) // 3
    for index, char in enumerate(text):
        glyph = _GLYPHS.get(char, _UNKNOWN)
        for bit, on in enumerate(glyph):
            if on != "1":
                continue
            gx = x0 + (index * 4 + bit % 3) * scale
            gy = y0 + (bit // 3) * scale
            for y in range(gy, min(gy + scale, height)):
                end = min(gx + scale, width)
                if gx < end:
                    rows[y][3 * gx : 3 * end] = b"\xff" * (3 * (end - gx))


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
