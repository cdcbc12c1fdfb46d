"""The agent's optional parts run only when configured, and a plain agent still says what it runs.

A plain agent (no camera, no trusted bundle key) imports neither the media spool and uploader
nor the bundle host (its memory budget, docs/agent.md "Memory"; the imports themselves are
checked in tests/test_cli.py). What a user sees of that, against a real hub: the plain agent
reports its software like any other, offers no ``bundle.*`` actions (so the hub refuses a
rollout to it before sending anything), and one that trusts a key offers them. Pictures a
camera left in the spool still go to the hub after the camera is taken out of agent.yaml.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import fieldhub
from fieldhub.agent import media
from fieldhub.agent.config import (
    AgentConfig,
    BundlesSection,
    DeviceSection,
    HubSection,
    WebSection,
)
from fieldhub.agent.service import run_with_bundles
from fieldhub.agent.units import Drivers, SocketConfig, mock_pin_factory
from fieldhub.agent.units.simulate import SwitchPin
from fieldhub.bundles import SigningKey
from fieldhub.hub.app import Hub
from fieldhub.protocol.actions import ACTION_CATALOG_KEY
from tests.conftest import HubFactory
from tests.waiting import eventually

TRUSTED = SigningKey.generate().public.to_text()


def _config(hub: Hub, device_id: str, username: str, data: Path, keys: list[str]) -> AgentConfig:
    return AgentConfig(
        device=DeviceSection(id=device_id),
        hub=HubSection(broker=hub.broker_url, username=username),
        data_folder=str(data),
        units=[SocketConfig(name="socket", pin=22, initial="on", min_off_s=0)],
        web=WebSection(enabled=False),
        bundles=BundlesSection(trusted_keys=keys),
    )


async def _catalog(hub: Hub, device_id: str) -> dict[str, Any] | None:
    reported = (await hub.registry.get(device_id)).reported
    catalog = reported.get(ACTION_CATALOG_KEY)
    return reported if isinstance(catalog, dict) and "software" in reported else None


@pytest.mark.parametrize("trusts_a_key", [False, True], ids=["plain", "trusts-a-key"])
async def test_only_an_agent_that_trusts_a_key_offers_bundle_actions(
    trusts_a_key: bool, make_hub: HubFactory, tmp_path: Path, uid: str
) -> None:
    async with make_hub() as hub:
        device_id = f"opt-{uid}"
        issued = (await hub.devices.create(device_id)).credentials
        keys = [TRUSTED] if trusts_a_key else []
        config = _config(hub, device_id, issued.username, tmp_path / "agent", keys)
        drivers = Drivers(pin_factory=mock_pin_factory(SwitchPin))
        running = asyncio.create_task(
            run_with_bundles(config, lambda _config: issued.secret, drivers=drivers)
        )
        try:
            reported = await eventually(lambda: _catalog(hub, device_id), "the catalog")
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
        assert reported["software"] == {"agent_version": fieldhub.__version__, "bundles": {}}
        offered = {a for a in reported[ACTION_CATALOG_KEY] if a.startswith("bundle.")}
        assert offered == ({"bundle.install", "bundle.rollback"} if trusts_a_key else set())
        assert "socket.set" in reported[ACTION_CATALOG_KEY]
        assert (tmp_path / "agent" / "media").exists() is False  # no spool made for nothing


def test_the_spool_runs_while_pictures_wait_in_it_even_without_a_camera(tmp_path: Path) -> None:
    folder = tmp_path / "media"
    assert not media.in_use(folder, camera=False)  # a plain agent's
    assert media.in_use(folder, camera=True)
    (folder / "incoming").mkdir(parents=True)
    assert not media.in_use(folder, camera=False)  # an empty spool an older agent made
    (folder / f"{'ab' * 32}.json").write_text("{}")  # a picture announced, not delivered
    assert media.in_use(folder, camera=False)
