"""The LAN side after a gateway restart, against an uplink that raises, and with desired state:
a paired controller that never links again is reported offline at the deadline, with the
reason; the uplink's exceptions (a bug, not only a full disk) stop neither a link nor its
supervision; ``state.set`` runs the actions that apply its keys, once per version."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from fieldhub.gateway.lan import LanSettings
from fieldhub.gateway.ports import ReportChannel
from tests.lan_support import (
    RecordingUplink,
    controller_config,
    paired_controller,
    running_controller,
    running_gateway,
)
from tests.waiting import eventually


async def test_a_paired_controller_that_never_links_after_a_restart_goes_offline(
    tmp_path: Path,
) -> None:
    uplink = RecordingUplink()
    async with running_gateway(tmp_path, uplink) as gateway:
        async with paired_controller(tmp_path, uplink, gateway, "ctrl-gone"):
            pass
        async with paired_controller(tmp_path, uplink, gateway, "ctrl-back"):
            pass

    restarted = RecordingUplink()
    async with running_gateway(tmp_path, restarted, link_deadline_s=2.0) as gateway:
        config = controller_config(tmp_path, "ctrl-back", gateway.announce_port)
        async with running_controller(config):
            await eventually(lambda: restarted.offline, "the deadline's offline notice")
            assert restarted.offline == [
                ("ctrl-gone", "not linked within 2 s of the gateway's start")
            ]
            assert restarted.is_online("ctrl-back")  # linked in time: not reported


def test_a_deadline_that_is_not_positive_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="link_deadline_s must be positive, not 0"):
        LanSettings(gateway_id="gw", key_dir=tmp_path, link_deadline_s=0)


class BuggyUplink(RecordingUplink):
    """An uplink with bugs: its first report and every offline notice raise."""

    raised = 0

    async def controller_offline(self, controller_id: str, reason: str) -> None:
        await super().controller_offline(controller_id, reason)
        self.raised += 1
        raise KeyError(controller_id)

    async def report(
        self, controller_id: str, channel: ReportChannel, body: dict[str, Any]
    ) -> None:
        if not self.raised:
            self.raised += 1
            raise RuntimeError("bug in the uplink")
        await super().report(controller_id, channel, body)


async def test_exceptions_of_the_uplink_stop_neither_reports_nor_relinking(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    uplink = BuggyUplink()
    async with running_gateway(tmp_path, uplink) as gateway:
        async with paired_controller(tmp_path, uplink, gateway, "ctrl-1"):
            await eventually(lambda: uplink.values_of("ctrl-1"), "reports after the bug")
            assert "the uplink did not take a report of ctrl-1" in caplog.text
        await eventually(lambda: uplink.offline, "the offline notice (which raises)")
        async with running_controller(controller_config(tmp_path, "ctrl-1", gateway.announce_port)):
            await eventually(lambda: uplink.is_online("ctrl-1"), "ctrl-1 linked again")
            assert gateway.link_states() == {"ctrl-1": "linked"}  # supervised all along
        assert "the uplink failed on a notice about a controller" in caplog.text


async def test_desired_state_runs_the_actions_that_apply_its_keys_once_per_version(
    tmp_path: Path,
) -> None:
    uplink = RecordingUplink()
    async with running_gateway(tmp_path, uplink) as gateway:
        config = controller_config(tmp_path, "ctrl-s", gateway.announce_port)
        relay = replace(config.actions["relay.set"], state="relay")
        changes = {"actions": {**config.actions, "relay.set": relay}}
        async with paired_controller(tmp_path, uplink, gateway, "ctrl-s", **changes):
            desired = {"relay": True, "led": "blink"}
            outcome = await gateway.run_command("ctrl-s", "desired-1", "state.set", desired, 5)
            assert outcome.status == "succeeded"
            assert outcome.result == {"errors": {"led": "no action of this controller applies it"}}
            assert (tmp_path / "ctrl-s.log").read_text() == "relay true\n"

            def reported() -> bool:
                return any(
                    b["state"] == {"relay": True} for _, ch, b in uplink.reports if ch == "state"
                )

            await eventually(reported, "the applied key reported as state")

            again = await gateway.run_command("ctrl-s", "desired-1", "state.set", desired, 5)
            assert again == outcome
            assert (tmp_path / "ctrl-s.log").read_text() == "relay true\n"  # not run again

            wrong = await gateway.run_command("ctrl-s", "desired-2", "state.set", {"relay": 1}, 5)
            assert wrong.result == {"errors": {"relay": "`on` must be bool"}}
