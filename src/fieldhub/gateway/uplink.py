"""The gateway's uplink: its children's reports to the hub, the hub's commands to them.

One MQTT connection, with the gateway's own credentials, carries the gateway and every child
(a paired LAN controller). Each child is a device of the hub with its own topics, which the
broker lets the gateway use once the hub lists the child as the gateway's
(``fieldhub.protocol.acl``), and its own outbox and sender (``children.py``): the agent's
guarantees, child by child: a report is on disk before the LAN side acknowledges it to the
controller, stays there until the hub says it stored it, and goes again after any loss.

Presence. The gateway's status carries its last will, as an agent's does; each child's status
is published by the gateway, retained: ``online`` while its LAN link is up, ``offline`` with
the reason when the LAN side reports the link lost. When the gateway itself goes (its will,
or a clean stop), the hub shows every child ``unreachable`` (``hub/devices/presence.py``); on
every (re)connection the gateway says again how each child is.

Pairing. A controller that asks to pair becomes an event of the gateway
(``gateway.pairing_requested``, naming the controller and its address); the hub approves it
with the gateway's command ``gateway.approve_pairing`` (``{"controller": ID}``), which the
gateway reports among its actions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Self

from fieldhub.agent._tasks import log_if_failed
from fieldhub.agent.outbox import OutboxFile
from fieldhub.agent.reporting import StateValue
from fieldhub.agent.uplink import UplinkSettings
from fieldhub.clock import now_ms
from fieldhub.gateway.children import LINKED, NOT_YET_LINKED, Child
from fieldhub.gateway.ports import ControllerInfo, Lan, ReportChannel
from fieldhub.gateway.relay import Relay
from fieldhub.logthrottle import LogThrottle, held_back
from fieldhub.mqtt import ConnectRefused, MqttClient, MqttError, SubscribeRefused, Will
from fieldhub.protocol import (
    Channel,
    PayloadError,
    Reply,
    Status,
    TopicError,
    check_device_id,
    decode,
    encode,
    topic_for,
)

if TYPE_CHECKING:
    import ssl
    from types import TracebackType

__all__ = ["APPROVE_PAIRING", "PAIRING_REQUESTED", "GatewayStats", "GatewayUplink"]

log = logging.getLogger(__name__)

APPROVE_PAIRING: Final = "gateway.approve_pairing"
PAIRING_REQUESTED: Final = "gateway.pairing_requested"
_GATEWAY_ACTIONS: Final = {APPROVE_PAIRING: {"controller": "str"}}
_RETRY_SUBSCRIBE_S: Final = 5.0
_STOP_FLUSH_S: Final = 2.0
_OUTBOXES: Final = "outboxes.db"
_ANSWERS_KEPT: Final = 256


@dataclass(slots=True)
class GatewayStats:
    """What the uplink refused or could not use, counted (each also logged, sparingly).

    Attributes:
        refused_subscriptions: a child's subscriptions the broker refused (the hub does not
            list it as this gateway's child yet).
        invalid_inbound: hub → device messages that could not be decoded.
        bad_controller_ids: reports or links of controllers whose id is no device id.
    """

    refused_subscriptions: int = 0
    invalid_inbound: int = 0
    bad_controller_ids: int = 0


class GatewayUplink:
    """Implements ``fieldhub.gateway.ports.Uplink``. Use as an async context manager, and
    give it the LAN side with :meth:`serve` before the LAN side starts.

    Args:
        gateway_id: the gateway's device id (client id and topic level).
        host: the hub's broker.
        port: its port.
        websocket_path: MQTT over WebSocket at this HTTP path (``ws(s)://``); None for TCP.
        username: ``{gateway_id}.{key id}``.
        password: the gateway's secret; never logged.
        data_dir: where the outboxes live (``outboxes.db``: the gateway's and every child's).
        settings: window and resend timing, as the agent's.
        tls: for an ``mqtts://`` broker.
        max_messages: reports each outbox keeps at most while the hub is away.
        command_timeout_s: the longest a command may run on a controller.
        on_hub_link: called with True when the connection to the hub's broker is up (each
            time), False when it is lost: what the gateway's display shows as ``{hub}``.
    """

    def __init__(
        self,
        *,
        gateway_id: str,
        host: str,
        port: int,
        websocket_path: str | None = None,
        username: str | None,
        password: str | None,
        data_dir: Path,
        settings: UplinkSettings | None = None,
        tls: ssl.SSLContext | None = None,
        max_messages: int = 100_000,
        command_timeout_s: float = 60.0,
        on_hub_link: Callable[[bool], None] | None = None,
    ) -> None:
        self.gateway_id = gateway_id
        self._on_hub_link = on_hub_link
        self._settings = settings = settings or UplinkSettings()
        self._max_messages = max_messages
        self._command_timeout_s = command_timeout_s
        self._client = MqttClient(
            host,
            port,
            client_id=gateway_id,
            on_message=self._on_message,
            username=username,
            password=password,
            clean_session=settings.clean_session,
            keepalive_s=settings.keepalive_s,
            will=Will(
                topic_for(gateway_id, Channel.STATUS),
                encode(Status(online=False, reason="connection lost")),
            ),
            on_connect=self._on_connect,
            on_disconnect=self._on_disconnect,
            reconnect_min_s=settings.reconnect_min_s,
            reconnect_max_s=settings.reconnect_max_s,
            tls=tls,
            websocket_path=websocket_path,
        )
        self._file = OutboxFile(data_dir / _OUTBOXES)
        self._own = self._new_child(gateway_id)
        self._children: dict[str, Child] = {}
        self._topics: dict[str, tuple[Child, Channel]] = {}
        self._lan: Lan | None = None
        self._relay: Relay | None = None
        self._reported: dict[str, tuple[str, ...]] = {}  # child -> last catalog reported
        self._started = False  # the first round of subscriptions is done
        self._tasks: list[asyncio.Task[None]] = []
        self._creating = asyncio.Lock()
        self._answered: OrderedDict[str, Reply] = OrderedDict()  # the gateway's own commands
        self._throttle = LogThrottle()
        self.stats = GatewayStats()

    def serve(self, lan: Lan) -> None:
        """Run the hub's commands for children through ``lan``."""
        self._lan = lan
        self._relay = Relay(lan, self._publish_reply, self._report_state, self._command_timeout_s)

    # -- life cycle ------------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        known = await self._file.open()
        await self._open(self._own)
        for child_id in known:  # backlogs of children from before a restart drain at once
            if child_id != self.gateway_id:
                await self._child(child_id)
        self._tasks = [
            asyncio.create_task(self._connect(), name="gateway-connect"),
            asyncio.create_task(self._retry_subscriptions(), name="gateway-subscribe"),
        ]
        for task in self._tasks:
            task.add_done_callback(log_if_failed)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Say goodbye (the gateway's retained offline status: its children read unreachable),
        commit every outbox and disconnect. Idempotent."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for child in [*self._children.values(), self._own]:
            await child.close()
        await self._file.close()
        if self._client.connected:
            status = Status(online=False, ts=now_ms(), reason="gateway stopped")
            self._publish_status(self.gateway_id, status)
            with contextlib.suppress(MqttError, TimeoutError):
                async with asyncio.timeout(_STOP_FLUSH_S):
                    await self._client.flushed()
        await self._client.close()

    def backlog(self) -> int:
        """Reports of every child and of the gateway held until the hub stores them."""
        children = [*self._children.values(), self._own]
        return sum(child.outbox.stats.depth + child.outbox.pending for child in children)

    # -- ports.Uplink ----------------------------------------------------------------------
    async def controller_online(self, info: ControllerInfo) -> None:
        """The child's status goes online; its action catalog is reported when it changed."""
        child = await self._child(info.controller_id, LINKED)
        catalog = (repr(sorted(info.actions.items())), info.firmware)
        if self._reported.get(child.child_id) != catalog:
            self._reported[child.child_id] = catalog
            state: dict[str, Any] = {"actions": dict(info.actions)}
            if info.firmware:
                state["firmware"] = info.firmware
            child.reporter.state(state)
            await child.outbox.sync()

    async def controller_offline(self, controller_id: str, reason: str) -> None:
        """The child's status goes offline, saying why (the hub shows the reason)."""
        await self._child(controller_id, f"link lost: {reason}" if reason else "link lost")

    async def pairing_requested(self, controller_id: str, address: str) -> None:
        """An event of the gateway, durable on return; an admin approves it in the hub."""
        self._own.reporter.event(
            PAIRING_REQUESTED,
            "info",
            f"controller {controller_id} at {address} asks to pair",
            {"controller": controller_id[:256], "address": address[:256]},
        )
        await self._own.outbox.sync()

    async def report(
        self, controller_id: str, channel: ReportChannel, body: dict[str, Any]
    ) -> None:
        """Into the child's outbox; returns once it is on disk."""
        child = await self._child(controller_id)
        await child.report(channel, body)

    # -- children --------------------------------------------------------------------------
    def _new_child(self, child_id: str) -> Child:
        return Child(child_id, self._file, self._client, self._settings, self._max_messages)

    async def _child(self, child_id: str, link_state: str | None = None) -> Child:
        """The child ``child_id``, opened (and subscribed, when connected) on first use; with
        ``link_state``, its LAN link is that now (the hub hears it as the child's status).

        Raises:
            ValueError: ``child_id`` is not a valid device id.
        """
        child = self._children.get(child_id)
        if child is None:
            async with self._creating:  # one opening per child, however many ask at once
                child = self._children.get(child_id) or await self._create(child_id)
        if link_state is not None and link_state != child.state:
            child.state = link_state
            if child.link.ready:
                self._publish_child_status(child)
        return child

    async def _create(self, child_id: str) -> Child:
        try:
            check_device_id(child_id)
        except TopicError as exc:
            self.stats.bad_controller_ids += 1
            raise ValueError(f"controller id {child_id!r}: {exc}") from None
        child = self._new_child(child_id)
        await self._open(child)
        self._children[child_id] = child
        if self._started and self._client.connected:
            await self._subscribe(child)
        return child

    async def _open(self, child: Child) -> None:
        await child.open()
        for channel in (Channel.ACK, Channel.REJECT, Channel.CMD, Channel.DESIRED):
            self._topics[child.topics[channel]] = (child, channel)

    async def _subscribe(self, child: Child) -> None:
        """Subscribe to the child's hub → device channels; refused while the hub does not
        list it as this gateway's child (then tried again every few seconds)."""
        topics = child.topics
        filters = [
            (topics[Channel.ACK], 0),
            (topics[Channel.REJECT], 0),
            (topics[Channel.CMD], 1),
            (topics[Channel.DESIRED], 1),
        ]
        try:
            await self._client.subscribe(filters)
        except SubscribeRefused:
            self.stats.refused_subscriptions += 1
            held = self._throttle.due(("refused", child.child_id))
            if held is not None:
                log.warning(
                    "the hub does not list %s as a child of gateway %s yet (fieldhub device add "
                    "%s --parent %s); its reports wait in its outbox%s",
                    child.child_id,
                    self.gateway_id,
                    child.child_id,
                    self.gateway_id,
                    held_back(held),
                )
            return
        except MqttError as exc:  # lost before SUBACK: subscribed again on reconnection
            log.debug("subscription for %s interrupted: %s", child.child_id, exc)
            return
        child.link.subscribed = True
        if child is self._own:
            self._announce("gateway started")
            child.reporter.state({"actions": _GATEWAY_ACTIONS})
        else:
            self._publish_child_status(child)
        child.sender.poke()

    async def _retry_subscriptions(self) -> None:
        while True:
            await asyncio.sleep(_RETRY_SUBSCRIBE_S)
            if not (self._started and self._client.connected):
                continue
            for child in [self._own, *self._children.values()]:
                if not child.link.subscribed:
                    await self._subscribe(child)

    # -- the connection --------------------------------------------------------------------
    async def _connect(self) -> None:
        """Connect until it works, then subscribe (the gateway first: its status goes out
        before any child's); the client reconnects by itself after."""
        delay = self._settings.reconnect_min_s
        while True:
            try:
                await self._client.connect(self._settings.connect_timeout_s)
                break
            except ConnectRefused as exc:
                held = self._throttle.due("refused")
                if held is not None:
                    log.error(
                        "the broker %s refused gateway %s: %s; reports are kept meanwhile%s",
                        self._client.address,
                        self.gateway_id,
                        exc,
                        held_back(held),
                    )
            except (OSError, TimeoutError) as exc:
                held = self._throttle.due("connect")
                if held is not None:
                    log.warning(
                        "cannot reach the broker %s (%s); reports are kept meanwhile%s",
                        self._client.address,
                        exc,
                        held_back(held),
                    )
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, self._settings.reconnect_max_s)
        for child in [self._own, *self._children.values()]:
            await self._subscribe(child)
        self._started = True

    def _on_connect(self) -> None:
        if self._on_hub_link is not None:
            self._on_hub_link(True)
        if not self._started:
            return  # _connect subscribes and announces the first time
        # The client subscribed again to what the broker granted before: say how things are.
        self._announce("reconnected")
        for child in [self._own, *self._children.values()]:
            if child.link.subscribed:
                if child is not self._own:
                    self._publish_child_status(child)
                child.sender.send_window()
                child.sender.poke()

    def _on_disconnect(self, exc: BaseException | None) -> None:
        if self._on_hub_link is not None:
            self._on_hub_link(False)
        for child in [self._own, *self._children.values()]:
            child.sender.wake()

    def _announce(self, reason: str) -> None:
        self._publish_status(self.gateway_id, Status(online=True, ts=now_ms(), reason=reason))

    def _publish_child_status(self, child: Child) -> None:
        """The child's retained status, as its LAN link is; nothing before the LAN side has
        said (a child known from its outbox after a restart): the hub keeps it unreachable
        meanwhile, which is the truth, where "offline" would raise an alarm per child."""
        if child.state == NOT_YET_LINKED:
            return
        linked = child.state == LINKED
        reason = f"linked to gateway {self.gateway_id}" if linked else child.state
        status = Status(online=linked, ts=now_ms(), reason=f"{reason}"[:256])
        self._publish_status(child.child_id, status)

    def _publish_status(self, device_id: str, status: Status) -> None:
        topic = topic_for(device_id, Channel.STATUS)
        self._client.publish(topic, encode(status), qos=1, retain=True)

    # -- from the hub ----------------------------------------------------------------------
    def _on_message(self, topic: str, payload: bytes) -> None:
        found = self._topics.get(topic)
        if found is None:
            return
        child, channel = found
        try:
            if channel is Channel.ACK:
                child.sender.on_ack(decode(Channel.ACK, payload))
            elif channel is Channel.REJECT:
                child.sender.on_reject(decode(Channel.REJECT, payload))
            elif channel is Channel.CMD:
                command = decode(Channel.CMD, payload)
                if child is self._own:
                    self._gateway_command(command.id, command.action, command.args, command.reply)
                elif self._relay is not None:
                    self._relay.on_command(child.child_id, command)
            elif channel is Channel.DESIRED and payload and child is not self._own:
                self._desired(child.child_id, payload)  # a gateway has nothing to converge to
        except PayloadError as exc:
            self.stats.invalid_inbound += 1
            held = self._throttle.due(("inbound", topic))
            if held is not None:
                log.warning(
                    "ignored a message from the hub on %s: %s%s", topic, exc, held_back(held)
                )

    def _desired(self, child_id: str, payload: bytes) -> None:
        if self._relay is not None:
            self._relay.on_desired(child_id, decode(Channel.DESIRED, payload))

    def _gateway_command(
        self, command_id: str, action: str, args: dict[str, Any], reply_to: str
    ) -> None:
        task = asyncio.create_task(
            self._run_gateway_command(command_id, action, args, reply_to),
            name="gateway-command",
        )
        task.add_done_callback(log_if_failed)

    async def _run_gateway_command(
        self, command_id: str, action: str, args: dict[str, Any], reply_to: str
    ) -> None:
        """The gateway's own actions. A redelivered id gets the first answer again: a second
        approval would find nothing waiting and say so, though the first one worked."""
        answered = self._answered.get(command_id)
        if answered is not None:
            self._publish_reply(self.gateway_id, reply_to, answered)
            return
        controller = args.get("controller")
        if action != APPROVE_PAIRING or not isinstance(controller, str):
            error = f"unknown action {action!r}" if action != APPROVE_PAIRING else "no controller"
            reply = Reply(id=command_id, ok=False, ts=now_ms(), error=error)
        elif self._lan is None or not await self._lan.approve_pairing(controller):
            error = f"no pairing request from {controller!r} is waiting"
            reply = Reply(id=command_id, ok=False, ts=now_ms(), error=error[:1024])
        else:
            reply = Reply(id=command_id, ok=True, ts=now_ms(), result={"approved": controller})
        self._answered[command_id] = reply
        while len(self._answered) > _ANSWERS_KEPT:
            self._answered.popitem(last=False)
        self._publish_reply(self.gateway_id, reply_to, reply)

    def _publish_reply(self, device_id: str, instance: str, reply: Reply) -> None:
        topic = topic_for(device_id, Channel.REPLY, instance)
        self._client.publish(topic, encode(reply), qos=1)

    def _report_state(self, child_id: str, changes: Mapping[str, StateValue]) -> None:
        child = self._children.get(child_id)
        if child is not None:
            child.reporter.state(changes)
