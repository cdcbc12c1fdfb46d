"""What the gateway's display hears: the LAN side's news on its way to the uplink.

:class:`DisplayFeed` stands in front of the uplink (it is a ``ports.Uplink`` itself): every
call goes on to the uplink unchanged, and first, so a report is durable before the display
shows it; the display then gets what a person in front of it needs: values, each
controller's link, the gateway's own link to the hub, and the codes of the controllers waiting
to be paired.

Pairing codes are one message listing every controller waiting (``pair ctrl-1: 493027``, a
line each), not a message per controller: three controllers announcing at once would
otherwise leave only the last code readable. A controller leaves the list when it links (or
its link is lost), and the message ends with the list, so the screen shows the template again
as soon as nobody waits; an unanswered request leaves it when the LAN side gives up on it.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from fieldhub.gateway.lan.manager import PAIRING_TIMEOUT_S
from fieldhub.gateway.ports import ControllerInfo, ReportChannel, Uplink

__all__ = ["DisplayFeed", "Screen"]


class Screen(Protocol):
    """What the gateway tells its display (``fieldhub.gateway.display.Display``)."""

    def value(self, controller_id: str, key: str, value: float | int | str | bool) -> None:
        """A controller's value."""

    def presence(self, controller_id: str, state: str) -> None:
        """A controller's link: ``linked``, ``offline``, ``pairing``."""

    def hub(self, online: bool) -> None:
        """The gateway's connection to the hub."""

    def message(self, text: str, seconds: float) -> None:
        """Shown instead of the template for a while; ``seconds <= 0`` ends it."""


class DisplayFeed:
    """An ``Uplink`` in front of the real one, telling ``screen`` (see the module doc)."""

    def __init__(self, uplink: Uplink, screen: Screen) -> None:
        self._uplink = uplink
        self._screen = screen
        self._waiting: dict[str, tuple[str, float]] = {}  # controller -> (code, given up at)

    def pairing_code(self, controller_id: str, code: str) -> None:
        """The LAN side's ``on_pairing_code``: ``controller_id`` waits with ``code``."""
        self._waiting[controller_id] = (code, time.monotonic() + PAIRING_TIMEOUT_S)
        self._screen.presence(controller_id, "pairing")
        self._show_waiting()

    def hub_link(self, online: bool) -> None:
        """The uplink's ``on_hub_link``."""
        self._screen.hub(online)

    async def controller_online(self, info: ControllerInfo) -> None:
        """See ``ports.Uplink``."""
        await self._uplink.controller_online(info)
        self._screen.presence(info.controller_id, "linked")
        self._done_waiting(info.controller_id)

    async def controller_offline(self, controller_id: str, reason: str) -> None:
        """See ``ports.Uplink``."""
        await self._uplink.controller_offline(controller_id, reason)
        self._screen.presence(controller_id, "offline")
        self._done_waiting(controller_id)

    async def pairing_requested(self, controller_id: str, address: str) -> None:
        """See ``ports.Uplink``; the code is on the screen already (:meth:`pairing_code`)."""
        await self._uplink.pairing_requested(controller_id, address)

    async def report(
        self, controller_id: str, channel: ReportChannel, body: dict[str, Any]
    ) -> None:
        """See ``ports.Uplink``."""
        await self._uplink.report(controller_id, channel, body)
        if channel == "telemetry" and isinstance(body.get("values"), dict):
            for key, value in body["values"].items():
                if isinstance(value, bool | int | float | str):
                    self._screen.value(controller_id, key, value)

    def _done_waiting(self, controller_id: str) -> None:
        if self._waiting.pop(controller_id, None) is not None:
            self._show_waiting()

    def _show_waiting(self) -> None:
        now = time.monotonic()
        self._waiting = {cid: wait for cid, wait in self._waiting.items() if wait[1] > now}
        lines = [f"pair {cid}: {code}" for cid, (code, _end) in sorted(self._waiting.items())]
        last_end = max((end for _code, end in self._waiting.values()), default=now)
        self._screen.message("\n".join(lines), last_end - now)
