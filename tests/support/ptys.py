"""A real serial line for display tests: two ptys joined by ``socat``.

``socat pty,link=A pty,link=B`` makes two pseudo-terminals and copies bytes between them: the
gateway's serial sink opens ``A`` as it would ``/dev/ttyUSB0``, and the test reads at ``B``
what an M5Stack would receive. Stopping socat is the cable pulled (``A`` gives EIO, then
vanishes); starting it again is the cable plugged back, at the same path.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
from pathlib import Path


class PtyPair:
    """One socat-joined pair of ptys; ``received`` is what arrived at the screen's end."""

    def __init__(self, folder: Path) -> None:
        self.display_end = folder / "display-tty"
        self.screen_end = folder / "screen-tty"
        self._process: subprocess.Popen[bytes] | None = None
        self._reader: int | None = None
        self._received = bytearray()

    def start(self) -> None:
        """Start socat and wait for both ends to exist."""
        self._process = subprocess.Popen(
            [
                "socat",
                "-d",
                "-d",
                f"pty,raw,echo=0,link={self.display_end}",
                f"pty,raw,echo=0,link={self.screen_end}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not (self.display_end.exists() and self.screen_end.exists()):
            if time.monotonic() > deadline or self._process.poll() is not None:
                raise RuntimeError("socat did not make its ptys")
            time.sleep(0.02)
        self._reader = os.open(self.screen_end, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)

    def stop(self) -> None:
        """Stop socat: the display's cable is pulled."""
        if self._reader is not None:
            os.close(self._reader)
            self._reader = None
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)
            self._process = None

    def received(self) -> str:
        """Everything the screen's end got since the last :meth:`forget`, as text."""
        if self._reader is not None:
            with contextlib.suppress(BlockingIOError):
                while chunk := os.read(self._reader, 65536):
                    self._received += chunk
        return self._received.decode("utf-8", errors="replace")

    def forget(self) -> None:
        """Start :meth:`received` afresh."""
        self.received()
        self._received.clear()


def decode_screen(protocol: str, rows: int) -> list[str]:
    """What a sketch following docs/gateway-display.md shows after reading ``protocol``."""
    screen = [""] * rows
    for line in protocol.split("\n"):
        if line == "CLR":
            screen = [""] * rows
        elif found := re.fullmatch(r"L(\d+) (.*)", line):
            screen[int(found[1])] = found[2]
    return screen
