"""A device's life in the registry: created, changed, deleted; told to whoever cares.

Why one service: a registry change concerns many parts (ingest accepts or refuses the device's
messages, the directory and presence keep it in memory, commands forget it, the live API tells
browsers, the broker's retained messages must not outlive it). Before, each caller (the API,
claims, the CLI) did its own share of that by hand. Now the change is made here, once, and
published as a typed event; each part subscribes to what concerns it (``Hub._start`` wires
them). The CLI uses the same service with no subscribers: the running hub follows the registry
(:meth:`DeviceLifecycle.follow_registry`) and announces what the CLI made or deleted.

Order matters on delete: :class:`DeviceRemoving` goes out first (stop accepting the device's
messages and commands), then its rows go, under ``guard`` (no ingest commit may be writing
them), then :class:`DeviceRemoved` (clear what others still remember of it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Collection
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from fieldhub.hub.broker.identities import DeviceIdentities
from fieldhub.hub.devices.events import (
    DeviceAdded,
    DeviceChanged,
    DeviceEvent,
    DeviceListener,
    DeviceRemoved,
    DeviceRemoving,
)
from fieldhub.hub.errors import Conflict, Invalid
from fieldhub.hub.store.claims import ClaimStore
from fieldhub.hub.store.credentials import CredentialStore, IssuedCredentials
from fieldhub.hub.store.devices import (
    DeviceNotFound,
    DeviceRecord,
    DeviceRegistry,
    RegistryError,
)
from fieldhub.logthrottle import LogThrottle, held_back

log = logging.getLogger(__name__)


class ParentInvalid(RegistryError, Invalid):
    """A child's gateway is not registered, or is itself behind a gateway."""


class HasChildren(RegistryError, Conflict):
    """A gateway with children cannot be deleted before them."""


@dataclass(frozen=True, slots=True)
class NewDevice:
    """A device just registered, with its first credentials (the only time they are shown)."""

    record: DeviceRecord
    credentials: IssuedCredentials


class DeviceLifecycle:
    """Create, change and delete devices, and follow other processes' changes; their
    credentials; one event per change.

    Args:
        registry: The devices' rows.
        credentials: The devices' keys (read on delete, to withdraw them from the broker).
        identities: Device credentials in step with the broker (given once the broker runs:
            see :meth:`use_identities`).
        claims: Claims, forgotten with a deleted device so that its id may claim again.
        guard: Held while a device's rows are deleted (the hub: no ingest commit in flight).
    """

    def __init__(
        self,
        registry: DeviceRegistry,
        credentials: CredentialStore,
        claims: ClaimStore,
        *,
        identities: DeviceIdentities | None = None,
        guard: Callable[[], AbstractAsyncContextManager[Any]] | None = None,
    ) -> None:
        self.registry = registry
        self._credentials = credentials
        self._claims = claims
        self._identities = identities
        self._guard = guard or contextlib.nullcontext
        self._listeners: list[DeviceListener] = []
        self._known: set[str] = set()
        self._children: set[str] = set()  # of those, the devices behind a gateway
        self._deleting: set[str] = set()  # being deleted here: not another process's news

    # -- wiring ---------------------------------------------------------------------------------
    def subscribe(self, listener: DeviceListener) -> None:
        """Call ``listener`` with every device event, in the order of subscription."""
        self._listeners.append(listener)

    def use_identities(self, identities: DeviceIdentities) -> None:
        """The broker runs: credentials can be issued from now on."""
        self._identities = identities

    def guard_deletes_with(self, guard: Callable[[], AbstractAsyncContextManager[Any]]) -> None:
        """Hold ``guard()`` while a device's rows are deleted."""
        self._guard = guard

    @property
    def identities(self) -> DeviceIdentities:
        """Device credentials, store and broker in step."""
        if self._identities is None:
            raise RuntimeError("device credentials are not available before the broker runs")
        return self._identities

    async def load(self) -> list[DeviceRecord]:
        """Announce every registered device (at start), as :class:`DeviceAdded`."""
        records = await self.registry.list()
        for record in records:
            self._added(record)
        return records

    # -- reads ----------------------------------------------------------------------------------
    async def get(self, device_id: str) -> DeviceRecord:
        """A registered device as stored (presence and bookkeeping included).

        Raises:
            DeviceNotFound: no such device.
        """
        return await self.registry.get(device_id)

    async def find(self) -> list[DeviceRecord]:
        """Every device, ordered by id (a filtered page of them: ``hub.fleet``)."""
        return await self.registry.list()

    # -- changes --------------------------------------------------------------------------------
    async def create(
        self,
        device_id: str,
        *,
        name: str = "",
        labels: dict[str, str] | None = None,
        attributes: dict[str, Any] | None = None,
        actor: str = "hub",
        source: str = "",
    ) -> NewDevice:
        """Register a device with its first credentials, and start accepting its messages.

        The secret is in the result only: show it to whoever installs the device, once.

        Raises:
            DeviceExists: the id is taken.
            CredentialsError: the broker could not be told; the device was not registered.
        """
        record = await self.registry.create(
            device_id, name=name, labels=labels, attributes=attributes
        )
        try:
            issued = await self.identities.issue(device_id, actor=actor, source=source)
        except BaseException:
            await self.registry.delete(device_id)  # nothing half made
            raise
        self._added(record)
        return NewDevice(record, issued)

    async def register(self, device_id: str, labels: dict[str, str]) -> DeviceRecord:
        """Register a device without credentials (an approved claim: it fetches its own)."""
        record = await self.registry.create(device_id, labels=labels)
        self._added(record)
        return record

    async def create_child(
        self,
        device_id: str,
        parent_id: str,
        *,
        name: str = "",
        labels: dict[str, str] | None = None,
        attributes: dict[str, Any] | None = None,
    ) -> DeviceRecord:
        """Register a device behind gateway ``parent_id``: no credentials of its own (the
        gateway speaks for it, ``fieldhub.protocol.acl``); without labels it takes the
        gateway's, so it stays in the gateway's sites.

        Raises:
            ParentInvalid: the gateway is not registered, or is a child itself (one level).
            DeviceExists: the id is taken.
        """
        try:
            parent = await self.registry.get(parent_id)
        except DeviceNotFound:
            raise ParentInvalid(f"gateway {parent_id!r} is not registered", ("parent",)) from None
        if parent.parent_id is not None:
            raise ParentInvalid(
                f"{parent_id!r} is itself behind gateway {parent.parent_id!r}: one level only",
                ("parent",),
            )
        record = await self.registry.create(
            device_id,
            name=name,
            labels=parent.labels if labels is None else labels,
            attributes=attributes,
            parent_id=parent_id,
        )
        self._added(record)
        return record

    async def children(self, parent_id: str) -> list[DeviceRecord]:
        """The devices behind gateway ``parent_id``, ordered by id."""
        return await self.registry.children(parent_id)

    async def follow_registry(self, period_s: float = 1.0) -> None:
        """Every ``period_s``: announce the devices another process (the CLI, another hub on
        the same database) registered or deleted meanwhile, as this process announces its own.
        The registry is the one place to look: a child has no keys, a claimed device none
        yet, and a deleted device's keys are gone with it, so the credentials cannot tell.
        One aggregate query a period tells when to read the ids. Runs until cancelled; a
        failing database is logged (once a minute) and tried again."""
        seen: tuple[int, int] | None = None
        throttle = LogThrottle()
        while True:
            await asyncio.sleep(period_s)
            try:
                fingerprint = await self.registry.fingerprint()
                if fingerprint != seen:
                    ids = await self.registry.ids()
                    await self.adopt_ids(ids)
                    await self._forget_gone(self._known - ids - self._deleting)
                    seen = fingerprint
            except SQLAlchemyError as exc:
                held = throttle.due("registry")
                if held is not None:
                    log.warning("cannot look for devices: %s%s", exc, held_back(held))

    async def adopt_ids(self, device_ids: Collection[str]) -> None:
        """Announce the devices of ``device_ids`` another process registered (found by
        :meth:`follow_registry`, or in its commits: ``cluster/arrivals.py``) that this one does
        not know yet, each once its row is read (unless it is gone again, or this process
        announced it meanwhile)."""
        for device_id in sorted(set(device_ids) - self._known - self._deleting):
            try:
                record = await self.registry.get(device_id)
            except DeviceNotFound:
                continue
            if device_id not in self._known:
                self._added(record)

    async def _forget_gone(self, device_ids: set[str]) -> None:
        """Devices another process deleted: told as :meth:`delete` tells its own (the rows,
        keys and claims are gone already; the broker's key sync closes their connections).
        Each is looked up first: one this process created while the ids were read is not
        among them, and is not gone."""
        for device_id in sorted(device_ids):
            try:
                await self.registry.get(device_id)
                continue
            except DeviceNotFound:
                pass
            if device_id in self._known and device_id not in self._deleting:
                self._publish(DeviceRemoving(device_id))
                self._known.discard(device_id)
                self._children.discard(device_id)
                self._publish(DeviceRemoved(device_id))

    async def update(
        self,
        device_id: str,
        *,
        name: str | None = None,
        labels: dict[str, str] | None = None,
        attributes: dict[str, Any] | None = None,
    ) -> DeviceRecord:
        """Change what an operator may change (``None`` leaves a field as it is).

        Raises:
            DeviceNotFound: no such device.
        """
        record = await self.registry.update(
            device_id, name=name, labels=labels, attributes=attributes
        )
        self._publish(DeviceChanged(record))
        return record

    async def delete(self, device_id: str, *, actor: str = "hub", source: str = "") -> None:
        """Delete a device with its data and credentials; refuse its messages from now on.

        Raises:
            DeviceNotFound: no such device.
        """
        await self.registry.get(device_id)
        children = await self.registry.children(device_id)
        if children:
            raise HasChildren(
                f"gateway {device_id!r} still has {len(children)} child device(s) "
                f"({', '.join(c.id for c in children[:5])}): delete them first"
            )
        usernames = await self._credentials.usernames(device_id)
        self._deleting.add(device_id)
        try:
            self._publish(DeviceRemoving(device_id))
            async with self._guard():
                await self.registry.delete(device_id)
            self._known.discard(device_id)
            self._children.discard(device_id)
        finally:
            self._deleting.discard(device_id)
        await self._claims.forget(device_id)  # the id may claim again
        self._publish(DeviceRemoved(device_id))
        if usernames:
            await self.identities.withdrawn(
                device_id, usernames, actor=actor, source=source, why="device deleted"
            )

    # -- credentials ------------------------------------------------------------------------------
    async def issue_credentials(
        self, device_id: str, *, actor: str = "hub", source: str = ""
    ) -> IssuedCredentials:
        """Another key for a registered device (its other keys stay valid).

        Raises:
            DeviceNotFound: no such device.
            CredentialsError: the broker could not be told; no key was kept.
        """
        await self.registry.get(device_id)
        return await self.identities.issue(device_id, actor=actor, source=source)

    async def rotate_credentials(
        self, device_id: str, grace_s: float, *, actor: str = "hub", source: str = ""
    ) -> IssuedCredentials:
        """A new key; the device's old keys keep working for ``grace_s`` seconds more.

        Raises:
            DeviceNotFound: no such device.
            CredentialsError: the broker could not be told; no new key was kept.
        """
        await self.registry.get(device_id)
        return await self.identities.rotate(device_id, grace_s, actor=actor, source=source)

    async def revoke_credentials(
        self, device_id: str, *, actor: str = "hub", source: str = ""
    ) -> list[str]:
        """Delete every key of the device; it is disconnected at once and cannot come back.

        Returns the user names revoked.

        Raises:
            DeviceNotFound: no such device.
        """
        await self.registry.get(device_id)
        return await self.identities.revoke(device_id, actor=actor, source=source)

    # -- internals ------------------------------------------------------------------------------
    def _added(self, record: DeviceRecord) -> None:
        if record.id in self._known:  # follow_registry saw its row before its maker returned
            return
        self._known.add(record.id)
        if record.parent_id is not None:
            self._children.add(record.id)
        self._publish(DeviceAdded(record))

    def _publish(self, event: DeviceEvent) -> None:
        for listener in self._listeners:
            listener(event)
