"""``fieldhub gateway`` and ``fieldhub controller`` as processes next to a test hub: their
YAML files, their start, and the pairing an admin does through the hub's API."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path

from fieldhub.hub.app import Hub
from tests.conftest import HubClient
from tests.waiting import eventually


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def gateway_config(
    tmp: Path,
    hub: Hub,
    gw: str,
    credentials: tuple[str, str],
    port: int,
    *,
    broker: str | None = None,
    extra: str = "",
) -> Path:
    """``gateway.yaml`` on loopback (announcements on ``port``), on ``hub``'s broker unless
    ``broker`` is given (``extra``: more YAML, for TLS or a display)."""
    config = tmp / "gateway.yaml"
    config.write_text(
        f"gateway: {{id: {gw}}}\n"
        f"hub:\n  broker: '{broker or hub.broker_url}'\n"
        f"  username: '{credentials[0]}'\n  secret: '{credentials[1]}'\n"
        f"data_dir: '{tmp / 'gateway'}'\n"
        f"lan: {{listen_host: 127.0.0.1, announce_port: {port}, heartbeat_s: 1.0}}\n" + extra
    )
    config.chmod(0o600)
    return config


async def start(config: Path, program: str = "gateway") -> asyncio.subprocess.Process:
    """``fieldhub PROGRAM --config CONFIG``, its output (logs included) on one pipe."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "fieldhub", program, "--config", str(config)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )


def controller_config(tmp: Path, controller_id: str, announce_port: int) -> Path:
    """A controller on loopback with a made-up temperature and a relay that writes a log."""
    log = tmp / f"{controller_id}.log"
    config = tmp / f"{controller_id}.yaml"
    config.write_text(
        f"id: {controller_id}\n"
        f"data_dir: '{tmp / controller_id}'\n"
        "listen: 127.0.0.1:0\n"
        f"announce: {{to: 127.0.0.1, port: {announce_port}, every_s: 0.5}}\n"
        "report_every_s: 0.5\n"
        "heartbeat_s: 1\n"
        "values: {temp: {simulate: [20, 21]}}\n"
        "actions:\n"
        "  relay.set:\n"
        f"    command: [/bin/sh, -c, 'echo relay $FIELDHUB_ARG_CLOSED >> {log}']\n"
        "    args: {closed: bool}\n"
        "    timeout_s: 5\n"
    )
    return config


async def pairing_requests(api: HubClient, gw: str) -> set[str]:
    """The controllers that asked ``gw`` to pair (its ``gateway.pairing_requested`` events)."""
    page = await api.get("/api/events", params={"device": gw, "type": "gateway.pairing_requested"})
    return {e["data"]["controller"] for e in page.json()["events"]}


async def pair(api: HubClient, gw: str, children: list[str]) -> None:
    """As an admin: wait for each child's request, register it under ``gw``, approve it."""

    async def asked() -> bool:
        return set(children) <= await pairing_requests(api, gw)

    await eventually(asked, f"pairing requests of {children}", 30)
    for child in children:
        made = await api.post("/api/devices", json={"id": child, "parent": gw})
        assert made.status_code == 201, made.text
        approved = await api.post(
            f"/api/devices/{gw}/commands",
            json={"action": "gateway.approve_pairing", "args": {"controller": child}},
        )
        assert approved.json()["status"] == "succeeded", approved.text


async def stop_all(*processes: asyncio.subprocess.Process) -> None:
    """Kill what still runs (a test's ``finally``)."""
    for process in processes:
        if process.returncode is None:
            process.kill()
            await process.wait()
