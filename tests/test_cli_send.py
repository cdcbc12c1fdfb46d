"""``fieldhub send`` as an operator runs it: a separate process, the hub's REST API over real
HTTP, real agents answering; one device and a whole group, with a table of results."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable

from fieldhub.hub.app import Hub
from tests.fleet import LOCK_PIN, Fleet
from tests.hub_client import add_user, served, user_token


async def fieldhub(*args: str, url: str, token: str) -> tuple[int, str, str]:
    """Run the ``fieldhub`` command without blocking the hub that serves it."""
    env = {**os.environ, "FIELDHUB_URL": url, "FIELDHUB_TOKEN": token, "COLUMNS": "200"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fieldhub",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_send_unlocks_one_device_and_locks_a_group(
    hub: Hub, fleet_of: Callable[[Hub], Fleet]
) -> None:
    fleet = fleet_of(hub)
    berlin = [await fleet.add(f"b{n}") for n in range(3)]
    paris = await fleet.add("p0", site="paris")
    operator = await add_user(hub, "operator", ["berlin"])
    _id, token = await user_token(hub, operator)
    async with (
        served(hub) as url,
        fleet.agent(berlin[0]),
        fleet.agent(berlin[1]),
        fleet.agent(berlin[2]),
        fleet.agent(paris),
    ):
        for device in [*berlin, paris]:
            await fleet.online(device)

        code, out, err = await fieldhub("send", berlin[0], "lock.unlock", url=url, token=token)
        assert code == 0, err
        assert berlin[0] in out
        assert "succeeded" in out
        assert fleet.level(berlin[0], LOCK_PIN) == 1

        code, out, err = await fieldhub(
            "send", "--group", "site=berlin", "lock.unlock", url=url, token=token
        )
        assert code == 0, err
        assert all(device in out for device in berlin)
        assert out.count("succeeded") == 4  # a row each, and the summary
        assert out.rstrip().endswith("3 succeeded")
        assert paris not in out  # not the operator's site
        assert all(fleet.level(device, LOCK_PIN) == 1 for device in berlin)
        assert fleet.level(paris, LOCK_PIN) == 0

        # Arguments are typed from the text; a wrong one is refused by the hub, with its words.
        code, out, err = await fieldhub(
            "send", berlin[1], "socket.set", "on=maybe", url=url, token=token
        )
        assert code == 2
        assert "'on' must be bool" in err
        code, out, err = await fieldhub(
            "send", berlin[1], "socket.set", "on=false", url=url, token=token
        )
        assert code == 0, err
        assert "succeeded" in out

        # A device of another site does not exist for this operator.
        code, _out, err = await fieldhub("send", paris, "lock.unlock", url=url, token=token)
        assert code == 2
        assert "404" in err
        assert fleet.level(paris, LOCK_PIN) == 0


async def test_send_says_when_a_device_is_offline_and_the_command_waits(
    hub: Hub, fleet_of: Callable[[Hub], Fleet]
) -> None:
    fleet = fleet_of(hub)
    device = await fleet.add("door")  # no agent: offline
    admin = await add_user(hub, "admin")
    _id, token = await user_token(hub, admin)
    async with served(hub) as url:
        code, out, err = await fieldhub(
            "send", device, "lock.unlock", "--timeout", "0.5", url=url, token=token
        )
        assert code == 3, err  # still under way: queued for the device
        assert "queued" in out
        code, _out, err = await fieldhub("send", device, "lock.unlock", url=url, token="fht_wrong")
        assert code == 2
        assert "401" in err


async def test_send_all_locks_the_cabinets_with_a_lock_and_says_which_have_none(
    hub: Hub, fleet_of: Callable[[Hub], Fleet]
) -> None:
    """The README's `fieldhub send --all lock.lock`, on a fleet where one cabinet has no lock;
    and a power cycle shorter than the socket allows, lengthened by the device and said so."""
    fleet = fleet_of(hub)
    locked = [await fleet.add(f"l{n}") for n in range(2)]
    plain = await fleet.add("plain")
    admin = await add_user(hub, "admin")
    _id, token = await user_token(hub, admin)
    async with (
        served(hub) as url,
        fleet.agent(locked[0]),
        fleet.agent(locked[1]),
        fleet.agent(plain, lock=False, min_off_s=1),
    ):
        for device in [*locked, plain]:
            await fleet.online(device)
        code, out, err = await fieldhub("send", "--all", "lock.unlock", url=url, token=token)
        assert code == 0, err
        assert all(fleet.level(device, LOCK_PIN) == 1 for device in locked)
        code, out, err = await fieldhub("send", "--all", "lock.lock", url=url, token=token)
        assert code == 0, err  # the device without a lock was not asked: not a failure
        assert all(fleet.level(device, LOCK_PIN) == 0 for device in locked)
        assert "2 succeeded, 1 unsupported" in out
        assert "has no action 'lock.lock'" in out

        code, out, err = await fieldhub(
            "send", plain, "socket.cycle", "off_s=0.2", url=url, token=token
        )
        assert code == 0, err
        assert "succeeded" in out
        assert "off_s 0.2 → 1" in out  # requested → used, and why
        assert "min_off_s" in out
