"""``fieldhub gateway``: the uplink, the LAN side and the display, wired and run.

The display (``fieldhub.gateway.display``) is found by import when the program starts, so
that the gateway runs where it is not installed: a config with a ``display`` section then
stops the gateway with a clear error. The uplink and the LAN side know each other
only through ``fieldhub.gateway.ports``; the display hears what the LAN side tells the uplink
(values, links, pairing codes) through ``display_feed.DisplayFeed``, which passes everything
on, and the uplink's link to the hub.

A stop (SIGTERM from systemd, Ctrl-C) stops the LAN side first (no report arrives half-taken),
then the uplink: its outboxes commit, and the gateway's offline status goes out, so the hub
shows the children unreachable at once instead of after the broker's keepalive.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fieldhub.gateway.config import ConfigError, GatewayConfig
from fieldhub.gateway.display_feed import DisplayFeed
from fieldhub.gateway.lan import LanManager, LanSettings
from fieldhub.gateway.ports import Uplink
from fieldhub.gateway.uplink import GatewayUplink
from fieldhub.mqtt.address import broker_address
from fieldhub.private_files import private_dir
from fieldhub.systemd import notify, pet_watchdog, watchdog_interval_s

if TYPE_CHECKING:
    import ssl

__all__ = ["GatewayStartError", "run_gateway"]

log = logging.getLogger(__name__)


class GatewayStartError(RuntimeError):
    """The gateway cannot start; the text says what failed and what to change."""


def _optional(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module.startswith(exc.name):
            return None
        raise


def _broker_tls(config: GatewayConfig) -> ssl.SSLContext | None:
    hub = config.hub
    if not broker_address(hub.broker).tls:
        return None
    from fieldhub.mqtt.tls import TlsSetupError, broker_context

    try:
        return broker_context(ca_file=hub.ca_file, pin_sha256=hub.pin_sha256, crl_file=hub.crl_file)
    except TlsSetupError as exc:
        raise GatewayStartError(f"hub: {exc}") from None


def _screen(config: GatewayConfig, config_path: Path) -> Any:
    """The display of the ``display`` section, or None without one."""
    if config.display is None:
        return None
    display = _optional("fieldhub.gateway.display")
    if display is None:
        raise GatewayStartError("display: this installation has no display support")
    try:
        return display.Display(display.parse_display_config(config.display))
    except display.DisplayConfigError as exc:
        raise ConfigError(config_path, None, "", str(exc)) from None


def _lan_side(
    config: GatewayConfig, config_path: Path, uplink: Uplink, feed: DisplayFeed | None
) -> LanManager:
    key_dir = config.data_dir / "lan"
    private_dir(key_dir)
    try:
        settings = LanSettings(gateway_id=config.gateway.id, key_dir=key_dir, **config.lan)
    except (TypeError, ValueError) as exc:
        raise ConfigError(config_path, None, "lan", str(exc)) from None
    if feed is None:
        return LanManager(settings, uplink)
    return LanManager(settings, feed, on_pairing_code=feed.pairing_code)


async def run_gateway(config: GatewayConfig, config_path: Path) -> None:
    """Run until cancelled (SIGTERM/SIGINT end the surrounding ``asyncio.run``).

    Raises:
        ConfigError: the ``lan`` or ``display`` section is wrong, or the secret is missing.
        GatewayStartError: TLS files, the LAN side's port, a missing part.
    """
    secret = config.hub.read_secret(config_path)
    address = broker_address(config.hub.broker)
    private_dir(config.data_dir)
    screen = _screen(config, config_path)
    uplink = GatewayUplink(
        gateway_id=config.gateway.id,
        host=address.host,
        port=address.port,
        websocket_path=address.websocket_path,
        username=config.hub.username,
        password=secret,
        data_dir=config.data_dir,
        tls=_broker_tls(config),
        max_messages=config.outbox.max_messages,
        command_timeout_s=config.commands.max_timeout_s,
        on_hub_link=screen.hub if screen is not None else None,
    )
    feed = DisplayFeed(uplink, screen) if screen is not None else None
    lan = _lan_side(config, config_path, uplink, feed)
    uplink.serve(lan)
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(uplink)
        try:
            await lan.start()
        except OSError as exc:
            raise GatewayStartError(f"lan: cannot listen ({exc.strerror or exc})") from exc
        stack.push_async_callback(lan.stop)  # unwound before the uplink: no report half-taken
        tasks = [asyncio.create_task(screen.run(), name="display")] if screen else []
        if screen is not None:
            stack.push_async_callback(screen.aclose)
        interval = watchdog_interval_s()
        if interval is not None:
            tasks.append(asyncio.create_task(pet_watchdog(interval), name="systemd-watchdog"))
        notify("READY=1")
        log.info("gateway %s started: hub %s", config.gateway.id, address.url)
        try:
            await asyncio.Event().wait()  # until cancelled
        finally:
            notify("STOPPING=1")
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
