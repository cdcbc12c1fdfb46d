"""The controller: its TCP server, the link to its gateway, its reports and announcements.

The gateway dials; a controller keeps at most one authenticated link (a newer one replaces the
older, as when the gateway restarted before the old connection timed out). Reports wait in a
bounded queue (:data:`QUEUE_LIMIT`, the oldest dropped and counted when full) until the gateway
acknowledges each one, which it does only once its uplink has it on disk; a report not
acknowledged is sent again on the next link, with the same ``boot`` and ``rid`` so that the
gateway can tell a repeat from a new one.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import Counter, deque
from typing import Any, Final

from fieldhub.controller.actions import ActionRunner
from fieldhub.controller.announcer import announce_forever
from fieldhub.controller.config import ControllerConfig
from fieldhub.controller.desired import apply_desired
from fieldhub.controller.memory import CommandMemory
from fieldhub.controller.values import read_value
from fieldhub.lan import DESIRED_ACTION
from fieldhub.lan.discovery import Announcement
from fieldhub.lan.framing import FrameError, pack_frame
from fieldhub.lan.handshake import GatewayHello, Pairing, accept_hello, answer_pairing, check_key
from fieldhub.lan.keys import KeyFile, PeerKey
from fieldhub.lan.link import Link, LinkLost, RequestFailed, read_plain
from fieldhub.lan.pairing import PairingError
from fieldhub.lan.session import AuthError, Session, session_key
from fieldhub.logthrottle import LogThrottle, held_back
from fieldhub.private_files import private_dir

__all__ = ["Controller"]

log = logging.getLogger(__name__)

QUEUE_LIMIT: Final = 256
HELLO_TIMEOUT_S: Final = 10.0
PAIRING_TIMEOUT_S: Final = 300.0
"""How long a shown pairing code waits for a person to approve it at the gateway or hub."""
REPORT_TIMEOUT_S: Final = 15.0
MAX_CONNECTIONS: Final = 16
"""Connections in hand at once (the gateway's link, and hellos that have 10 s to finish)."""


class Controller:
    """One controller, as configured; :meth:`run` until cancelled."""

    def __init__(self, config: ControllerConfig) -> None:
        self.config = config
        private_dir(config.data_dir)
        self._key_file = KeyFile(config.data_dir / "gateway.key")
        self._paired = self._key_file.load()
        self._runner = ActionRunner(
            config.actions, CommandMemory(config.data_dir / "commands.jsonl")
        )
        self._queue: deque[tuple[int, str, dict[str, Any]]] = deque()
        self._next_rid = 1
        self._boot = secrets.token_hex(8)
        self._link: Link | None = None
        self._linked = asyncio.Event()
        self._queued = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}
        self._throttle = LogThrottle()
        self.refusals: Counter[str] = Counter()
        """Refused connections and frames by reason (``bad_tag``, ``bad_frame``, …)."""
        self.dropped_reports = 0

    @property
    def port(self) -> int:
        """The TCP port the server listens on (the configured one, or the one chosen for 0)."""
        assert self._server is not None, "the controller is not running"
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def paired_with(self) -> str | None:
        """The gateway this controller is paired with."""
        return self._paired.peer_id if self._paired else None

    @property
    def queued_reports(self) -> int:
        return len(self._queue)

    async def start(self) -> None:
        """Listen; :meth:`run` then does the rest (tests use the port in between)."""
        self._server = await asyncio.start_server(
            self._on_connection, self.config.listen_host, self.config.listen_port
        )

    async def run(self) -> None:
        """Serve, announce and report until cancelled."""
        if self._server is None:
            await self.start()
        assert self._server is not None
        self.report(
            "event",
            {
                "type": "controller.started",
                "severity": "info",
                "data": {"firmware": self.config.firmware},
            },
        )
        tasks = [
            asyncio.create_task(self._report_values()),
            asyncio.create_task(self._send_reports()),
            asyncio.create_task(
                announce_forever(
                    self._announcement,
                    self.config.announce_to,
                    self.config.announce_port,
                    self.config.announce_every_s,
                )
            ),
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            self._server.close()
            for writer in self._connections.values():  # the server leaves its handlers running
                writer.close()
            await asyncio.gather(*self._connections, return_exceptions=True)

    def report(self, channel: str, body: dict[str, Any]) -> None:
        """Queue a report (``ts`` added when missing) for the gateway."""
        if len(self._queue) >= QUEUE_LIMIT:
            self._queue.popleft()
            self.dropped_reports += 1
        self._queue.append((self._next_rid, channel, {"ts": _now_ms(), **body}))
        self._next_rid += 1
        self._queued.set()

    def _announcement(self) -> Announcement:
        return Announcement(self.config.controller_id, self.port, self._paired is not None)

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = writer
        task.add_done_callback(self._connections.pop)
        peer = writer.get_extra_info("peername")
        peer_host = str(peer[0]) if peer else "?"
        if len(self._connections) > MAX_CONNECTIONS:  # a flood must not starve the gateway
            self._refuse("too_many_connections", peer_host, f"{MAX_CONNECTIONS} in hand already")
            writer.close()
            return
        try:
            hello = await accept_hello(
                reader, writer, self.config.controller_id, self._paired is not None, HELLO_TIMEOUT_S
            )
            pairing = self._paired is None
            if self._paired is None:
                key, wait_s = (await self._pair(reader, writer, hello)).key, PAIRING_TIMEOUT_S
            else:
                key, wait_s = self._paired.key, HELLO_TIMEOUT_S
            session = Session(
                session_key(key, hello.gateway_nonce, hello.controller_nonce), "controller"
            )
            await check_key(reader, session, wait_s)
            if pairing:
                self._keep_pairing(PeerKey(hello.gateway_id, key))
            writer.write(pack_frame(session.seal({"t": "auth"})))
            link = Link(reader, writer, session, heartbeat_s=self.config.heartbeat_s)
            await self._serve(link)
        except AuthError as exc:
            self._refuse(exc.reason, peer_host, str(exc))
        except PairingError as exc:
            self._refuse("bad_pairing", peer_host, str(exc))
        except FrameError as exc:
            self._refuse("bad_frame", peer_host, str(exc))
        except (TimeoutError, asyncio.IncompleteReadError, OSError):
            pass  # a port scan, or a gateway that went away mid-hello
        finally:
            writer.close()

    async def _pair(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, hello: GatewayHello
    ) -> Pairing:
        """Answer a gateway's pairing and show the code; the key is kept only once the gateway
        proves it (after a person approved the code there)."""
        pairing = await answer_pairing(
            reader, writer, hello, await read_plain(reader, HELLO_TIMEOUT_S), HELLO_TIMEOUT_S
        )
        print(
            f"pairing code for gateway {hello.gateway_id}: {pairing.code} "
            "(approve it at the gateway or in the hub)",
            flush=True,
        )
        log.info("pairing with gateway %s: code %s shown", hello.gateway_id, pairing.code)
        return pairing

    def _keep_pairing(self, peer: PeerKey) -> None:
        """Keep an approved pairing, unless another gateway's was approved meanwhile (two
        pairings at once: the first one wins, the other is refused).

        Raises:
            AuthError: ``not_authenticated``, when this controller is paired already.
        """
        if self._paired is not None:
            raise AuthError("not_authenticated", f"paired meanwhile with {self._paired.peer_id}")
        self._paired = peer
        self._key_file.store(peer)
        log.info("paired with gateway %s", peer.peer_id)

    async def _serve(self, link: Link) -> None:
        previous, self._link = self._link, link
        if previous is not None:
            await previous.close()
        self._linked.set()
        log.info("linked with gateway %s at %s", self.paired_with, link.peer)
        try:
            await link.serve(self._answer)
        except LinkLost as exc:
            if exc.reason not in ("closed", "silent"):
                self._refuse(exc.reason, link.peer, str(exc))
            else:
                log.info("link with gateway lost: %s", exc)
        finally:
            if self._link is link:
                self._link = None
                self._linked.clear()

    async def _answer(self, op: str, body: dict[str, Any]) -> dict[str, Any]:
        if op == "info":
            return {
                "controller": self.config.controller_id,
                "firmware": self.config.firmware,
                "actions": self._runner.catalog(),
            }
        if op == "run":
            command_id, action = body.get("command_id"), body.get("action")
            args, timeout = body.get("args", {}), body.get("timeout_s", 0)
            if not isinstance(command_id, str) or not 0 < len(command_id) <= 64:
                raise RequestFailed("`command_id` must be a string of 1-64 characters")
            if not isinstance(action, str) or not isinstance(args, dict):
                raise RequestFailed("`action` must be a string and `args` an object")
            if not isinstance(timeout, int | float) or isinstance(timeout, bool):
                raise RequestFailed("`timeout_s` must be a number")
            if action == DESIRED_ACTION:
                return {"outcome": await self._set_state(command_id, args, float(timeout))}
            return {"outcome": await self._runner.run(command_id, action, args, float(timeout))}
        raise RequestFailed(f"unknown op {op[:32]!r}")

    async def _set_state(
        self, command_id: str, desired: dict[str, Any], timeout_s: float
    ) -> dict[str, Any]:
        """The gateway's desired state, through the actions that apply its keys."""
        outcome, applied = await apply_desired(
            self._runner, self.config.actions, command_id, desired, timeout_s
        )
        if applied:
            self.report("state", {"state": applied})
        return outcome

    async def _report_values(self) -> None:
        while True:
            values = {}
            for name, source in self.config.values.items():
                value = await read_value(source)
                if value is not None:
                    values[name] = value
            if values:
                self.report("telemetry", {"values": values})
            await asyncio.sleep(self.config.report_every_s)

    async def _send_reports(self) -> None:
        """Send the oldest report, wait for its acknowledgement, drop it; again."""
        while True:
            await self._queued.wait()
            await self._linked.wait()
            link = self._link
            if not self._queue:
                self._queued.clear()
                continue
            if link is None:
                continue
            rid, channel, body = self._queue[0]
            try:
                await link.request(
                    "report",
                    {"boot": self._boot, "rid": rid, "channel": channel, "body": body},
                    REPORT_TIMEOUT_S,
                )
            except (LinkLost, TimeoutError, RequestFailed, OSError) as exc:
                log.debug("report %d not acknowledged: %s", rid, exc)
                await asyncio.sleep(0.5)  # then the same report again, on whatever link is up
                continue
            if self._queue and self._queue[0][0] == rid:
                self._queue.popleft()

    def _refuse(self, reason: str, peer: str, detail: str) -> None:
        self.refusals[reason] += 1
        held = self._throttle.due((reason, peer))
        if held is not None:
            log.warning(
                "refused a connection from %s (%s): %s%s", peer, reason, detail, held_back(held)
            )


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
