"""The README's gateway walk-through, as a new user types it (issue 14, "done when").

The ``sh`` blocks of README's "A gateway and three controllers next to the demo" are read from
the README and typed into one ``bash``, block after block, as a user pastes them into a
terminal (so ``&`` makes jobs, and the prose's ``kill -9 %1`` finds the gateway), next to a
hub serving HTTP in place of the demo's. Only what the user copies is filled in: the
credentials ``device add`` printed and the hub's broker address. ``cat screen-tty`` is done by
the test (it reads the pty's far end), the rest as written. Checked as the section promises:
the three pairing codes on the display, the children paired under their gateway
(``/api/devices``, ``parent``), their values, ``fieldhub send`` through the gateway, the
display showing their link and values; after the kill, the children ``unreachable`` and one
offline alarm (the demo's rule), the gateway's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fieldhub.cli.demo_alarms import default_rules
from fieldhub.hub.app import Hub
from fieldhub.hub.store.alarms import AlarmFilter
from tests.conftest import HubClient, HubFactory, api_client
from tests.gateway_processes import pairing_requests
from tests.hub_client import add_user, user_token
from tests.support.ptys import decode_screen
from tests.support.servers import free_port
from tests.test_rollout_agents import serving
from tests.waiting import eventually

ROOT = Path(__file__).resolve().parent.parent
SECTION = "### A gateway and three controllers next to the demo"
CHILDREN = ["ctrl-1", "ctrl-2", "ctrl-3"]


def readme_section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return text.split(SECTION, 1)[1].split("\n## ", 1)[0]


def readme_blocks() -> list[str]:
    """The section's ``sh`` blocks, as a user copies them."""
    return re.findall(r"```sh\n(.*?)```", readme_section(), flags=re.S)


class Terminal:
    """One ``bash`` reading what is typed, its output (and its jobs') collected."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.output = ""
        self._typed = 0
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while chunk := await self.process.stdout.read(65536):
            self.output += chunk.decode(errors="replace")

    async def type(self, text: str, within_s: float = 120) -> str:
        """Type ``text``; what was printed until it was done."""
        self._typed += 1
        marker = f"__typed_{self._typed}__"
        assert self.process.stdin is not None
        start = len(self.output)
        self.process.stdin.write(f"{text}\necho {marker}\n".encode())
        await self.process.stdin.drain()
        await eventually(lambda: marker in self.output[start:], f"{text[:40]!r} done", within_s)
        return self.output[start : self.output.index(marker, start)]

    async def close(self) -> None:
        """End the shell and every job it started (one process group)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        await self.process.wait()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


@contextlib.asynccontextmanager
async def terminal(cwd: Path, url: str, token: str) -> AsyncIterator[Terminal]:
    """A shell in ``cwd`` where ``.venv/bin/fieldhub`` is this checkout's, with the demo's
    ``FIELDHUB_URL`` and ``FIELDHUB_TOKEN`` exported as the README's quick start says."""
    script = cwd / ".venv" / "bin" / "fieldhub"
    script.parent.mkdir(parents=True)
    script.write_text(f'#!/bin/sh\nexec {sys.executable} -m fieldhub "$@"\n')
    script.chmod(0o755)
    env = {**os.environ, "FIELDHUB_URL": url, "FIELDHUB_TOKEN": token, "COLUMNS": "200"}
    process = await asyncio.create_subprocess_exec(
        "bash", cwd=cwd, env=env, start_new_session=True,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    shell = Terminal(process)
    try:
        yield shell
    finally:
        await shell.close()


class Screen:
    """The far end of the README's pretend serial cable, read as ``cat screen-tty`` would."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd: int | None = None
        self._received = bytearray()

    def rows(self) -> list[str]:
        if self._fd is None:
            if not self._path.exists():
                return []
            self._fd = os.open(self._path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(self._fd, 65536):
                self._received += chunk
        return [row.rstrip() for row in decode_screen(self._received.decode(errors="replace"), 4)]

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)


async def _demo_offline_rule(hub: Hub) -> str:
    """The demo's offline rule, as ``fieldhub demo`` installs it, but raised after 1 s instead
    of 60 (its delay is not what this test checks, and a minute is long)."""
    [rule] = [r for r in default_rules() if r["condition"]["kind"] == "presence"]
    await hub.alarms.put_rule({**rule, "for_s": 1}, actor="test", create=True)
    return str(rule["id"])


@pytest.mark.slow  # a hub, a gateway, three controllers, socat and nine CLI runs: ~40 s loaded
@pytest.mark.timeout(300)  # its own waits (30 s each) say what went wrong first
async def test_the_readme_gateway_walkthrough(make_hub: HubFactory, tmp_path: Path) -> None:
    gateway_block, controllers_block, socat_block, approve_block = readme_blocks()
    kill = re.search(r"`(kill -9 %\d)`", readme_section())
    assert kill is not None
    port = free_port()
    screen = Screen(tmp_path / "screen-tty")
    try:
        async with (
            make_hub(data=tmp_path / "data", http=f"127.0.0.1:{port}") as hub,
            serving(hub, port),
            api_client(hub) as api,
        ):
            rule = await _demo_offline_rule(hub)
            _id, token = await user_token(hub, await add_user(hub, "admin", []))
            async with terminal(tmp_path, f"http://127.0.0.1:{port}", token) as shell:
                add_gateway, rest = gateway_block.split("\n", 1)
                printed = await shell.type(add_gateway)
                found = re.search(r"username: (\S+)\nsecret: (\S+)", printed)
                assert found is not None, printed
                await shell.type(
                    rest.replace("'gw-1.…'", f"'{found[1]}'")
                    .replace("secret: '…'", f"secret: '{found[2]}'")
                    .replace("mqtt://127.0.0.1:1883", hub.broker_url)
                )
                await eventually(lambda: hub.presence.get("gw-1").presence == "online", "gw-1 up")

                await shell.type(controllers_block)
                await eventually(
                    lambda: _asked(api, CHILDREN), "three pairing requests in the hub", 30
                )
                await shell.type(socat_block)
                codes = set(re.findall(r"pairing code for gateway gw-1: (\d{6})", shell.output))
                waiting = [f"pair {child}: " for child in CHILDREN]
                shown = await eventually(
                    lambda: _codes_shown(screen.rows(), waiting),
                    "the three codes on the display",
                    30,
                )
                assert shown == codes  # the ones the controllers' consoles print

                approve, send = approve_block.rstrip("\n").rsplit("\n", 1)
                approved = await shell.type(approve)
                assert len(re.findall(r'"status":\s*"succeeded"', approved)) == 3, approved
                listed = (await api.get("/api/devices", params={"parent": "gw-1"})).json()
                assert {d["id"]: d["parent"] for d in listed} == dict.fromkeys(CHILDREN, "gw-1")
                sent = await shell.type(send)
                assert "succeeded" in sent, sent

                async def values() -> bool:
                    for child in CHILDREN:
                        latest = (await api.get(f"/api/devices/{child}/latest")).json()
                        if not 18 <= latest.get("temperature", {}).get("value", 0) <= 24:
                            return False
                    return True

                await eventually(values, "the three controllers' values in the hub", 30)
                rows = await eventually(lambda: _linked(screen.rows()), "the display linked", 30)
                assert rows[0] == "hub online"

                await shell.type(kill[1])
                for child in CHILDREN:
                    await eventually(
                        lambda child=child: (
                            hub.presence.get(child).reason == "via gw-1: gateway offline"
                        ),
                        f"{child} unreachable",
                        30,
                    )
                    assert hub.presence.get(child).presence == "unreachable"

                async def alarmed() -> list[str]:
                    await hub.alarms.engine.evaluate(tick=True)
                    return [a.device_id for a in await hub.alarms.find(AlarmFilter(rule=rule))]

                assert await eventually(alarmed, "the gateway's offline alarm", 30) == ["gw-1"]
                # The children went when the gateway did: their delay is over too, and still one.
                assert await alarmed() == ["gw-1"]
    finally:
        screen.close()


async def _asked(api: HubClient, children: list[str]) -> bool:
    return set(children) <= await pairing_requests(api, "gw-1")


def _codes_shown(rows: list[str], waiting: list[str]) -> set[str] | None:
    """The codes on the screen when it lists exactly the controllers ``waiting``."""
    listed = rows[: len(waiting)]
    if len(listed) < len(waiting):
        return None
    if [row[: len(w)] for row, w in zip(listed, waiting, strict=True)] != waiting:
        return None
    return {row.rsplit(" ", 1)[1] for row in listed}


def _linked(rows: list[str]) -> list[str] | None:
    expected = [rf"{child} linked \d+\.\d" for child in CHILDREN]
    if len(rows) == 4 and all(re.fullmatch(e, r) for e, r in zip(expected, rows[1:], strict=True)):
        return rows
    return None
