"""A controller and a gateway on loopback: pairing, reports, commands, and what they refuse."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest

from tests.lan_support import RecordingUplink, controller_config, running_controller, running_gateway
from tests.waiting import eventually


async def test_a_new_controller_pairs_once_its_code_is_approved_then_reports_and_runs_commands(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uplink = RecordingUplink()
    async with running_gateway(tmp_path, uplink) as gateway:
        config = controller_config(tmp_path, "ctrl-1", gateway.announce_port)
        async with running_controller(config) as controller:
            await eventually(lambda: uplink.pairing, "the pairing request")
            assert uplink.pairing == [("ctrl-1", "127.0.0.1")]
            assert gateway.link_states() == {"ctrl-1": "pairing"}
            code = uplink.codes["ctrl-1"]
            assert f"pairing code for gateway gw-test: {code}" in capsys.readouterr().out
            assert not uplink.reports  # nothing flows before a person approves

            wrong = "000000" if code != "000000" else "111111"
            assert not await gateway.approve_pairing_code("ctrl-1", wrong)
            assert gateway.refusals["wrong_code"] == 1
            assert await gateway.approve_pairing_code("ctrl-1", code)

            await eventually(lambda: uplink.online, "the controller online")
            info = uplink.online[0]
            assert info.controller_id == "ctrl-1"
            assert info.actions == {"relay.set": {"on": "bool"}, "hang": {}}
            assert info.firmware == "test 1"
            assert gateway.link_states() == {"ctrl-1": "linked"}
            assert controller.paired_with == "gw-test"
            for key in (tmp_path / "gateway-keys" / "ctrl-1.key", tmp_path / "ctrl-1" / "gateway.key"):
                assert stat.S_IMODE(os.stat(key).st_mode) == 0o600

            await eventually(lambda: uplink.values_of("ctrl-1"), "a telemetry report")
            assert 20 <= uplink.values_of("ctrl-1")[0]["temp"] <= 21
            events = [b for c, ch, b in uplink.reports if ch == "event"]
            assert events[0]["type"] == "controller.started"

            outcome = await gateway.run_command("ctrl-1", "cmd-1", "relay.set", {"on": True}, 5)
            assert outcome.status == "succeeded", outcome
            assert outcome.result["exit_code"] == 0
            again = await gateway.run_command("ctrl-1", "cmd-1", "relay.set", {"on": True}, 5)
            assert again == outcome  # answered from memory
            assert (tmp_path / "ctrl-1.log").read_text() == "relay true\n"  # ran once

            refused = await gateway.run_command("ctrl-1", "cmd-2", "relay.set", {"on": "yes"}, 5)
            assert (refused.status, refused.error) == ("failed", "`on` must be bool")
            unknown = await gateway.run_command("ctrl-1", "cmd-3", "reboot", {}, 5)
            assert unknown.error == "unknown action 'reboot'"
        await eventually(lambda: uplink.offline, "the controller offline")
        assert uplink.offline[0][0] == "ctrl-1"
        assert gateway.link_states()["ctrl-1"].startswith("lost: ")
        missing = await gateway.run_command("ctrl-1", "cmd-4", "relay.set", {"on": False}, 5)
        assert missing.status == "unreachable"
