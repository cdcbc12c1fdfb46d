"""``fieldhub agent`` stopped as systemd and ``docker stop`` stop it (SIGTERM), or with Ctrl-C:
a clean stop either way. The agent says goodbye (its retained offline status), keeps in its
outbox only what the hub has not acknowledged, and exits with status 0."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import sys
from contextlib import closing
from pathlib import Path

import pytest

from fieldhub.hub.app import Hub
from tests.waiting import eventually


def _unacknowledged(outbox: Path) -> list[int]:
    """The seqs the stopped agent still holds for the hub (its outbox file, read directly)."""
    with closing(sqlite3.connect(outbox)) as db:
        rows = db.execute("SELECT DISTINCT seq FROM outbox WHERE seq IS NOT NULL").fetchall()
    return sorted(seq for (seq,) in rows)


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
async def test_a_stopped_agent_says_goodbye_keeps_the_unacknowledged_and_exits_0(
    hub: Hub, tmp_path: Path, uid: str, stop: signal.Signals
):
    device_id = f"atm-{uid}"
    issued = (await hub.devices.create(device_id)).credentials
    config = tmp_path / "agent.yaml"
    data = tmp_path / "agent"
    config.write_text(
        f"device: {{id: {device_id}}}\n"
        f"hub:\n  broker: '{hub.broker_url}'\n"
        f"  username: '{issued.username}'\n  secret: '{issued.secret}'\n"
        f"data_dir: '{data}'\n"
        "units:\n"
        "  - type: temperature\n    name: cabinet\n    sample_s: 0.05\n    report_s: 0.05\n"
        "    sensors: {air: {id: '28.000000000001'}}\n"
        "web: {enabled: false}\n"
    )
    config.chmod(0o600)  # it holds the secret: the agent refuses a readable one
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "fieldhub", "agent", "--config", str(config), "--simulate"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    try:
        # The agent reports several times a second: stop it while it does.
        await eventually(
            lambda: (hub.ingest.acked_seq(device_id) or 0) >= 20, "20 reports acknowledged", 30
        )
        process.send_signal(stop)
        said = (await asyncio.wait_for(process.stdout.read(), 30)).decode()
        assert await process.wait() == 0, said
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert "Traceback" not in said
    assert "stopped" in said
    # Its goodbye reached the hub: offline because it stopped, not because it vanished.
    await eventually(lambda: hub.presence.get(device_id).presence == "offline", "offline")
    assert hub.presence.get(device_id).reason == "agent stopped"
    # What the hub acknowledged left the outbox, but for the last ack, which may cross the
    # stop on the wire (resent at the next start, the hub knows it); the rest waits there.
    acked = hub.ingest.acked_seq(device_id) or 0
    held = _unacknowledged(data / "outbox.db")
    assert all(seq >= acked for seq in held), (acked, held)
