"""The README's bundle walk-through, as a new user runs it (issue 16, "done when").

The commands of README's "A bundle to the demo fleet" are read from the README and run as
they stand, each a ``fieldhub`` process, against a hub serving HTTP and the demo's own fleet
(real agents on simulated hardware, trusting the demo's signing key): ``hello`` 1.0.0 goes to
the fleet in two waves and its new action runs; the broken 2.0.0's canary rolls itself back
and the rollout aborts, the other devices untouched.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import shutil
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

from fieldhub.cli.demo_bundles import DEMO_KEY_NAME, demo_signing_key
from tests.conftest import HubClient, HubFactory, api_client
from tests.hub_client import add_user, user_token
from tests.support.example_bundles import example_bundle
from tests.support.servers import free_port
from tests.test_demo_commands import demo_fleet
from tests.test_rollout_agents import serving
from tests.test_rollouts import settled
from tests.waiting import eventually

ROOT = Path(__file__).resolve().parent.parent
SECTION = "### A bundle to the demo fleet"
FLEET = 3


def readme_commands() -> list[list[list[str]]]:
    """The section's ``sh`` blocks, each a list of commands (continuations joined, comments
    dropped): the words a user types."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split(SECTION, 1)[1].split("\n### ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    return [
        [shlex.split(line, comments=True) for line in block.replace("\\\n", " ").splitlines()]
        for block in blocks
    ]


async def fieldhub(words: list[str], cwd: Path, url: str, token: str) -> str:
    """Run one README command (``.venv/bin/fieldhub …``) in ``cwd``; its standard output."""
    assert words[0] == ".venv/bin/fieldhub", words
    env = {**os.environ, "FIELDHUB_URL": url, "FIELDHUB_TOKEN": token, "COLUMNS": "200"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fieldhub", *words[1:], cwd=cwd, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, f"{shlex.join(words)}: {err.decode()}"
    return out.decode()


class Walkthrough:
    """Runs a block's commands in order, filling in ``BUNDLE_ID`` and ``ROLLOUT_ID`` from
    what the commands before printed, as the user copies them."""

    def __init__(self, cwd: Path, url: str, token: str) -> None:
        self.cwd, self.url, self.token = cwd, url, token
        self.ids: dict[str, str] = {}

    async def run(self, words: list[str]) -> str:
        words = [self.ids.get(word, word) for word in words]
        out = await fieldhub(words, self.cwd, self.url, self.token)
        if words[1:3] == ["bundle", "upload"]:
            self.ids["BUNDLE_ID"] = out.split(": ", 1)[1].split()[0]
        if words[1:3] == ["rollout", "start"]:
            self.ids["ROLLOUT_ID"] = out.split()[1].rstrip(":")
        return out


# A demo fleet of three and ten `fieldhub` processes: 6-10 s here, but it went over the
# suite's default 120 s in one CI run; its own waits (180 s per rollout) are the bound that
# says what went wrong (`settled` prints the rollout), so the test's timeout lies above them.
@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_the_readme_rolls_hello_out_in_two_waves_and_the_broken_release_aborts(
    make_hub: HubFactory, tmp_path: Path
) -> None:
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    healthy, broken = readme_commands()
    port = free_port()
    async with (
        make_hub(http=f"127.0.0.1:{port}") as hub,
        serving(hub, port),
        api_client(hub) as api,
        demo_fleet(hub, FLEET, tmp_path / "data") as device_ids,
    ):
        key_file = tmp_path / "data" / f"{DEMO_KEY_NAME}.key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        keys = (await api.get("/api/bundle-keys")).json()
        assert [k["name"] for k in keys] == [DEMO_KEY_NAME]
        _id, token = await user_token(hub, await add_user(hub, "admin", []))
        user = Walkthrough(tmp_path, f"http://127.0.0.1:{port}", token)

        for words in healthy[:4]:  # build, sign, upload, start
            await user.run(words)
        assert (tmp_path / "hello-1.0.0.fhb").exists()
        done = await settled(api, user.ids["ROLLOUT_ID"], "completed", within_s=180)
        assert done["waves"] == 2
        assert done["counts"] == {"confirmed": FLEET}
        assert {d["wave"] for d in done["devices"] if d["device_id"] == device_ids[0]} == {0}
        shown = await user.run(healthy[4])  # rollout show
        assert "completed" in shown
        assert f"{FLEET} confirmed" in shown
        said = await user.run(healthy[5])  # send demo-001 hello.say
        assert "hello from" in said
        assert "(hello 1.0.0)" in said
        device = (await api.get(f"/api/devices/{device_ids[1]}")).json()
        assert device["software"]["bundles"] == {"hello": "1.0.0"}

        for words in broken[:4]:
            await user.run(words)
        aborted = await settled(api, user.ids["ROLLOUT_ID"], "aborted", within_s=180)
        states = {d["device_id"]: (d["state"], d["reason"]) for d in aborted["devices"]}
        canary_state, canary_reason = states.pop(device_ids[0])
        assert canary_state == "failed", aborted
        assert "health_failed" in canary_reason
        assert {state for state, _reason in states.values()} == {"skipped"}
        shown = await user.run(broken[4])
        assert "aborted" in shown
        assert "health_failed" in shown
        await _wait_software(api, device_ids[0], "1.0.0")
        said = await fieldhub(healthy[5], tmp_path, user.url, token)
        assert "(hello 1.0.0)" in said  # the canary runs the version it had


async def _wait_software(api: HubClient, device_id: str, version: str) -> None:
    """Until the device reports ``hello`` at ``version`` (after its rollback)."""

    async def reports() -> bool:
        device = (await api.get(f"/api/devices/{device_id}")).json()
        software = device.get("software") or {}
        return bool(software.get("bundles", {}).get("hello") == version)

    await eventually(reports, f"{device_id} back on hello {version}", 60)


def test_the_demo_key_is_made_once_and_kept_private(tmp_path: Path) -> None:
    first = demo_signing_key(tmp_path)
    again = demo_signing_key(tmp_path)
    assert again.public.key_id == first.public.key_id
    private = tmp_path / f"{DEMO_KEY_NAME}.key"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    public = (tmp_path / f"{DEMO_KEY_NAME}.pub").read_text(encoding="utf-8").strip()
    assert public == first.public.to_text()
    assert "PRIVATE KEY" in private.read_text(encoding="ascii")


# 100 real agents in one process: ~30 s to start, ~20 s of rollouts, ~60 s in all on a quiet
# machine; beside the other worker it took over the suite's default 120 s once. Its own waits
# (180 s for the fleet, 240 s per rollout) are the bound that says what went wrong.
@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_a_rollout_to_100_demo_agents_completes_and_a_failing_canary_aborts_it(
    make_hub: HubFactory, tmp_path: Path
) -> None:
    """The issue's proof with the demo's own agents: hello 1.0.0 to 100 of them in waves (a
    canary of 10, then 50 %, then the rest), every one confirmed; then the broken 2.0.0,
    whose health check fails on each of the canary's 10: they roll back to 1.0.0 by
    themselves, the rollout aborts, and the other 90 are never sent it."""
    data = tmp_path / "data"
    port = free_port()
    async with (
        make_hub(http=f"127.0.0.1:{port}") as hub,
        serving(hub, port),
        api_client(hub) as api,
        demo_fleet(hub, 100, data, within_s=180) as device_ids,
    ):

        async def roll_out(bundle_file: bytes, status: str) -> dict[str, Any]:
            upload = await api.post("/api/bundles", content=bundle_file)
            assert upload.status_code == 201, upload.text
            body = {
                "bundle": upload.json()["id"],
                "target": {"all": True},
                "canary": 10,
                "waves": [50, 100],
                "promote_at": 0.9,
                "retries": 0,
            }
            started = await api.post("/api/rollouts", json=body)
            assert started.status_code == 201, started.text
            return await settled(api, started.json()["id"], status, within_s=240)

        done = await roll_out(example_bundle(data, "hello", "1.0.0", "hello.say"), "completed")
        assert done["counts"] == {"confirmed": 100}
        assert sorted({d["wave"] for d in done["devices"]}) == [0, 1, 2]
        broken = example_bundle(data, "hello-broken", "2.0.0", "hello.check")
        aborted = await roll_out(broken, "aborted")
        assert aborted["counts"] == {"failed": 10, "skipped": 90}
        assert "below abort_below" in aborted["reason"]
        canary = [d for d in aborted["devices"] if d["state"] == "failed"]
        assert {d["device_id"] for d in canary} == set(device_ids[:10])
        assert all("health_failed" in d["reason"] for d in canary)
        for device_id in device_ids[:10]:
            await _wait_software(api, device_id, "1.0.0")
        listed = await api.get("/api/devices", params={"bundle": "hello", "below": "1.0.0"})
        assert listed.json() == []  # every device runs 1.0.0, the canary again
