"""What the embedded broker admits: the CONNECT check, and amqtt's plugins.

A CONNECT is read whole, found sound (``packets``) and checked here before amqtt sees it (see
``embedded`` for why):
client id and user name free of ``+ # / $`` and NUL, credentials that prove a principal of
the access policy, and a last will only on a topic that principal may publish to.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from amqtt.adapters import BufferReader
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.mqtt.connect import ConnectPacket
from amqtt.plugins.base import BaseAuthPlugin
from amqtt.plugins.logging_amqtt import PacketLoggerPlugin
from amqtt.session import Session

from fieldhub.hub.broker.keyring import AccessPolicy, BrokerPrincipal
from fieldhub.protocol.acl import is_safe_identifier

__all__ = [
    "Admission",
    "DeviceAuthPlugin",
    "RedactingPacketLogger",
    "admit",
    "broker_plugins",
]

MAX_CONNECT_BYTES = 65_536  # a CONNECT is read in full before anyone is authenticated
# CONNACK return codes of MQTT 3.1.1 §3.2.2.3.
IDENTIFIER_REJECTED = 2
NOT_AUTHORIZED = 5


@dataclass(frozen=True, slots=True)
class Admission:
    """The verdict on one CONNECT: a principal, or the CONNACK code and why (for the log)."""

    client_id: str
    username: str | None
    principal: BrokerPrincipal | None
    refusal: int = 0
    why: str = ""


async def admit(raw: bytes, access: AccessPolicy) -> Admission | None:
    """Check the CONNECT ``raw`` against ``access``; None when it cannot be parsed."""
    try:
        packet = await ConnectPacket.from_stream(BufferReader(raw))
    except (AMQTTError, MQTTError, NoDataError, ValueError):
        return None
    client_id = "" if packet.client_id_is_random else (packet.client_id or "")
    username = packet.username if packet.username_flag else None
    password = packet.password if packet.password_flag else None

    def refused(why: str, code: int = NOT_AUTHORIZED) -> Admission:
        return Admission(client_id, username, None, code, why)

    if not client_id or not is_safe_identifier(client_id):
        return refused("client id empty or holding + # / $ or NUL", IDENTIFIER_REJECTED)
    if username is None:
        return refused("no user name (anonymous connections are refused)")
    if not is_safe_identifier(username):
        return refused("user name holding + # / $ or NUL")
    principal = access.authenticate(client_id, username, password)
    if principal is None:
        return refused(f"user {username!r}: unknown, wrong secret, expired, or not its client id")
    if packet.will_flag and not principal.may_publish(packet.will_topic or ""):
        return refused(f"last will on {packet.will_topic!r}, which it may not publish to")
    return Admission(client_id, username, principal)


class DeviceAuthPlugin(BaseAuthPlugin):  # type: ignore[misc]  # amqtt ships no type hints
    """amqtt's view of the hub's access policy: it asks this plugin whether a session may stay.

    ``EmbeddedBroker`` has refused bad credentials before amqtt saw the CONNECT; this check
    runs again inside amqtt (amqtt refuses everyone without an auth plugin), and marks the
    session as not anonymous. That matters: amqtt keeps QoS 1 messages for a disconnected
    persistent session (``clean_session=False``) only when it is not anonymous.
    """

    @dataclass
    class Config:
        """``access``: the :class:`~fieldhub.hub.broker.keyring.AccessPolicy` to ask."""

        access: Any = None

    async def authenticate(self, *, session: Session) -> bool:
        """True when the session's credentials still prove a principal."""
        access: AccessPolicy | None = self.config.access
        if access is None:
            return False
        principal = access.authenticate(session.client_id, session.username, session.password)
        session.is_anonymous = principal is None
        return principal is not None


class RedactingPacketLogger(PacketLoggerPlugin):  # type: ignore[misc]
    """amqtt's packet logger (DEBUG), but a CONNECT is logged without its password."""

    async def on_mqtt_packet_received(self, *, packet: Any, session: Session | None = None) -> None:
        """Log ``packet``; of a CONNECT only client id and user name."""
        if isinstance(packet, ConnectPacket):
            if self.context.logger.isEnabledFor(logging.DEBUG):
                self.context.logger.debug(
                    "<-in-- CONNECT client_id=%r username=%r", packet.client_id, packet.username
                )
            return
        await super().on_mqtt_packet_received(packet=packet, session=session)


def broker_plugins(access: AccessPolicy, *, debug: bool = False) -> dict[str, dict[str, Any]]:
    """The amqtt plugins of the hub's broker: dotted class path to the plugin's configuration.

    amqtt builds each plugin's ``Config`` dataclass from the given mapping; a field typed
    ``Any`` carries the live access policy. Topic checks are not a plugin: amqtt runs plugin
    checks as one task per check, for every publish and every delivery, and never checks the
    retained messages it replays; ``_Broker`` checks directly instead. amqtt's ``$SYS`` and
    event-logging plugins are left out on purpose (they cost a task per event), the packet
    logger runs only with ``debug``.

    Args:
        access: who may connect, and what they may do.
        debug: also log every MQTT packet (at DEBUG, passwords left out).
    """
    plugins: dict[str, dict[str, Any]] = {
        f"{__name__}.{DeviceAuthPlugin.__name__}": {"access": access}
    }
    if debug:
        plugins[f"{__name__}.{RedactingPacketLogger.__name__}"] = {}
    return plugins
