"""Device identity on Mosquitto: the hub manages its dynamic-security plugin.

Mosquitto's dynamic-security plugin takes JSON commands on ``$CONTROL/dynamic-security/v1``
and answers on ``.../response`` (https://mosquitto.org/documentation/dynamic-security/). The
hub connects there with the admin identity from its broker URL and keeps Mosquitto in step with
its store:

- per device, a role ``fieldhub-device:<id>`` granting exactly that device's topics (from
  ``fieldhub.protocol.acl``), and one client per key: user name ``<id>.<key id>``, the secret
  as password, ``clientid`` pinned to the device id, that one role;
- for each hub process, the client ``hub:<instance>`` with the role ``fieldhub-hub``.

Mosquitto keeps only its own (PBKDF2) hash of each password and takes passwords only in
clear, and the hub's store keeps only SHA-256 digests: so a client can be created only at the
moment its secret exists, when a key is issued. Reconciliation at start can delete what the
store no longer knows and fix roles, but cannot recreate a lost client; it reports such keys
(rotate them). The hub touches only what it owns: clients whose user name has the device
shape *and* hold their device's ``fieldhub-device:`` role, and roles with that prefix.
Several hubs with *different* stores must therefore not share one Mosquitto.

Deleting a client makes Mosquitto disconnect every connection logged in with it: revocation
and expiry take effect at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import ssl
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from fieldhub.clock import now_ms
from fieldhub.hub.broker.keyring import MqttIdentity
from fieldhub.hub.store.credentials import CredentialKey, IssuedCredentials, split_username
from fieldhub.mqtt import MqttClient
from fieldhub.protocol import acl

__all__ = [
    "DEVICE_ROLE_PREFIX",
    "HUB_ROLE",
    "DynSec",
    "DynSecError",
    "MosquittoAccess",
    "ReconcileReport",
    "device_role",
    "device_role_acls",
    "hub_role_acls",
]

log = logging.getLogger(__name__)

_TOPIC = "$CONTROL/dynamic-security/v1"
_RESPONSE = f"{_TOPIC}/response"
_TIMEOUT_S = 10.0
_BATCH = 200  # commands per message
_MISSING_AFTER_MS = 30_000  # a key younger than this may be in the middle of being granted
DEVICE_ROLE_PREFIX = "fieldhub-device:"
HUB_ROLE = "fieldhub-hub"

Command = dict[str, Any]


class DynSecError(RuntimeError):
    """Mosquitto's dynamic-security plugin refused a command or did not answer."""


def device_role(device_id: str) -> str:
    """The dynamic-security role of one device."""
    return f"{DEVICE_ROLE_PREFIX}{device_id}"


def _acl(acltype: str, topic: str) -> dict[str, Any]:
    return {"acltype": acltype, "topic": topic, "priority": 0, "allow": True}


def device_role_acls(device_id: str, children: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Exactly the device's own channels (and a gateway's children's): publish device→hub,
    subscribe to and receive hub→device (subscriptions matched literally, so ``#`` and other
    wildcards are refused)."""
    children = sorted(children)
    receive = acl.device_subscribe_filters(device_id, children)
    publish = acl.device_publish_filters(device_id, children)
    return [
        *(_acl("publishClientSend", topic) for topic in publish),
        *(_acl("subscribeLiteral", topic) for topic in receive),
        *(_acl("publishClientReceive", topic) for topic in receive),
    ]


def hub_role_acls() -> list[dict[str, Any]]:
    """Publish every device's hub→device channels; subscribe to and receive the whole tree,
    also through a shared subscription (Mosquitto checks ``$share/<group>/…`` as written)."""
    return [
        *(_acl("publishClientSend", topic) for topic in acl.hub_publish_filters()),
        _acl("subscribePattern", acl.TREE_FILTER),
        _acl("subscribePattern", f"$share/+/{acl.TREE_FILTER}"),
        _acl("publishClientReceive", acl.TREE_FILTER),
    ]


def _same_acls(have: Iterable[dict[str, Any]], want: Iterable[dict[str, Any]]) -> bool:
    def key(item: dict[str, Any]) -> tuple[str, str, bool]:
        return (str(item.get("acltype")), str(item.get("topic")), bool(item.get("allow")))

    return sorted(map(key, have)) == sorted(map(key, want))


class DynSec:
    """A connection to Mosquitto's dynamic-security control topic, as its admin.

    Responses go to every subscriber of the response topic (another hub, the CLI); commands
    carry a correlation id of this connection, so each side takes only its own answers.

    Args:
        host: Mosquitto's address.
        port: its MQTT port.
        admin: user name and password of a dynamic-security admin (the client id is ignored:
            a random one is used so that several processes can manage the same broker).
        tls: for an ``mqtts://`` broker (``HubSettings.broker_tls``).

    Raises:
        fieldhub.mqtt.MqttError: on entry, when Mosquitto refuses the admin (wrong password).
        OSError: on entry, when Mosquitto cannot be reached.
    """

    def __init__(
        self, host: str, port: int, admin: MqttIdentity, *, tls: ssl.SSLContext | None = None
    ) -> None:
        self._prefix = secrets.token_hex(6)
        self._counter = 0
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._client = MqttClient(
            host,
            port,
            client_id=f"fieldhub-admin-{self._prefix}",
            on_message=self._on_message,
            username=admin.username,
            password=admin.password,
            keepalive_s=30,
            tls=tls,
        )

    async def __aenter__(self) -> Self:
        try:
            await self._client.connect()
            await self._client.subscribe([(_RESPONSE, 1)])
        except BaseException:
            await self._client.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._client.close()
        for waiter in self._waiting.values():
            waiter.cancel()
        self._waiting.clear()

    def _on_message(self, topic: str, payload: bytes) -> None:
        try:
            responses = json.loads(payload)["responses"]
        except (ValueError, KeyError, TypeError):
            log.warning("unreadable answer on %s: %r", topic, payload[:200])
            return
        for response in responses:
            if not isinstance(response, dict):
                continue
            waiter = self._waiting.pop(str(response.get("correlationData")), None)
            if waiter is not None and not waiter.done():
                waiter.set_result(response)

    async def run(self, commands: list[Command], *, ok: Iterable[str] = ()) -> list[Command]:
        """Send ``commands`` and return Mosquitto's responses, in order.

        Args:
            commands: dynamic-security commands (``{"command": "createClient", ...}``).
            ok: error texts that are not failures here (``"Client not found"`` when deleting).

        Raises:
            DynSecError: a command failed (the message names it, never a password), or
                Mosquitto did not answer within 10 s (plugin not loaded, or the admin may not
                use the control topic).
        """
        tolerated = set(ok)
        responses: list[Command] = []
        for start in range(0, len(commands), _BATCH):
            responses += await self._run_batch(commands[start : start + _BATCH])
        for command, response in zip(commands, responses, strict=True):
            error = response.get("error")
            if error and error not in tolerated:
                what = command.get("username") or command.get("rolename") or ""
                raise DynSecError(
                    f"Mosquitto dynamic security refused {command['command']} {what}: {error}"
                )
        return responses

    async def _run_batch(self, commands: list[Command]) -> list[Command]:
        loop = asyncio.get_running_loop()
        waiters: list[asyncio.Future[dict[str, Any]]] = []
        sent = []
        for command in commands:
            self._counter += 1
            correlation = f"{self._prefix}-{self._counter}"
            waiter = loop.create_future()
            self._waiting[correlation] = waiter
            waiters.append(waiter)
            sent.append({**command, "correlationData": correlation})
        try:
            self._client.publish(_TOPIC, json.dumps({"commands": sent}).encode(), qos=1)
            async with asyncio.timeout(_TIMEOUT_S):
                return list(await asyncio.gather(*waiters))
        except TimeoutError:
            raise DynSecError(
                f"Mosquitto did not answer on {_TOPIC} within {_TIMEOUT_S:.0f} s: is the "
                "dynamic-security plugin loaded, and is the broker URL's user its admin?"
            ) from None
        finally:
            for item in sent:
                self._waiting.pop(item["correlationData"], None)


@dataclass(frozen=True, slots=True)
class ReconcileReport:
    """What a reconciliation changed in Mosquitto, and what it could not repair."""

    deleted_clients: list[str] = field(default_factory=list)
    deleted_roles: list[str] = field(default_factory=list)
    fixed_roles: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # keys in the store, absent in Mosquitto


class MosquittoAccess:
    """The hub's device keys, kept in Mosquitto's dynamic security (see the module doc)."""

    def __init__(self, dynsec: DynSec) -> None:
        self._dynsec = dynsec
        self._lock = asyncio.Lock()  # a reconciliation sees no half-made grant of ours
        self._children: dict[str, frozenset[str]] = {}  # gateway -> the children it speaks for

    async def ensure_hub(self, identity: MqttIdentity) -> None:
        """Create or update the hub role and this hub's client, with its new password."""
        role = {"rolename": HUB_ROLE, "textname": "fieldhub hub processes"}
        client = {
            "username": identity.username,
            "password": identity.password,
            "clientid": identity.client_id,
            "roles": [{"rolename": HUB_ROLE, "priority": 0}],
        }
        async with self._lock:
            await self._dynsec.run(
                [
                    {"command": "createRole", **role},
                    {"command": "modifyRole", "rolename": HUB_ROLE, "acls": hub_role_acls()},
                ],
                ok={"Role already exists"},
            )
            created = await self._dynsec.run(
                [{"command": "createClient", "textname": "fieldhub hub", **client}],
                ok={"Client already exists"},
            )
            if created[0].get("error"):
                await self._dynsec.run([{"command": "modifyClient", **client}])

    async def grant(self, issued: IssuedCredentials, device_keys: list[CredentialKey]) -> None:
        """Let the new key connect: the device's role (if new) and a client for the key.

        The device's older keys are left alone: Mosquitto knows no ends, so a rotated key is
        deleted when its grace period is over (``DeviceIdentities.expire``).
        """
        device_id = issued.device_id
        role = device_role(device_id)
        async with self._lock:
            await self._dynsec.run(
                [
                    {
                        "command": "createRole",
                        "rolename": role,
                        "textname": f"fieldhub device {device_id}",
                        "acls": device_role_acls(device_id, self._children.get(device_id, ())),
                    }
                ],
                ok={"Role already exists"},
            )
            await self._dynsec.run(
                [
                    {
                        "command": "createClient",
                        "username": issued.username,
                        "password": issued.secret,
                        "clientid": device_id,
                        "textname": f"fieldhub device {device_id}",
                        "roles": [{"rolename": role, "priority": 0}],
                    }
                ]
            )

    async def withdraw(self, usernames: Iterable[str], gone: Iterable[str] = ()) -> None:
        """Delete the clients of ``usernames`` (Mosquitto disconnects them) and the roles of
        the devices in ``gone``, which have no key left.

        A role some other client still holds is kept: Mosquitto 2.0.11 (Debian 12) crashes
        when a role in use is deleted, and a client the store does not know (made by hand, or
        by another hub on the same broker) may hold it. The next reconciliation removes it
        once it is unused.
        """
        deleting = set(usernames)
        roles = {device_role(d) for d in gone}
        commands: list[Command] = [
            {"command": "deleteClient", "username": username} for username in sorted(deleting)
        ]
        async with self._lock:
            if roles:
                listed = await self._dynsec.run(
                    [{"command": "listClients", "verbose": True, "count": -1, "offset": 0}]
                )
                for client in listed[0]["data"]["clients"]:
                    if str(client.get("username", "")) in deleting:
                        continue
                    for held in client.get("roles", []):
                        roles.discard(str(held.get("rolename", "")))
                commands += [{"command": "deleteRole", "rolename": r} for r in sorted(roles)]
            if commands:
                await self._dynsec.run(commands, ok={"Client not found", "Role not found"})

    async def refresh(self, load_keys: Callable[[], Awaitable[list[CredentialKey]]]) -> None:
        """Another process changed keys: reconcile (it deletes what was revoked meanwhile)."""
        await self.reconcile(load_keys)

    async def set_children(self, gateway_id: str, children: frozenset[str]) -> None:
        """The gateway's role covers exactly ``children`` from now on (reconciliations keep
        it so). A gateway with no key yet has no role: it gets one with its first key."""
        self._children[gateway_id] = children
        async with self._lock:
            await self._dynsec.run(
                [
                    {
                        "command": "modifyRole",
                        "rolename": device_role(gateway_id),
                        "acls": device_role_acls(gateway_id, children),
                    }
                ],
                ok={"Role not found"},
            )

    async def reconcile(
        self, load_keys: Callable[[], Awaitable[list[CredentialKey]]]
    ) -> ReconcileReport:
        """Make Mosquitto hold what the store holds, among what the hub owns.

        Mosquitto is listed *before* the store is read: a client found there was created
        after its key was stored (by this hub or by the CLI), so it is never taken for a
        stale one and deleted.
        """
        async with self._lock:
            listed = await self._dynsec.run(
                [
                    {"command": "listClients", "verbose": True, "count": -1, "offset": 0},
                    {"command": "listRoles", "verbose": True, "count": -1, "offset": 0},
                ]
            )
            keys = await load_keys()
            now = now_ms()
            valid = {key.username: key for key in keys if key.valid_at(now)}
            clients = {
                str(c["username"]): c for c in listed[0]["data"]["clients"] if _owned_client(c)
            }
            roles = {
                str(r["rolename"]): r
                for r in listed[1]["data"]["roles"]
                if str(r.get("rolename", "")).startswith(DEVICE_ROLE_PREFIX)
            }
            wanted_roles = {device_role(key.device_id): key.device_id for key in valid.values()}
            deleted_clients = sorted(set(clients) - set(valid))
            held = {  # roles a remaining client holds: never deleted (see withdraw)
                str(role.get("rolename", ""))
                for client in listed[0]["data"]["clients"]
                if str(client.get("username", "")) not in deleted_clients
                for role in client.get("roles", [])
            }
            deleted_roles = sorted(set(roles) - set(wanted_roles) - held)
            commands: list[Command] = [
                {"command": "deleteClient", "username": u} for u in deleted_clients
            ]
            commands += [{"command": "deleteRole", "rolename": r} for r in deleted_roles]
            fixed_roles = []
            for role, device_id in sorted(wanted_roles.items()):
                want = device_role_acls(device_id, self._children.get(device_id, ()))
                if role not in roles:
                    commands.append({"command": "createRole", "rolename": role, "acls": want})
                elif not _same_acls(roles[role].get("acls", []), want):
                    commands.append({"command": "modifyRole", "rolename": role, "acls": want})
                else:
                    continue
                fixed_roles.append(role)
            await self._dynsec.run(
                commands, ok={"Client not found", "Role not found", "Role already exists"}
            )
        report = ReconcileReport(
            deleted_clients=deleted_clients,
            deleted_roles=deleted_roles,
            fixed_roles=fixed_roles,
            missing=sorted(
                name
                for name, key in valid.items()
                if name not in clients and now - key.created_at > _MISSING_AFTER_MS
            ),
        )
        if report.missing:
            log.warning(
                "%d device key(s) are in the store but not in Mosquitto, so those devices cannot "
                "connect (Mosquitto's dynamic-security file was lost or reset?): %s; rotate "
                "their credentials (fieldhub device rotate ID) to issue new ones",
                len(report.missing),
                ", ".join(report.missing[:20]) + (" ..." if len(report.missing) > 20 else ""),
            )
        return report


def _owned_client(client: dict[str, Any]) -> bool:
    """A device client the hub made: device-shaped user name, holding its device's role."""
    parts = split_username(str(client.get("username", "")))
    if parts is None:
        return False
    roles = {str(r.get("rolename")) for r in client.get("roles", []) if isinstance(r, dict)}
    return device_role(parts[0]) in roles
