"""Controllers and a gateway on separate hosts: network namespaces joined by a bridge, and a
router in front of a second subnet that broadcasts do not cross.

::

    [gw 10.77.0.1] ──┐                ┌── [ctrl-a 10.77.0.2]        (same LAN: broadcast)
                     └──── bridge ────┤
                                      └── [router 10.77.0.254 | 10.78.0.1] ── [ctrl-b 10.78.0.2]

Needs root (CI runs as root) and ``ip`` (iproute2, scripts/system-packages); skipped otherwise.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.waiting import eventually

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
    pytest.mark.skipif(shutil.which("ip") is None, reason="needs iproute2's `ip`"),
]

ROOT = Path(__file__).resolve().parents[1]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def network() -> Iterator[dict[str, str]]:
    """The namespaces of the picture above, by role; removed afterwards."""
    tag = f"fh{os.getpid() % 100000}"
    names = {role: f"{tag}{role}" for role in ("br", "gw", "ca", "rt", "cb")}
    try:
        for name in names.values():
            _ip("netns", "add", name)
            _ip("-n", name, "link", "set", "lo", "up")
        br = names["br"]
        _ip("-n", br, "link", "add", "br0", "type", "bridge")
        _ip("-n", br, "link", "set", "br0", "up")
        for role, address in (
            ("gw", "10.77.0.1/24"),
            ("ca", "10.77.0.2/24"),
            ("rt", "10.77.0.254/24"),
        ):
            _veth(names[role], "eth0", br, f"p{role}", address)
            _ip("-n", br, "link", "set", f"p{role}", "master", "br0")
        _veth(names["cb"], "eth0", names["rt"], "eth1", "10.78.0.2/24")
        _ip("-n", names["rt"], "addr", "add", "10.78.0.1/24", "brd", "+", "dev", "eth1")
        subprocess.run(
            ["ip", "netns", "exec", names["rt"], "sysctl", "-qw", "net.ipv4.ip_forward=1"],
            check=True,
        )
        _ip("-n", names["gw"], "route", "add", "10.78.0.0/24", "via", "10.77.0.254")
        _ip("-n", names["cb"], "route", "add", "default", "via", "10.78.0.1")
        yield names
    finally:
        for name in names.values():
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


def _veth(ns: str, name: str, peer_ns: str, peer: str, address: str) -> None:
    _ip("-n", ns, "link", "add", name, "type", "veth", "peer", "name", peer, "netns", peer_ns)
    if address:
        _ip("-n", ns, "addr", "add", address, "brd", "+", "dev", name)
    _ip("-n", ns, "link", "set", name, "up")
    _ip("-n", peer_ns, "link", "set", peer, "up")


class Process:
    """A program in a namespace, its stdout read as JSON lines."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[dict[str, Any]] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            try:
                self.lines.append(json.loads(line))
            except ValueError:
                self.lines.append({"text": line.decode(errors="replace").strip()})

    def said(self, key: str, value: Any = None) -> list[dict[str, Any]]:
        return [line for line in self.lines if key in line and value in (None, line[key])]

    async def ask(self, request: dict[str, Any], answer: str) -> dict[str, Any]:
        before = len(self.said(answer))
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(request).encode() + b"\n")
        await eventually(lambda: len(self.said(answer)) > before, f"an answer to {request}")
        return self.said(answer)[-1]


@asynccontextmanager
async def in_namespace(ns: str, *argv: str) -> AsyncIterator[Process]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}
    proc = await asyncio.create_subprocess_exec(
        "ip",
        "netns",
        "exec",
        ns,
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    process = Process(proc)
    try:
        yield process
    finally:
        if proc.returncode is None:
            proc.terminate()
            async with asyncio.timeout(10):
                await proc.wait()


def _controller_yaml(tmp: Path, controller_id: str, broadcast: str) -> Path:
    path = tmp / f"{controller_id}.yaml"
    path.write_text(
        f"id: {controller_id}\n"
        f"data_dir: {tmp / controller_id}\n"
        "listen: 0.0.0.0:7410\n"
        f"announce: {{to: {broadcast}, port: 7411, every_s: 0.5}}\n"
        "report_every_s: 0.5\nheartbeat_s: 1\n"
        "values: {temp: {simulate: [10, 11]}}\n"
        f"actions: {{touch: {{command: [/usr/bin/touch, {tmp / controller_id}.touched]}}}}\n"
    )
    return path


async def test_broadcast_crosses_the_bridge_and_the_static_list_crosses_the_router(
    tmp_path: Path, network: dict[str, str]
) -> None:
    python = sys.executable
    gateway_argv = [python, "-m", "tests.support.lan_gateway", "--keys", str(tmp_path / "keys")]
    async with (
        in_namespace(
            network["ca"],
            python,
            "-m",
            "fieldhub",
            "controller",
            "-c",
            str(_controller_yaml(tmp_path, "ctrl-a", "10.77.0.255")),
        ),
        in_namespace(
            network["cb"],
            python,
            "-m",
            "fieldhub",
            "controller",
            "-c",
            str(_controller_yaml(tmp_path, "ctrl-b", "10.78.0.255")),
        ),
    ):
        async with in_namespace(network["gw"], *gateway_argv) as gateway:
            await eventually(lambda: gateway.said("pairing", "ctrl-a"), "ctrl-a asking to pair")
            assert gateway.said("pairing")[0]["address"] == "10.77.0.2"  # found by its broadcast
            assert (await gateway.ask({"approve": "ctrl-a"}, "approved"))["approved"]
            await eventually(lambda: len(gateway.said("report", "ctrl-a")) >= 4, "ctrl-a's reports")
            # ctrl-b has been announcing all along, on its side of the router: never heard.
            assert (await gateway.ask({"states": True}, "states"))["states"] == {"ctrl-a": "linked"}

        static = ["--static", "10.78.0.2:7410"]
        async with in_namespace(network["gw"], *gateway_argv, *static) as gateway:
            await eventually(lambda: gateway.said("online", None), "ctrl-a linked again")
            await eventually(lambda: gateway.said("pairing", "ctrl-b"), "ctrl-b asking to pair")
            assert not gateway.said("pairing", "ctrl-a")  # the gateway kept its key
            assert (await gateway.ask({"approve": "ctrl-b"}, "approved"))["approved"]
            await eventually(lambda: len(gateway.said("online")) == 2, "both controllers online")
            online = {
                line["online"]["controller_id"]: line["online"] for line in gateway.said("online")
            }
            assert online["ctrl-b"]["address"] == "10.78.0.2:7410"
            assert online["ctrl-b"]["actions"] == {"touch": {}}
            for controller_id in ("ctrl-a", "ctrl-b"):
                answer = await gateway.ask({"run": [controller_id, "c-1", "touch", {}]}, "outcome")
                assert answer["outcome"]["status"] == "succeeded"
                assert (tmp_path / f"{controller_id}.touched").exists()

            # ctrl-a gets a new address (a new DHCP lease): it announces at once, the old link
            # dies, and the gateway links at the new address, without pairing again.
            _ip("-n", network["ca"], "addr", "flush", "dev", "eth0")
            _ip("-n", network["ca"], "addr", "add", "10.77.0.3/24", "brd", "+", "dev", "eth0")
            await eventually(
                lambda: any(
                    line["online"]["address"] == "10.77.0.3:7410" for line in gateway.said("online")
                ),
                "ctrl-a linked at its new address",
                within_s=30,
            )
            assert gateway.said("offline", "ctrl-a")
            assert len(gateway.said("pairing")) == 1  # ctrl-b's, in this run
