"""``fieldhub bundle upload`` and ``fieldhub rollout ...`` as an admin runs them: a separate
process, the hub's REST API over real HTTP, devices that speak the bundle contract."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from pathlib import Path

import pytest

from fieldhub.bundles import SigningKey, make_bundle
from fieldhub.hub.app import Hub
from tests.conftest import api_client
from tests.hub_client import add_user, served, user_token
from tests.support.bundle_devices import api_download, start_fleet
from tests.test_cli_send import fieldhub
from tests.test_rollouts import ready
from tests.waiting import eventually


@pytest.mark.slow  # five runs of the `fieldhub` command: a few seconds each on a loaded machine
async def test_an_admin_uploads_a_bundle_and_rolls_it_out_from_the_command_line(
    hub: Hub, tmp_path: Path, uid: str
) -> None:
    key = SigningKey.generate()
    await hub.bundles.add_key(key.public.to_text(), "release", actor="test", source="")
    bundle = tmp_path / "site-actions-1.2.0.fhb"
    bundle.write_bytes(make_bundle({"a.py": b"x = 1\n"}, key, name="site-actions", version="1.2.0"))
    _id, token = await user_token(hub, await add_user(hub, "admin", []))
    async with (
        served(hub) as url,
        api_client(hub, None) as anonymous,
        api_client(hub) as admin,
    ):
        devices = await start_fleet(
            hub, [f"cli{n}-{uid}" for n in range(2)], download=api_download(anonymous), site="oslo"
        )
        try:
            await ready(hub, devices)
            code, out, err = await fieldhub("bundle", "upload", str(bundle), url=url, token=token)
            assert code == 0, err
            bundle_id = out.split(": ")[1].split()[0]
            assert out.startswith("site-actions 1.2.0: ")

            code, out, err = await fieldhub(
                "rollout",
                "start",
                bundle_id,
                "--group",
                "site=oslo",
                "--canary",
                "1",
                "--approval",
                url=url,
                token=token,
            )
            assert code == 0, err
            rollout_id = out.split()[1].rstrip(":")

            async def status() -> str:
                return str((await admin.get(f"/api/rollouts/{rollout_id}")).json()["status"])

            await eventually(lambda: _is(status(), "waiting"), "the canary's wave done", 30)
            code, out, err = await fieldhub("rollout", "show", rollout_id, url=url, token=token)
            assert "waiting" in out
            assert "1 confirmed, 1 pending" in out
            code, out, err = await fieldhub("rollout", "approve", rollout_id, url=url, token=token)
            assert code == 0, err

            await eventually(lambda: _is(status(), "completed"), "the rollout completed", 30)
            code, out, err = await fieldhub("rollout", "list", url=url, token=token)
            assert rollout_id in out
            assert "2 confirmed" in out
            code, out, err = await fieldhub("rollout", "approve", rollout_id, url=url, token=token)
            assert code == 2  # finished: the hub's refusal, in its words
            assert "finished" in err
        finally:
            await asyncio.gather(*(device.close() for device in devices))


async def _is(value: Awaitable[str], wanted: str) -> bool:
    return await value == wanted
