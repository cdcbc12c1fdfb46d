"""Which broker the hub uses, started and secured: the embedded one, or Mosquitto.

The hub's own MQTT identity is ``hub:<instance>`` with a password made fresh at every start
(``keyring.hub_identity``). The embedded broker gets a :class:`~fieldhub.hub.broker.keyring.KeyRing`
with that identity and every stored device key. On Mosquitto the hub logs in as the
dynamic-security admin named in the broker URL (``mqtt://admin:password@host:port``), sets its
own client and password, and reconciles the device clients with the store
(``fieldhub.hub.broker.dynsec``). The admin password appears in no log and no error message.
"""

from __future__ import annotations

import ssl
from contextlib import AsyncExitStack
from dataclasses import dataclass

from fieldhub.hub.broker.dynsec import DynSec, DynSecError, MosquittoAccess
from fieldhub.hub.broker.embedded import EmbeddedBroker, TlsListener
from fieldhub.hub.broker.identities import (
    BrokerAccess,
    EmbeddedAccess,
    StoreOnlyAccess,
    admin_identity,
    public_url,
)
from fieldhub.hub.broker.keyring import KeyRing, MqttIdentity
from fieldhub.hub.config import HubSettings
from fieldhub.hub.store.credentials import CredentialStore
from fieldhub.mqtt import MqttError
from fieldhub.mqtt.address import broker_address

__all__ = ["BrokerStartError", "StartedBroker", "open_access", "start_broker"]


class BrokerStartError(RuntimeError):
    """The broker cannot be started or managed; the text says what to change."""


@dataclass(frozen=True, slots=True)
class StartedBroker:
    """The broker in use: the embedded one (or None), how to tell it about keys, its URL."""

    embedded: EmbeddedBroker | None
    access: BrokerAccess
    url: str  # mqtt://host:port, without credentials: for devices, logs and health


async def start_broker(
    settings: HubSettings,
    stack: AsyncExitStack,
    identity: MqttIdentity,
    credentials: CredentialStore,
) -> StartedBroker:
    """Start the embedded broker or connect to Mosquitto's dynamic security, on ``stack``.

    Raises:
        BrokerStartError: the port is taken, the broker URL names no admin, Mosquitto cannot
            be reached, refuses the admin, or has no dynamic-security plugin.
    """
    if settings.broker is None:
        host, port = settings.mqtt_address
        keyring = KeyRing(identity)
        keyring.replace(await credentials.keys())
        broker = EmbeddedBroker(
            host, port, access=keyring, data_dir=settings.data, tls=_tls_listener(settings)
        )
        try:
            embedded = await stack.enter_async_context(broker)
        except OSError as exc:
            raise BrokerStartError(
                f"the embedded MQTT broker cannot listen on {host}:{port} "
                f"({exc.strerror or exc}): choose another --mqtt HOST:PORT, or use an "
                "external broker with --broker"
            ) from exc
        return StartedBroker(embedded, EmbeddedAccess(keyring, embedded.kick), embedded.url)
    access = await _mosquitto(settings.broker, stack, settings.broker_tls())
    try:
        await access.ensure_hub(identity)
        await access.reconcile(credentials.keys)
    except DynSecError as exc:
        raise BrokerStartError(str(exc)) from exc
    return StartedBroker(None, access, public_url(settings.broker))


async def open_access(settings: HubSettings, stack: AsyncExitStack) -> BrokerAccess:
    """How a process other than the hub (the CLI) tells the broker about keys it changes.

    With the embedded broker that is the running hub's job (it notices within a second);
    with Mosquitto the caller talks to dynamic security itself, since only it knows the new
    secret.

    Raises:
        BrokerStartError: as for :func:`start_broker`.
    """
    if settings.broker is None:
        return StoreOnlyAccess()
    return await _mosquitto(settings.broker, stack, settings.broker_tls())


def _tls_listener(settings: HubSettings) -> TlsListener | None:
    """The embedded broker's TLS listener (``mqtts``, ``mqtt_cert``, ``mqtt_key``), if set.

    Raises:
        BrokerStartError: the certificate or key cannot be loaded, or do not match.
    """
    address = settings.mqtts_address
    if address is None or settings.mqtt_cert is None or settings.mqtt_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(settings.mqtt_cert, settings.mqtt_key)
    except (OSError, ssl.SSLError) as exc:
        raise BrokerStartError(
            f"mqtt_cert/mqtt_key: cannot load {settings.mqtt_cert} with {settings.mqtt_key}: {exc}"
        ) from None
    return TlsListener(*address, context)


async def _mosquitto(
    url: str, stack: AsyncExitStack, tls: ssl.SSLContext | None
) -> MosquittoAccess:
    address = broker_address(url)
    where = f"{address.host}:{address.port}"
    admin = admin_identity(url)
    if admin is None:
        raise BrokerStartError(
            f"the broker URL {public_url(url)} names no user: fieldhub manages device "
            "credentials in Mosquitto's dynamic-security plugin and needs its admin, as "
            "mqtt://ADMIN:PASSWORD@host:port"
        )
    try:
        dynsec = await stack.enter_async_context(DynSec(address.host, address.port, admin, tls=tls))
    except (MqttError, OSError, TimeoutError) as exc:
        raise BrokerStartError(
            f"cannot connect to the MQTT broker at {where} as {admin.username!r}: {exc}"
        ) from exc
    return MosquittoAccess(dynsec)
