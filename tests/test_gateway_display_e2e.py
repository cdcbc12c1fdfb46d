"""The running ``fieldhub gateway`` with a ``display`` section, read on a real serial line.

The gateway process writes to one end of a socat pty pair as it would to an M5Stack on
``/dev/ttyUSB0``; the test reads the other end and decodes it as the display's sketch does
(docs/gateway-display.md). Two ``fieldhub controller`` processes next to a hub: the screen
shows the gateway's link to the hub, then each waiting controller's pairing code (the one
its own console prints, so a person can compare them), then their link and values once an
admin approved them in the hub, and a controller that goes away reads ``offline``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fieldhub.hub.app import Hub
from tests.conftest import api_client
from tests.gateway_processes import (
    controller_config,
    free_udp_port,
    gateway_config,
    pair,
    start,
    stop_all,
)
from tests.gateway_support import register_gateway
from tests.support.ptys import PtyPair, decode_screen
from tests.waiting import eventually

ROWS, WIDTH = 4, 30


@contextlib.asynccontextmanager
async def console(process: asyncio.subprocess.Process) -> AsyncIterator[list[str]]:
    """The lines ``process`` prints, as they come."""
    lines: list[str] = []

    async def read() -> None:
        assert process.stdout is not None
        while line := await process.stdout.readline():
            lines.append(line.decode(errors="replace"))

    reader = asyncio.create_task(read())
    try:
        yield lines
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


def _code_on_console(lines: list[str]) -> str | None:
    found = [re.search(r"pairing code for gateway \S+: (\d{6})", line) for line in lines]
    codes = [match[1] for match in found if match]
    return codes[-1] if codes else None


@pytest.mark.slow  # a gateway and two controllers as processes: ~15 s on a loaded machine
async def test_the_gateway_process_shows_hub_pairing_codes_values_and_a_lost_controller(
    hub: Hub, tmp_path: Path, uid: str
) -> None:
    gw, first, second = f"gw-{uid}", f"a-{uid}", f"b-{uid}"
    ptys = PtyPair(tmp_path)
    ptys.start()
    display = (
        "display:\n"
        "  template:\n"
        "    - 'hub {hub}'\n"
        f"    - '{{{first}:presence}} {{{first}.temp:.1f}}'\n"
        f"    - '{{{second}:presence}} {{{second}.temp:.1f}}'\n"
        f"  sinks: [{{type: serial, port: '{ptys.display_end}', width: {WIDTH}, rows: {ROWS}}}]\n"
    )
    port = free_udp_port()
    credentials = await register_gateway(hub, gw)
    gateway = await start(gateway_config(tmp_path, hub, gw, credentials, port, extra=display))
    processes = [gateway]

    def screen() -> list[str]:
        return [row.rstrip() for row in decode_screen(ptys.received(), ROWS)]

    try:
        # Before any controller: the gateway's own link, and dashes for what is not known.
        await eventually(lambda: screen() == ["hub online", "-- --", "-- --", ""], "hub online")
        assert ptys.received().startswith(f"HELLO {ROWS} {WIDTH}\nCLR\n")

        controllers = [
            await start(controller_config(tmp_path, child, port), "controller")
            for child in (first, second)
        ]
        processes += controllers
        async with console(controllers[0]) as said_first, console(controllers[1]) as said_second:
            codes = [
                await eventually(lambda said=said: _code_on_console(said), "a code on a console")
                for said in (said_first, said_second)
            ]
            waiting = [f"pair {first}: {codes[0]}", f"pair {second}: {codes[1]}", "", ""]
            await eventually(lambda: screen() == waiting, f"both codes on the screen {waiting}")

            async with api_client(hub) as api:
                await pair(api, gw, [first, second])

            def linked() -> list[float] | None:
                rows = screen()
                found = [re.fullmatch(r"linked (\d+\.\d)", row) for row in rows[1:3]]
                if rows[0] != "hub online" or not all(found):
                    return None
                return [float(match[1]) for match in found if match]

            temperatures = await eventually(linked, "both linked, with their values", 30)
            assert all(20 <= t <= 21 for t in temperatures)  # the controllers' simulate range

            controllers[1].kill()
            await controllers[1].wait()
            await eventually(
                lambda: screen()[2].startswith("offline "), f"{second} offline on the screen", 20
            )
            assert screen()[1].startswith("linked ")
    finally:
        await stop_all(*processes)
        ptys.stop()
