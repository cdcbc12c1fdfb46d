"""Bundles end to end: a real hub, real agent processes (``fieldhub agent -c ...``), a real
HTTP server for downloads. A bundle installed by a hub command adds an action the hub can
run; a version that cannot start rolls back by itself; and an agent killed (SIGKILL, like a
power cut) at every step of an install comes back running the old version or the new one,
never neither, and says which."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from fieldhub.agent.bundles.journal import CRASH_ENV, CRASH_POINTS
from fieldhub.bundles import make_bundle
from fieldhub.hub.app import Hub
from tests.conftest import HubFactory
from tests.support.bundle_mutations import ACTIONS, PAYLOAD, Keys, good_bundle
from tests.support.bundle_server import BundleServer, bundle_server
from tests.waiting import eventually

KEYS = Keys()
OLD, NEW = "1.0.5", "1.1.0"
NEW_ACTION = {"name": "hello.new", "program": "actions/hello.py", "args": {"who": "str"}}


def new_bundle(version: str = NEW, **fields: Any) -> bytes:
    """The good bundle with one more action, so the catalog shows which version runs."""
    return good_bundle(KEYS.trusted, version, actions=[*ACTIONS, NEW_ACTION], **fields)


def failing_bundle(version: str) -> bytes:
    """A bundle whose health check fails: it is rolled back after its trial start."""
    payload = {**PAYLOAD, "actions/check.py": b"raise SystemExit('no')\n"}
    return make_bundle(
        payload,
        KEYS.trusted,
        name="hello",
        version=version,
        actions=ACTIONS,
        health={"action": "hello.check", "timeout_s": 30},
    )


class Device:
    """A device registered on the hub, run as a real agent process on demand."""

    def __init__(self, hub: Hub, tmp_path: Path, device_id: str, secret: str, user: str) -> None:
        self.hub, self.id = hub, device_id
        self.config = tmp_path / "agent.yaml"
        self.data = tmp_path / "data"
        self.log = tmp_path / "agent.log"
        document = {
            "device": {"id": device_id, "type": "pi"},
            "hub": {"broker": hub.broker_url, "username": user, "secret": secret},
            "data_dir": str(self.data),
            "web": {"enabled": False},
            "bundles": {"trusted_keys": [KEYS.trusted.public.to_text()], "trial_timeout_s": 30},
        }
        self.config.write_text(yaml.safe_dump(document))

    @asynccontextmanager
    async def running(
        self, crash_at: str | None = None
    ) -> AsyncIterator[asyncio.subprocess.Process]:
        """The agent process for the block (its log appended to ``agent.log``)."""
        env = {k: v for k, v in os.environ.items() if k != CRASH_ENV}
        if crash_at is not None:
            env[CRASH_ENV] = crash_at
        with self.log.open("ab") as log:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "fieldhub", "agent", "--simulate", "-c", str(self.config),
                env=env, stdout=log, stderr=log,
            )  # fmt: skip
            try:
                yield process
            except BaseException:
                print(self.log.read_text(errors="replace")[-4000:])
                raise
            finally:
                if process.returncode is None:
                    process.terminate()
                    await asyncio.wait_for(process.wait(), 30)

    async def reported(self) -> dict[str, Any]:
        return (await self.hub.registry.get(self.id)).reported

    async def events(self) -> list[tuple[str, dict[str, Any]]]:
        page = await self.hub.queries.events(device_ids=[self.id], types=["bundle.*"])
        return [(event.type, event.data) for event in reversed(page.events)]

    async def outcome(self, version: str, within_s: float = 45) -> tuple[str, dict[str, Any]]:
        """The last of confirmed / rolled back / refused the device reported for ``version``."""
        final = ("bundle.confirmed", "bundle.rolled_back", "bundle.refused")

        async def reported() -> tuple[str, dict[str, Any]] | None:
            found = [e for e in await self.events() if e[0] in final and e[1]["version"] == version]
            return found[-1] if found else None

        return await eventually(reported, f"the outcome of {version}", within_s)

    async def command(self, action: str, **args: Any) -> Any:
        _batch, [command] = await self.hub.commands.submit(
            [self.id], action, args, timeout_s=20, ttl_s=120, actor="test"
        )

        async def finished() -> Any:
            record = self.hub.commands.current(command.id)
            if record is None:
                record = await self.hub.commands.store.get(command.id)
            return record if record.finished else None

        return await eventually(finished, f"{action} to finish", 45)

    async def install(self, server: BundleServer, data: bytes, version: str) -> Any:
        return await self.command(
            "bundle.install",
            url=server.offer(data),
            sha256=hashlib.sha256(data).hexdigest(),
            size=len(data),
            name="hello",
            version=version,
        )

    async def catalog(self) -> set[str]:
        return set((await self.reported()).get("actions", {}))


@pytest.fixture
async def device(make_hub: HubFactory, tmp_path: Path, uid: str) -> AsyncIterator[Device]:
    async with make_hub() as hub:
        device_id = f"pi-{uid}"
        new = await hub.devices.create(device_id)
        yield Device(hub, tmp_path, device_id, new.credentials.secret, new.credentials.username)


@pytest.fixture(scope="module")
def server() -> Any:
    with bundle_server() as running:
        yield running


async def _online(device: Device, version: str | None) -> None:
    async def ready() -> bool:
        software = (await device.reported()).get("software", {})
        return (
            device.hub.presence.get(device.id).presence == "online"
            and software.get("bundles", {}).get("hello") == version
        )

    await eventually(ready, f"{device.id} online running hello {version}", 45)


@pytest.mark.slow
async def test_a_bundle_adds_an_action_and_a_broken_one_rolls_back(
    device: Device, server: BundleServer
) -> None:
    async with device.running():
        await _online(device, None)
        accepted = await device.install(server, new_bundle(), NEW)
        assert accepted.status == "succeeded", accepted.error
        assert accepted.result == {"accepted": True, "name": "hello", "version": NEW}
        kind, _data = await device.outcome(NEW)
        assert kind == "bundle.confirmed"
        await _online(device, NEW)
        await eventually(lambda: _has(device, "hello.new"), "hello.new in the catalog", 30)
        said = await device.command("hello.new", who="operator")
        assert said.status == "succeeded", said.error
        assert '"hello": "operator"' in said.result["stdout"]
        # A version that cannot start (its action clashes with a built-in): back to NEW.
        clash = make_bundle(
            PAYLOAD,
            KEYS.trusted,
            name="hello",
            version="1.2.0",
            actions=[{"name": "bundle.install", "program": "actions/hello.py"}],
        )
        assert (await device.install(server, clash, "1.2.0")).status == "succeeded"
        kind, data = await device.outcome("1.2.0")
        assert (kind, data["reason"], data["previous"]) == ("bundle.rolled_back", "crashed", NEW)
        assert "defined twice" in data["detail"]
        await _online(device, NEW)
        assert (await device.command("hello.new", who="again")).status == "succeeded"


async def _has(device: Device, action: str) -> bool:
    return action in await device.catalog()


# Where the agent is killed → what it reports after restarting, and which version it runs.
EXPECTED: dict[str, tuple[str | None, str]] = {
    "verified": (None, OLD),  # nothing was written: nothing to report
    "writing": ("bundle.refused", OLD),
    "written": ("bundle.refused", OLD),
    "switching": ("bundle.refused", OLD),
    "switched": ("bundle.rolled_back", OLD),
    "trial": ("bundle.rolled_back", OLD),
    "confirmed": ("bundle.confirmed", NEW),
    "rolling_back": ("bundle.rolled_back", OLD),  # a bundle whose health check fails
}


@pytest.mark.slow
async def test_killed_at_every_install_step_it_runs_old_or_new(
    device: Device, server: BundleServer
) -> None:
    assert set(EXPECTED) == set(CRASH_POINTS)
    async with device.running():
        await _online(device, None)
        await device.install(server, good_bundle(KEYS.trusted, OLD), OLD)
        assert (await device.outcome(OLD))[0] == "bundle.confirmed"
    seen: dict[str, str] = {}
    for number, point in enumerate(CRASH_POINTS):
        # Each step gets versions of its own, so every outcome is told apart.
        old, new = device_versions(number)
        async with device.running():
            await _online(device, seen.get("last", OLD))
            await device.install(server, good_bundle(KEYS.trusted, old), old)
            assert (await device.outcome(old))[0] == "bundle.confirmed"
            await _online(device, old)
        offered = failing_bundle(new) if point == "rolling_back" else new_bundle(new)
        async with device.running(crash_at=point) as agent:
            await _online(device, old)
            await device.install(server, offered, new)
            code = await asyncio.wait_for(agent.wait(), 60)
            assert code == -9, f"{point}: the agent did not stop there (exit {code})"
        async with device.running():
            event, version = EXPECTED[point]
            if event is not None:  # reported after the restart, after the new software state
                assert (await device.outcome(new))[0] == event, point
            running = await eventually(
                _settled(device, old, new), f"{point}: settled on old or new", 45
            )
            assert running == (new if version == NEW else old), point
            catalog = await device.catalog()
            assert ("hello.new" in catalog) == (running == new), point
            assert (await device.command("hello.say", who=point)).status == "succeeded"
            seen["last"] = running
    versions_dirs = list((device.data / "bundles" / "installed" / "hello" / "versions").iterdir())
    assert len(versions_dirs) <= 2  # current and previous: the rest was pruned
    assert not (device.data / "bundles" / "journal.json").exists()


def device_versions(number: int) -> tuple[str, str]:
    return f"2.{number}.0", f"2.{number}.1"


def _settled(device: Device, old: str, new: str) -> Callable[[], Any]:
    """A check: the version the online agent runs, once it is ``old`` or ``new``."""

    async def check() -> str | None:
        software = (await device.reported()).get("software", {}).get("bundles", {})
        running = software.get("hello")
        online = device.hub.presence.get(device.id).presence == "online"
        return running if online and running in (old, new) else None

    return check
