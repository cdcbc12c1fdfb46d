"""The LAN manager: one supervised, authenticated link per controller (``ports.Lan``).

Controllers are found two ways: their UDP announcements, and a static list of ``host:port``
for controllers behind a router, which broadcasts do not cross. Each known controller gets a
supervisor task that dials it, says hello, pairs it if it is new (and a person approves), keeps
the link, and when the link ends tells the uplink why and dials again with back-off (woken at
once by a fresh announcement). Nothing a controller or the network sends can stop the manager:
every refusal is logged (at most once a minute per reason and address) and counted in
:attr:`LanManager.refusals`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from fieldhub.gateway.lan.listener import AnnouncementListener
from fieldhub.gateway.ports import CommandOutcome, ControllerInfo, ReportChannel, Uplink
from fieldhub.lan import DEFAULT_ANNOUNCE_PORT
from fieldhub.lan.discovery import Announcement
from fieldhub.lan.framing import FrameError
from fieldhub.lan.handshake import GatewayHello, open_hello, prove_key, start_pairing
from fieldhub.lan.keys import KeyFile, PeerKey
from fieldhub.lan.link import Link, LinkLost, RequestFailed
from fieldhub.lan.pairing import PairingError
from fieldhub.lan.session import AuthError, Session, session_key
from fieldhub.logthrottle import LogThrottle, held_back

__all__ = ["LanManager", "LanSettings"]

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S: Final = 5.0
BACKOFF_FIRST_S: Final = 0.5
BACKOFF_MAX_S: Final = 30.0
PAIRING_TIMEOUT_S: Final = 300.0
_CHANNELS: Final = ("telemetry", "event", "state")


@dataclass(frozen=True, slots=True)
class LanSettings:
    """What the gateway's config says about its LAN (``fieldhub gateway`` builds it)."""

    gateway_id: str
    key_dir: Path
    listen_host: str = "0.0.0.0"
    announce_port: int = DEFAULT_ANNOUNCE_PORT
    static: tuple[str, ...] = ()
    """``host:port`` of controllers that broadcasts do not reach."""
    heartbeat_s: float = 5.0
    request_timeout_s: float = 10.0
    link_deadline_s: float = 60.0
    """How long after the start a paired controller may take to link before the uplink hears
    it is offline (until then the hub shows it unreachable: nobody knows yet)."""

    def __post_init__(self) -> None:
        self.static_addresses()  # a wrong entry stops the gateway at start, named
        if not self.link_deadline_s > 0:
            raise ValueError(f"link_deadline_s must be positive, not {self.link_deadline_s!r}")

    def static_addresses(self) -> list[tuple[str, int]]:
        """The static list as (host, port).

        Raises:
            ValueError: naming the entry that is not ``host:port``.
        """
        addresses = []
        for entry in self.static:
            host, _, port = entry.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"static controller {entry!r}: expected host:port")
            addresses.append((host, int(port)))
        return addresses


@dataclass(slots=True)
class _Controller:
    controller_id: str
    host: str
    port: int
    state: str = "lost: not yet linked"
    link: Link | None = None
    task: asyncio.Task[None] | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    approval: asyncio.Future[bool] | None = None
    code: str = ""
    online: bool = False
    moved_to: tuple[str, int] | None = None
    """An address announced while the link was up: dialled once the link is lost."""
    last_report: tuple[str, int] = ("", 0)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


class LanManager:
    """Implements ``fieldhub.gateway.ports.Lan``; calls ``Uplink``."""

    def __init__(
        self,
        settings: LanSettings,
        uplink: Uplink,
        *,
        on_pairing_code: Callable[[str, str], None] | None = None,
    ) -> None:
        """``on_pairing_code(controller_id, code)`` shows a pairing code (the display's hook)."""
        self._settings = settings
        self._uplink = uplink
        self._on_pairing_code = on_pairing_code
        self._controllers: dict[str, _Controller] = {}
        self._linked: set[str] = set()  # controllers linked since the start
        self._tasks: set[asyncio.Task[None]] = set()
        self._transport: asyncio.DatagramTransport | None = None
        self._throttle = LogThrottle()
        self.refusals: Counter[str] = Counter()
        """Refusals by reason: ``bad_announcement``, ``bad_tag``, ``bad_counter``,
        ``bad_frame``, ``unknown_controller``, ``address_changed``, ``wrong_code``, …"""

    async def start(self) -> None:
        """Listen for announcements and dial the static list."""
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: AnnouncementListener(self._on_announcement, self.refusals),
            local_addr=(self._settings.listen_host, self._settings.announce_port),
            allow_broadcast=True,
        )
        for host, port in self._settings.static_addresses():
            self._spawn(self._probe_static(host, port))
        paired = sorted(path.stem for path in self._settings.key_dir.glob("*.key"))
        if paired:
            self._spawn(self._link_deadline(paired))

    @property
    def announce_port(self) -> int:
        """The UDP port announcements are heard on (the chosen one when configured as 0)."""
        assert self._transport is not None, "the manager is not started"
        return int(self._transport.get_extra_info("sockname")[1])

    async def stop(self) -> None:
        """Close every link and stop listening."""
        if self._transport is not None:
            self._transport.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ports.Lan

    async def run_command(
        self,
        controller_id: str,
        command_id: str,
        action: str,
        args: dict[str, Any],
        timeout_s: float,
    ) -> CommandOutcome:
        """Run one action on a controller, at most once (the controller remembers the id)."""
        entry = self._controllers.get(controller_id)
        link = entry.link if entry is not None else None
        if link is None:
            return CommandOutcome("unreachable", error=f"no link to {controller_id}")
        body = {"command_id": command_id, "action": action, "args": args, "timeout_s": timeout_s}
        try:
            reply = await link.request("run", body, timeout_s + self._settings.request_timeout_s)
        except (RequestFailed, FrameError) as exc:  # refused, or too large for a frame
            return CommandOutcome("failed", error=str(exc))
        except (TimeoutError, LinkLost) as exc:  # it may have run: only a retry with the id says
            return CommandOutcome("timed_out", error=f"no outcome from {controller_id}: {exc}")
        return _outcome(reply.get("outcome"))

    async def approve_pairing(self, controller_id: str) -> bool:
        """Pair a waiting controller (a person compared the two codes)."""
        entry = self._controllers.get(controller_id)
        if entry is None or entry.approval is None or entry.approval.done():
            return False
        entry.approval.set_result(True)
        return True

    async def approve_pairing_code(self, controller_id: str, code: str) -> bool:
        """Pair a waiting controller if ``code`` is the one its console shows."""
        entry = self._controllers.get(controller_id)
        if entry is None or entry.approval is None or entry.approval.done():
            return False
        if not secrets.compare_digest(entry.code.encode(), code.encode()):
            self._refuse("wrong_code", controller_id, "the pairing code typed is not the one shown")
            return False
        entry.approval.set_result(True)
        return True

    def link_states(self) -> dict[str, str]:
        """Each known controller's link: ``linked``, ``pairing``, or ``lost: <reason>``."""
        return {cid: entry.state for cid, entry in sorted(self._controllers.items())}

    # discovery

    def _on_announcement(self, announcement: Announcement, host: str) -> None:
        cid = announcement.controller_id
        # Tracked already: it may have kept its key a moment before this gateway kept its own.
        known = cid in self._controllers or self._key_file(cid).load() is not None
        if announcement.paired and not known:
            self._refuse(
                "unknown_controller", host, f"{cid} says it is paired, but not with this gateway"
            )
            return
        self._track(cid, host, announcement.tcp_port)

    def _track(self, cid: str, host: str, port: int) -> None:
        entry = self._controllers.get(cid)
        if entry is None:
            entry = self._controllers[cid] = _Controller(cid, host, port)
        elif (entry.host, entry.port) != (host, port):
            self._refuse(
                "address_changed",
                host,
                f"{cid} moved from {entry.address} to "
                f"{host}:{port}; the link must prove its key there",
            )
            if entry.link is not None:  # keep a working link; a spoofer gets nothing from this
                entry.moved_to = (host, port)
                return
            entry.host, entry.port = host, port
        if entry.task is None or entry.task.done():
            entry.task = self._spawn(self._supervise(entry))
        entry.wake.set()

    async def _link_deadline(self, paired: list[str]) -> None:
        """Paired controllers not linked by the deadline after the start are offline: the LAN
        side reports a lost link only once it was up, and without this a controller that never
        came back after a gateway restart would read unreachable forever."""
        deadline_s = self._settings.link_deadline_s
        await asyncio.sleep(deadline_s)
        for controller_id in paired:
            if controller_id not in self._linked:
                reason = f"not linked within {deadline_s:g} s of the gateway's start"
                log.info("controller %s: %s", controller_id, reason)
                await self._tell_uplink(self._uplink.controller_offline(controller_id, reason))

    async def _probe_static(self, host: str, port: int) -> None:
        """Learn which controller answers at a static address, then supervise it."""
        backoff = BACKOFF_FIRST_S
        while True:
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT_S):
                    reader, writer = await asyncio.open_connection(host, port)
                try:
                    hello = await open_hello(
                        reader, writer, self._settings.gateway_id, CONNECT_TIMEOUT_S
                    )
                finally:
                    writer.close()
                self._track(hello.controller_id, host, port)
                return
            except (OSError, TimeoutError, FrameError, asyncio.IncompleteReadError) as exc:
                log.debug("static controller %s:%d not reached: %s", host, port, exc)
            await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    # one controller

    async def _supervise(self, entry: _Controller) -> None:
        backoff = BACKOFF_FIRST_S
        while True:
            entry.wake.clear()
            try:
                await self._connect(entry)
            except LinkLost as exc:
                if exc.reason not in ("closed", "silent"):
                    self._refuse(exc.reason, entry.host, f"{entry.controller_id}: {exc}")
                entry.state = f"lost: {exc}"
            except (AuthError, PairingError, FrameError) as exc:
                self._refuse(_reason(exc), entry.host, f"{entry.controller_id}: {exc}")
                entry.state = f"lost: {exc}"
            except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
                entry.state = f"lost: cannot reach {entry.address} ({type(exc).__name__})"
            finally:
                entry.link = None
                entry.approval = None
                if entry.moved_to is not None:
                    (entry.host, entry.port), entry.moved_to = entry.moved_to, None
            log.info("controller %s: %s", entry.controller_id, entry.state)
            if entry.online:
                entry.online = False
                backoff = BACKOFF_FIRST_S
                await self._tell_uplink(
                    self._uplink.controller_offline(entry.controller_id, entry.state[6:])
                )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(backoff * random.uniform(0.8, 1.2)):
                    await entry.wake.wait()
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def _connect(self, entry: _Controller) -> None:
        """Dial, authenticate (pairing first if needed) and serve the link until it ends.

        Raises:
            LinkLost: the link ended, saying why.
        """
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            reader, writer = await asyncio.open_connection(entry.host, entry.port)
        try:
            hello = await open_hello(reader, writer, self._settings.gateway_id, CONNECT_TIMEOUT_S)
            if hello.controller_id != entry.controller_id:
                raise FrameError(f"{entry.address} answers as {hello.controller_id}")
            if hello.paired:
                stored = self._key_file(hello.controller_id).load()
                if stored is None:
                    raise AuthError("unknown_controller", "paired, but not with this gateway")
                session = Session(
                    session_key(stored.key, hello.gateway_nonce, hello.controller_nonce), "gateway"
                )
                await prove_key(reader, writer, session, CONNECT_TIMEOUT_S)
            else:
                session = await self._pair(entry, reader, writer, hello)
            link = Link(reader, writer, session, heartbeat_s=self._settings.heartbeat_s)
        except BaseException:
            writer.close()
            raise
        await self._run_link(entry, link)

    async def _pair(
        self,
        entry: _Controller,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        hello: GatewayHello,
    ) -> Session:
        """Exchange keys, wait for a person's approval, confirm to the controller, keep the key;
        the link goes on in the returned session."""
        pairing = await start_pairing(reader, writer, hello, CONNECT_TIMEOUT_S)
        entry.state, entry.code = "pairing", pairing.code
        entry.approval = asyncio.get_running_loop().create_future()
        log.info(
            "controller %s at %s asks to pair: code %s",
            hello.controller_id,
            entry.address,
            pairing.code,
        )
        if self._on_pairing_code is not None:
            self._on_pairing_code(hello.controller_id, pairing.code)
        await self._tell_uplink(self._uplink.pairing_requested(hello.controller_id, entry.host))
        try:
            async with asyncio.timeout(PAIRING_TIMEOUT_S):
                await asyncio.shield(entry.approval)
        except TimeoutError:
            raise LinkLost("pairing_timeout", "pairing not approved in time") from None
        session = Session(
            session_key(pairing.key, hello.gateway_nonce, hello.controller_nonce), "gateway"
        )
        await prove_key(reader, writer, session, CONNECT_TIMEOUT_S)
        self._key_file(hello.controller_id).store(PeerKey(hello.controller_id, pairing.key))
        log.info("paired controller %s", hello.controller_id)
        return session

    async def _run_link(self, entry: _Controller, link: Link) -> None:
        """Ask the controller what it offers, tell the uplink it is online, and serve the link
        until it ends (with the manager's stop, too: then the link is closed)."""
        entry.link = link
        serving = asyncio.create_task(link.serve(lambda op, body: self._answer(entry, op, body)))
        try:
            try:
                described = await link.request("info", {}, self._settings.request_timeout_s)
            except (TimeoutError, RequestFailed) as exc:
                raise LinkLost("no_info", f"no answer to `info`: {exc}") from None
            actions, firmware = described.get("actions"), described.get("firmware")
            entry.state = "linked"
            entry.online = True
            self._linked.add(entry.controller_id)
            info = ControllerInfo(
                entry.controller_id,
                entry.address,
                actions if isinstance(actions, dict) else {},
                firmware if isinstance(firmware, str) else "",
            )
            await self._tell_uplink(self._uplink.controller_online(info))
            log.info("controller %s linked at %s", entry.controller_id, entry.address)
            await serving
        finally:
            if not serving.done():
                serving.cancel()
                await asyncio.wait({serving})
            if not serving.cancelled():
                serving.exception()  # retrieved: the link's end is reported by the caller

    async def _answer(self, entry: _Controller, op: str, body: dict[str, Any]) -> dict[str, Any]:
        if op != "report":
            raise RequestFailed(f"unknown op {op[:32]!r}")
        channel, report = body.get("channel"), body.get("body")
        boot, rid = body.get("boot"), body.get("rid")
        if channel not in _CHANNELS or not isinstance(report, dict):
            self._refuse("bad_report", entry.host, f"{entry.controller_id}: bad report")
            raise RequestFailed("`channel` must be telemetry, event or state; `body` an object")
        if not isinstance(boot, str) or not isinstance(rid, int):
            raise RequestFailed("`boot` must be a string and `rid` an integer")
        last_boot, last_rid = entry.last_report
        if boot == last_boot and rid <= last_rid:
            return {}  # a repeat of what the uplink already has: acknowledge again
        report.pop("seq", None)  # the uplink numbers each child's reports
        channel_name: ReportChannel = channel
        try:
            await self._uplink.report(entry.controller_id, channel_name, report)
        except Exception as exc:  # the uplink's trouble (a full disk): not acknowledged, resent
            log.warning("the uplink did not take a report of %s: %s", entry.controller_id, exc)
            raise RequestFailed("the gateway could not keep the report") from None
        entry.last_report = (boot, rid)
        return {}

    # helpers

    @staticmethod
    async def _tell_uplink(call: Coroutine[Any, Any, None]) -> None:
        """Await an uplink notice; its failure is the uplink's to fix and must not end the
        supervision of a controller, so it is logged with its traceback and passed over."""
        try:
            await call
        except Exception:
            log.exception("the uplink failed on a notice about a controller")

    def _key_file(self, controller_id: str) -> KeyFile:
        return KeyFile(self._settings.key_dir / f"{controller_id}.key")

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _refuse(self, reason: str, source: str, detail: str) -> None:
        self.refusals[reason] += 1
        held = self._throttle.due((reason, source))
        if held is not None:
            log.warning("refused %s from %s: %s%s", reason, source, detail, held_back(held))


def _reason(exc: Exception) -> str:
    if isinstance(exc, AuthError):
        return exc.reason
    return "bad_pairing" if isinstance(exc, PairingError) else "bad_frame"


def _outcome(raw: Any) -> CommandOutcome:
    if not isinstance(raw, dict) or raw.get("status") not in ("succeeded", "failed", "timed_out"):
        return CommandOutcome("failed", error="the controller's outcome is malformed")
    result = raw.get("result")
    return CommandOutcome(
        raw["status"], result if isinstance(result, dict) else {}, str(raw.get("error", ""))
    )
