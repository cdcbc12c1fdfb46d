"""Fifty controllers behind one gateway, on loopback: all paired, linked, reporting, commanded."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from tests.lan_support import (
    RecordingUplink,
    controller_config,
    running_controller,
    running_gateway,
)
from tests.waiting import eventually

FLEET = 50


@pytest.mark.slow
async def test_fifty_controllers_behind_one_gateway(tmp_path: Path) -> None:
    uplink = RecordingUplink()
    ids = [f"ctrl-{n:02d}" for n in range(FLEET)]
    async with running_gateway(tmp_path, uplink) as gateway, AsyncExitStack() as stack:
        for cid in ids:
            config = controller_config(tmp_path, cid, gateway.announce_port)
            await stack.enter_async_context(running_controller(config))
        await eventually(lambda: len(uplink.codes) == FLEET, "every pairing code", within_s=30)
        assert all([await gateway.approve_pairing(cid) for cid in ids])
        await eventually(lambda: len(uplink.online) == FLEET, "every controller online", 30)
        assert set(gateway.link_states().values()) == {"linked"}
        await eventually(
            lambda: all(uplink.values_of(cid) for cid in ids), "a report of each", within_s=30
        )

        outcomes = await asyncio.gather(
            *(gateway.run_command(cid, f"{cid}-c1", "relay.set", {"on": True}, 10) for cid in ids)
        )
        assert [o.status for o in outcomes] == ["succeeded"] * FLEET
        for cid in ids:
            assert (tmp_path / f"{cid}.log").read_text() == "relay true\n"

        await stack.aclose()  # all controllers stop
        await eventually(lambda: len(uplink.offline) == FLEET, "every controller offline", 30)
        assert all(state.startswith("lost: ") for state in gateway.link_states().values())
        assert sum(gateway.refusals.values()) == 0
