"""The gateway through the hub's TLS WebSocket listener (``wss://``, ``--mqtt-wss``), as behind
nginx on port 443: a ``fieldhub gateway`` process whose ``hub.broker`` is a ``wss://`` URL,
checking the broker's certificate against ``hub.ca_file``, pairs a controller process; its
child's values are stored and a command reaches the controller and comes back."""

from __future__ import annotations

from pathlib import Path

import pytest

from fieldhub.hub.app import Hub
from tests.conftest import HubFactory, api_client
from tests.gateway_processes import (
    controller_config,
    free_udp_port,
    gateway_config,
    pair,
    start,
    stop_all,
)
from tests.gateway_support import register_gateway
from tests.support.certs import TestCa
from tests.waiting import eventually


def _wss_url(hub: Hub) -> str:
    assert hub.broker is not None
    [url] = [u for u in hub.broker.websocket_urls if u.startswith("wss://")]
    return url.replace("127.0.0.1", "localhost")  # the name in the broker's certificate


@pytest.mark.slow  # a hub with a TLS WebSocket listener, a gateway and a controller: ~10 s
async def test_a_gateway_over_wss_pairs_reports_and_runs_a_command(
    make_hub: HubFactory, tmp_path: Path, uid: str
) -> None:
    ca = TestCa(tmp_path / "ca")
    cert = ca.issue("broker", hosts=["127.0.0.1", "localhost"])
    gw, child = f"gw-{uid}", f"c-{uid}"
    listener = {"mqtt_wss": "127.0.0.1:0", "mqtt_cert": cert.cert, "mqtt_key": cert.key}
    async with make_hub(**listener) as hub, api_client(hub) as api:
        url = _wss_url(hub)
        credentials = await register_gateway(hub, gw)
        port = free_udp_port()
        tls = f"  ca_file: '{ca.cert}'\n"
        config = gateway_config(tmp_path, hub, gw, credentials, port, broker=url)
        config.write_text(config.read_text().replace("data_dir:", tls + "data_dir:", 1))
        gateway = await start(config)
        controller = await start(controller_config(tmp_path, child, port), "controller")
        try:
            await pair(api, gw, [child])

            async def temperature() -> float | None:
                latest = (await api.get(f"/api/devices/{child}/latest")).json()
                return latest.get("temp", {}).get("value")

            assert 20 <= await eventually(temperature, "the child's value in the hub", 30) <= 21
            device = (await api.get(f"/api/devices/{child}")).json()
            assert device["parent"] == gw
            command = await api.post(
                f"/api/devices/{child}/commands",
                json={"action": "relay.set", "args": {"closed": True}},
            )
            assert command.json()["status"] == "succeeded", command.text
            assert (tmp_path / f"{child}.log").read_text() == "relay true\n"
            assert hub.broker is not None
            assert any(u.startswith("wss://") for u in hub.broker.websocket_urls)
        finally:
            await stop_all(gateway, controller)
