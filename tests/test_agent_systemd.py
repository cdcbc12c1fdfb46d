"""systemd notifications reach a real notify socket; outside systemd they do nothing."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from fieldhub.agent.systemd import notify, pet_watchdog, watchdog_interval_s


def test_outside_systemd_nothing_happens(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert notify("READY=1") is False
    assert watchdog_interval_s() is None


async def test_ready_and_watchdog_reach_the_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        server.settimeout(2)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        monkeypatch.setenv("WATCHDOG_USEC", "2000000")
        monkeypatch.delenv("WATCHDOG_PID", raising=False)

        assert notify("READY=1")
        assert server.recv(100) == b"READY=1"
        interval = watchdog_interval_s()
        assert interval == 1.0
        petting = asyncio.create_task(pet_watchdog(0.01))
        try:
            received = [await asyncio.to_thread(server.recv, 100) for _ in range(3)]
        finally:
            petting.cancel()
        assert received == [b"WATCHDOG=1"] * 3
