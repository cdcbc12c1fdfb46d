"""Which broker the hub uses, started and secured: its managed Mosquitto, the embedded one, or
an external Mosquitto.

Without ``--broker`` the hub runs a Mosquitto child of its own where the binary is installed
(``managed.py``), else the embedded amqtt broker, and says which in its log;
``FIELDHUB_LOCAL_BROKER`` insists on one (``mosquitto``: no fallback; ``embedded``).
The hub's own MQTT identity is ``hub:<instance>`` with a password made fresh at every start
(``keyring.hub_identity``). The embedded broker gets a :class:`~fieldhub.hub.broker.keyring.KeyRing`
with that identity and every stored device key. On Mosquitto the hub logs in as the
dynamic-security admin named in the broker URL (``mqtt://admin:password@host:port``), sets its
own client and password, and reconciles the device clients with the store
(``fieldhub.hub.broker.dynsec``). The admin password appears in no log and no error message.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from contextlib import AsyncExitStack
from dataclasses import dataclass
from functools import partial
from typing import Literal

from fieldhub.hub.broker.client_certs import verify_devices, watch_revocations
from fieldhub.hub.broker.device_ca import DeviceCa
from fieldhub.hub.broker.dynsec import DynSec, DynSecError, MosquittoAccess
from fieldhub.hub.broker.embedded import EmbeddedBroker, TlsListener, WebSocketListener
from fieldhub.hub.broker.identities import (
    BrokerAccess,
    EmbeddedAccess,
    StoreOnlyAccess,
    admin_identity,
    public_url,
)
from fieldhub.hub.broker.keyring import KeyRing, MqttIdentity
from fieldhub.hub.broker.managed import (
    Installation,
    ManagedMosquitto,
    MosquittoFailed,
    find_mosquitto,
)
from fieldhub.hub.broker.mosquitto_files import AdminFile, Listener
from fieldhub.hub.config import HubSettings
from fieldhub.hub.store.credentials import CredentialStore
from fieldhub.mqtt import MqttError
from fieldhub.mqtt.address import broker_address

__all__ = [
    "BrokerKind",
    "BrokerStartError",
    "StartedBroker",
    "manages_mosquitto",
    "open_access",
    "start_broker",
]

log = logging.getLogger(__name__)

BrokerKind = Literal["managed-mosquitto", "embedded", "external"]


class BrokerStartError(RuntimeError):
    """The broker cannot be started or managed; the text says what to change."""


@dataclass(frozen=True, slots=True)
class StartedBroker:
    """The broker in use: which kind, the embedded or managed one (or None), how to tell it
    about keys, its URL."""

    kind: BrokerKind
    embedded: EmbeddedBroker | None
    managed: ManagedMosquitto | None
    access: BrokerAccess
    url: str  # mqtt://host:port, without credentials: for devices, logs and health


async def start_broker(
    settings: HubSettings,
    stack: AsyncExitStack,
    identity: MqttIdentity,
    credentials: CredentialStore,
) -> StartedBroker:
    """Start the managed Mosquitto or the embedded broker, or connect to an external
    Mosquitto's dynamic security, on ``stack``.

    Raises:
        BrokerStartError: the port is taken, the managed Mosquitto does not start (or is
            missing and insisted on), the broker URL names no admin, Mosquitto cannot be
            reached, refuses the admin, or has no dynamic-security plugin.
    """
    if settings.broker is None:
        managed = await _managed(settings, stack)
        if managed is not None:
            access = await _secured(managed.admin_url, stack, identity, credentials)
            return StartedBroker("managed-mosquitto", None, managed, access, managed.url)
        if settings.cluster_group is not None:
            raise BrokerStartError(
                "cluster_group: hubs of a cluster share ingest through the broker's shared "
                "subscriptions ($share/…), which the embedded amqtt broker does not do: "
                "install Mosquitto (the hub then runs its own) or give --broker"
            )
        host, port = settings.mqtt_address
        keyring = KeyRing(identity)
        keyring.replace(await credentials.keys())
        context = _server_context(settings)
        broker = EmbeddedBroker(
            host,
            port,
            access=keyring,
            data_dir=settings.data,
            tls=_tls_listener(settings, _server_context(settings, check_devices=True)),
            websockets=_websocket_listeners(settings, context),
        )
        try:
            embedded = await stack.enter_async_context(broker)
        except OSError as exc:
            raise BrokerStartError(
                f"the embedded MQTT broker cannot listen on {host}:{port} "
                f"({exc.strerror or exc}): choose another --mqtt HOST:PORT, or use an "
                "external broker with --broker"
            ) from exc
        if settings.mqtt_client_certs != "off":
            _watch_revocations(settings, embedded, stack)
        keys = EmbeddedAccess(keyring, embedded.kick)
        return StartedBroker("embedded", embedded, None, keys, embedded.url)
    access = await _secured(settings.broker, stack, identity, credentials, settings.broker_tls())
    return StartedBroker("external", None, None, access, public_url(settings.broker))


async def _secured(
    url: str,
    stack: AsyncExitStack,
    identity: MqttIdentity,
    credentials: CredentialStore,
    tls: ssl.SSLContext | None = None,
) -> MosquittoAccess:
    """Mosquitto's dynamic security, with this hub's client and the store's device clients
    (``tls`` for an ``mqtts://`` one; the managed Mosquitto's admin listens on loopback)."""
    access = await _mosquitto(url, stack, tls)
    try:
        await access.ensure_hub(identity)
        await access.reconcile(credentials.keys)
    except DynSecError as exc:
        raise BrokerStartError(str(exc)) from exc
    return access


def manages_mosquitto(settings: HubSettings) -> bool:
    """Whether a hub with ``settings`` runs its own Mosquitto (no ``--broker``, one installed,
    not told to run the embedded broker)."""
    if settings.broker is not None or settings.local_broker == "embedded":
        return False
    return not isinstance(find_mosquitto(settings.mosquitto_bin), str)


def _installation(settings: HubSettings) -> Installation | None:
    """The Mosquitto a hub without ``--broker`` manages, or None for the embedded broker.

    Raises:
        BrokerStartError: ``local_broker`` insists on Mosquitto, which is not installed.
    """
    if settings.local_broker == "embedded":
        return None
    if settings.mqtt_client_certs != "off":
        # Said here rather than running without the check the operator asked for.
        if settings.local_broker == "mosquitto":
            raise BrokerStartError(
                "mqtt_client_certs: the hub's managed Mosquitto does not check device "
                "certificates yet; run the embedded broker (FIELDHUB_LOCAL_BROKER=auto or "
                "embedded)"
            )
        return None
    found = find_mosquitto(settings.mosquitto_bin)
    if isinstance(found, str) and settings.local_broker == "mosquitto":
        raise BrokerStartError(
            f"{found}: install it, or run the embedded broker (FIELDHUB_LOCAL_BROKER=embedded)"
        )
    return None if isinstance(found, str) else found


async def _managed(settings: HubSettings, stack: AsyncExitStack) -> ManagedMosquitto | None:
    """Start the hub's own Mosquitto where there is one; None (said in the log) where not."""
    installation = _installation(settings)
    if installation is None:
        if settings.mqtt_client_certs != "off":
            log.info("mqtt_client_certs: the hub runs its embedded broker, which checks them")
        elif settings.local_broker == "auto":
            why = find_mosquitto(settings.mosquitto_bin)
            log.warning("%s: the hub runs its embedded amqtt broker (about 25 times slower)", why)
        return None
    host, port = settings.mqtt_address
    folder = settings.data / "mosquitto"
    _server_context(settings)  # a certificate or key that does not load is named here
    listeners = _managed_listeners(settings)
    try:
        return await stack.enter_async_context(
            ManagedMosquitto(installation, folder, host, port, listeners)
        )
    except (MosquittoFailed, OSError) as exc:
        raise BrokerStartError(
            f"the hub's Mosquitto on {host}:{port} did not start: {exc}. Free the port or "
            "choose another (--mqtt), or run the embedded broker (FIELDHUB_LOCAL_BROKER=embedded)"
        ) from exc


async def open_access(settings: HubSettings, stack: AsyncExitStack) -> BrokerAccess:
    """How a process other than the hub (the CLI) tells the broker about keys it changes.

    With the embedded broker that is the running hub's job (it notices within a second);
    with Mosquitto the caller talks to dynamic security itself, since only it knows the new
    secret: to the hub's managed Mosquitto while the hub runs (``admin.json``), or, while it
    does not, to that broker started for the moment on a free loopback port.

    Raises:
        BrokerStartError: as for :func:`start_broker`.
    """
    if settings.broker is not None:
        return await _mosquitto(settings.broker, stack, settings.broker_tls())
    installation = _installation(settings)
    if installation is None:
        return StoreOnlyAccess()
    folder = settings.data / "mosquitto"
    running = AdminFile.running(folder)
    if running is not None:
        return await _mosquitto(running.url, stack, None)
    try:
        managed = await stack.enter_async_context(
            ManagedMosquitto(installation, folder, "127.0.0.1", 0)
        )
    except (MosquittoFailed, OSError) as exc:
        raise BrokerStartError(f"the hub's Mosquitto did not start: {exc}") from exc
    return await _mosquitto(managed.admin_url, stack, None)


def _server_context(settings: HubSettings, *, check_devices: bool = False) -> ssl.SSLContext | None:
    """The TLS listeners' server context (``mqtt_cert``, ``mqtt_key``), None without them;
    with ``check_devices``, client certificates as ``mqtt_client_certs`` says.

    Raises:
        BrokerStartError: the certificate or key cannot be loaded, or do not match.
    """
    if settings.mqtt_cert is None or settings.mqtt_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(settings.mqtt_cert, settings.mqtt_key)
    except (OSError, ssl.SSLError) as exc:
        raise BrokerStartError(
            f"mqtt_cert/mqtt_key: cannot load {settings.mqtt_cert} with {settings.mqtt_key}: {exc}"
        ) from None
    if check_devices:
        verify_devices(context, DeviceCa(settings.device_ca_folder), settings.mqtt_client_certs)
    return context


def _watch_revocations(
    settings: HubSettings, broker: EmbeddedBroker, stack: AsyncExitStack
) -> None:
    """Apply certificate revocations to the running listener, until the broker stops."""

    def new_context() -> ssl.SSLContext:
        context = _server_context(settings, check_devices=True)
        assert context is not None  # mqtt_client_certs needs mqtts, hence the certificate
        return context

    ca = DeviceCa(settings.device_ca_folder)
    task = asyncio.create_task(watch_revocations(ca, broker, new_context), name="revocations")
    stack.push_async_callback(partial(_cancel, task))


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def _tls_listener(settings: HubSettings, context: ssl.SSLContext | None) -> TlsListener | None:
    """The embedded broker's TLS listener (``mqtts``), if set."""
    address = settings.mqtts_address
    return None if address is None or context is None else TlsListener(*address, context)


def _websocket_listeners(
    settings: HubSettings, context: ssl.SSLContext | None
) -> list[WebSocketListener]:
    """The embedded broker's WebSocket listeners (``mqtt_ws``, ``mqtt_wss``), if set."""
    path = settings.mqtt_ws_path
    listeners = []
    if (plain := settings.mqtt_ws_address) is not None:
        listeners.append(WebSocketListener(*plain, path))
    if (secure := settings.mqtt_wss_address) is not None and context is not None:
        listeners.append(WebSocketListener(*secure, path, context))
    return listeners


def _managed_listeners(settings: HubSettings) -> list[Listener]:
    """The managed Mosquitto's listeners besides the main one: ``mqtts`` from
    ``deploy/mosquitto/tls.conf``, ``mqtt_ws`` and ``mqtt_wss`` as ``protocol websockets``."""
    cert, key = settings.mqtt_cert, settings.mqtt_key
    listeners = []
    if (tls := settings.mqtts_address) is not None:
        listeners.append(Listener(*tls, cert=cert, key=key))
    if (plain := settings.mqtt_ws_address) is not None:
        listeners.append(Listener(*plain, websockets=True))
    if (secure := settings.mqtt_wss_address) is not None:
        listeners.append(Listener(*secure, websockets=True, cert=cert, key=key))
    return listeners


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
