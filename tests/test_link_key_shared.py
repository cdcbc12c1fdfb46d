"""The link key lives in the database (hub/auth/links.py): two hubs on one PostgreSQL, each
with its own data folder, check each other's links; a hub upgraded with a key file keeps it
(links it already sent go on working), and the key never reaches the log."""

from __future__ import annotations

import asyncio
import logging
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from fieldhub.hub.app import Hub
from fieldhub.hub.auth.links import KEY_FILE, b64
from fieldhub.hub.config import HubSettings
from fieldhub.hub.rollouts.links import DownloadForged, DownloadLinks


def _token(url: str) -> str:
    return parse_qs(urlsplit(url).query)["token"][0]


@pytest.mark.postgres
async def test_two_hubs_check_each_others_links_and_a_key_file_survives_the_move(
    postgres: Any, tmp_path: Path, uid: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = await asyncio.to_thread(postgres.create_database, f"links_{uid}")
    sent_before = secrets.token_bytes(32)  # the key file of a hub from before the move
    (tmp_path / "a").mkdir(mode=0o700)
    (tmp_path / "a" / KEY_FILE).write_bytes(sent_before)
    old_link = DownloadLinks(sent_before, "http://hub-a").url("rtu-1", "b1", 3_600_000)
    (tmp_path / "b").mkdir(mode=0o700)
    (tmp_path / "b" / KEY_FILE).write_bytes(secrets.token_bytes(32))  # its own, until now

    def settings(name: str) -> HubSettings:
        return HubSettings(
            data=tmp_path / name, instance=f"{name}{uid}", mqtt="127.0.0.1:0",
            http="127.0.0.1:0", db=url,
        )  # fmt: skip

    caplog.set_level(logging.DEBUG)
    async with Hub(settings("a")) as first, Hub(settings("b")) as second:
        assert first.rollouts.links.check(_token(old_link), "b1").device_id == "rtu-1"
        assert second.rollouts.links.check(_token(old_link), "b1").device_id == "rtu-1"
        by_second = second.rollouts.links.url("rtu-2", "b2", 3_600_000)
        assert first.rollouts.links.check(_token(by_second), "b2").device_id == "rtu-2"
        by_first = first.rollouts.links.url("rtu-3", "b3", 3_600_000)
        assert second.rollouts.links.check(_token(by_first), "b3").device_id == "rtu-3"
        with pytest.raises(DownloadForged):  # still a signature: another bundle is refused
            second.rollouts.links.check(_token(by_first), "b2")
    # Both folders now hold the cluster's key, which is the one the first hub brought along.
    assert (tmp_path / "b" / KEY_FILE).read_bytes() == sent_before
    assert b64(sent_before) not in caplog.text
    assert sent_before.hex() not in caplog.text
