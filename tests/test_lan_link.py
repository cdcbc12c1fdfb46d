"""A controller and a gateway on loopback: pairing, reports, commands, and what they refuse."""

from __future__ import annotations

import asyncio
import os
import re
import stat
from pathlib import Path

import pytest

from fieldhub.controller.config import ActionConfig
from fieldhub.gateway.lan import LanSettings
from fieldhub.gateway.ports import ControllerInfo
from tests.lan_support import (
    RecordingUplink,
    controller_config,
    paired_controller,
    running_controller,
    running_gateway,
)
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
            for key in (
                tmp_path / "gateway-keys" / "ctrl-1.key",
                tmp_path / "ctrl-1" / "gateway.key",
            ):
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


async def test_hub_approval_and_a_controller_restart_on_another_port(tmp_path: Path) -> None:
    """Approved from the hub; the controller restarts elsewhere: relinked without pairing, its
    address change logged and counted, and a command id it ran is not run again."""
    uplink = RecordingUplink()
    async with running_gateway(tmp_path, uplink) as gateway:
        assert not await gateway.approve_pairing("ctrl-2")  # no one is waiting
        async with paired_controller(tmp_path, uplink, gateway, "ctrl-2"):
            first = await gateway.run_command("ctrl-2", "cmd-1", "relay.set", {"on": False}, 5)
        await eventually(lambda: not uplink.is_online("ctrl-2"), "ctrl-2 offline")
        assert uplink.offline[0][0] == "ctrl-2"

        config = controller_config(tmp_path, "ctrl-2", gateway.announce_port)
        async with running_controller(config):
            await eventually(lambda: uplink.is_online("ctrl-2"), "ctrl-2 online again")
            assert len(uplink.pairing) == 1  # paired once, long ago
            assert gateway.refusals["address_changed"] == 1
            again = await gateway.run_command("ctrl-2", "cmd-1", "relay.set", {"on": False}, 5)
            assert again == first
            assert (tmp_path / "ctrl-2.log").read_text() == "relay false\n"


async def test_a_hanging_action_is_killed_at_its_timeout_and_nothing_else_waits(
    tmp_path: Path,
) -> None:
    pid_file = tmp_path / "ctrl-3.pid"
    uplink = RecordingUplink()
    async with (
        running_gateway(tmp_path, uplink) as gateway,
        paired_controller(tmp_path, uplink, gateway, "ctrl-3"),
    ):
        hanging = asyncio.create_task(gateway.run_command("ctrl-3", "h-1", "hang", {}, 30))
        await eventually(pid_file.exists, "the hanging action to start")
        quick = await gateway.run_command("ctrl-3", "q-1", "relay.set", {"on": True}, 5)
        assert quick.status == "succeeded"
        outcome = await hanging
        assert (outcome.status, outcome.error) == ("timed_out", "timed out after 1 s; killed")
        with pytest.raises(ProcessLookupError):
            os.kill(int(pid_file.read_text()), 0)
        assert gateway.link_states() == {"ctrl-3": "linked"}


async def test_reports_wait_for_the_uplink_and_none_is_lost_or_repeated(tmp_path: Path) -> None:
    uplink = RecordingUplink(hold=asyncio.Event())
    async with running_gateway(tmp_path, uplink) as gateway:
        config = controller_config(tmp_path, "ctrl-4", gateway.announce_port, report_every_s=0.2)
        async with running_controller(config) as controller:
            await eventually(lambda: "ctrl-4" in uplink.codes, "the pairing code")
            await gateway.approve_pairing("ctrl-4")
            await eventually(lambda: controller.queued_reports >= 5, "reports queueing up")
            assert not uplink.reports
            assert uplink.hold is not None
            uplink.hold.set()
            await eventually(lambda: len(uplink.reports) >= 6, "the queued reports")
            await eventually(lambda: controller.queued_reports <= 1, "the queue drained")
        stamps = [body["ts"] for _, channel, body in uplink.reports if channel == "telemetry"]
        assert stamps == sorted(set(stamps))  # in order, each once
        assert controller.dropped_reports == 0


async def test_a_report_the_uplink_could_not_keep_is_sent_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    uplink = RecordingUplink(failures=1)
    async with (
        running_gateway(tmp_path, uplink) as gateway,
        paired_controller(tmp_path, uplink, gateway, "ctrl-7"),
    ):
        await eventually(lambda: uplink.values_of("ctrl-7"), "reports after the failure", 30)
        started = [b for _, ch, b in uplink.reports if ch == "event"]
        assert [event["type"] for event in started] == ["controller.started"]  # once, not lost
        assert "the uplink did not take a report of ctrl-7" in caplog.text
        assert gateway.link_states() == {"ctrl-7": "linked"}


def test_a_static_address_must_be_host_and_port(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"static controller '10\.0\.0\.5': expected host:port"):
        LanSettings("gw", tmp_path, static=("10.0.0.5",))


class FaultyUplink(RecordingUplink):
    """An uplink with a bug in its online notice."""

    async def controller_online(self, info: ControllerInfo) -> None:
        await super().controller_online(info)
        raise RuntimeError("bug in the uplink")


async def test_an_uplink_failing_a_notice_does_not_stop_the_link(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    uplink = FaultyUplink()
    async with (
        running_gateway(tmp_path, uplink) as gateway,
        paired_controller(tmp_path, uplink, gateway, "ctrl-9"),
    ):
        await eventually(lambda: uplink.values_of("ctrl-9"), "reports all the same")
        assert "the uplink failed on a notice about a controller" in caplog.text
        assert gateway.link_states() == {"ctrl-9": "linked"}


async def test_a_command_or_an_outcome_too_large_for_a_frame_fails_cleanly(tmp_path: Path) -> None:
    noisy = ActionConfig(  # 16 KiB of control characters: each \\u0001 six bytes in JSON
        "noisy", ("/bin/sh", "-c", "head -c 20000 /dev/zero | tr '\\0' '\\1'"), {}, 5.0
    )
    uplink = RecordingUplink()
    async with running_gateway(tmp_path, uplink) as gateway:
        config = controller_config(tmp_path, "ctrl-10", gateway.announce_port)
        config.actions["noisy"] = noisy
        async with running_controller(config):
            await eventually(lambda: "ctrl-10" in uplink.codes, "the pairing code")
            await gateway.approve_pairing("ctrl-10")
            await eventually(lambda: uplink.is_online("ctrl-10"), "ctrl-10 online")
            huge = await gateway.run_command("ctrl-10", "c-1", "relay.set", {"on": "x" * 70_000}, 5)
            assert huge.status == "failed"
            assert re.fullmatch(r"frame of \d+ bytes exceeds 65536", huge.error)
            too_much = await gateway.run_command("ctrl-10", "c-2", "noisy", {}, 5)
            assert too_much.status == "failed"
            assert "exceeds 65536" in too_much.error
            assert gateway.link_states() == {"ctrl-10": "linked"}
