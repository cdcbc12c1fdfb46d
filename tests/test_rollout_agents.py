"""A rollout over real agent processes (``fieldhub agent``, feat/bundles' installer): the hub
sends ``bundle.install`` with its own download address, each agent downloads over real HTTP
with its token, verifies, installs, confirms; the new action then runs. The issue's "done
when", on two devices."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
import uvicorn

from fieldhub.hub.api import create_app
from fieldhub.hub.app import Hub
from tests.conftest import HubFactory, api_client
from tests.support.servers import free_port
from tests.test_agent_bundle_e2e import KEYS, NEW, Device, _has, _online, new_bundle
from tests.test_rollouts import settled
from tests.waiting import eventually


@asynccontextmanager
async def serving(hub: Hub, port: int) -> AsyncIterator[None]:
    """The hub's API over HTTP on ``port``: the address its download links name."""
    server = uvicorn.Server(
        uvicorn.Config(create_app(hub), host="127.0.0.1", port=port, log_level="warning")
    )
    task = asyncio.create_task(server.serve())
    await eventually(lambda: server.started or task.done(), "the hub's HTTP server")
    try:
        yield
    finally:
        server.should_exit = True
        await task


@pytest.mark.slow
async def test_real_agents_install_a_rolled_out_bundle_and_run_its_new_action(
    make_hub: HubFactory, tmp_path: Path, uid: str
) -> None:
    port = free_port()
    async with make_hub(http=f"127.0.0.1:{port}") as hub, AsyncExitStack() as stack:
        await stack.enter_async_context(serving(hub, port))
        api = await stack.enter_async_context(api_client(hub))
        devices = []
        for n in range(2):
            new = await hub.devices.create(f"pi{n}-{uid}", labels={"site": "lab"})
            folder = tmp_path / f"pi{n}"
            folder.mkdir()
            issued = new.credentials
            devices.append(Device(hub, folder, new.record.id, issued.secret, issued.username))
        for device in devices:
            await stack.enter_async_context(device.running())
        for device in devices:
            await _online(device, None)
        key = {"name": "release", "public_key": KEYS.trusted.public.to_text()}
        assert (await api.post("/api/bundle-keys", json=key)).status_code == 201
        upload = await api.post("/api/bundles", content=new_bundle())
        assert upload.status_code == 201, upload.text
        body = {"bundle": upload.json()["id"], "target": {"labels": {"site": "lab"}}, "canary": 1}
        started = await api.post("/api/rollouts", json=body)
        assert started.status_code == 201, started.text
        done = await settled(api, started.json()["id"], "completed", within_s=120)
        assert done["counts"] == {"confirmed": 2}
        for device in devices:
            await _online(device, NEW)
            await eventually(lambda d=device: _has(d, "hello.new"), "the new action", 30)
            said = await device.command("hello.new", who="rollout")
            assert said.status == "succeeded", said.error
