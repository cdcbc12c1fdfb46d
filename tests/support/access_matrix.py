"""The access matrix: every route of the OpenAPI spec, called by every kind of caller, on own
and foreign objects (tests/test_access_matrix*.py run it in two slices, one per worker).

The expected status of each call is computed from the route's declared permission
(``x-fieldhub-permission``) and the access rules as the issue states them, restated here
independently of the code under test:

- no valid credentials (none, forged, expired, revoked, disabled user) → 401;
- a cookie session writing without its CSRF token → 403;
- a permission the caller's role does not grant, or its token's scopes do not cover → 403;
- an object the caller may not see (a device of another site, someone else's API token) → 404,
  exactly like one that does not exist;
- putting data into a site the caller does not have → 403;
- otherwise the route's documented success status. Public routes answer every caller alike.

A route without a declared permission, or with one these rules do not know, fails the test:
new routes cannot slip through. Path parameters are real objects made for each call.

Seeing an object does not open the others it touches: every answer a site-scoped caller gets
is searched, field by field, for the id of any device of a site it does not see. Group commands
in the matrix span both sites, so a batch that an operator of site A reads names site B's
device too, unless the answer leaves it out.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
import pytest
from argon2 import PasswordHasher

from fieldhub.bundles import SigningKey, make_bundle
from fieldhub.clock import now_ms
from fieldhub.hub.alarms import AlarmFilter
from fieldhub.hub.api import create_app
from fieldhub.hub.api.security import CSRF_HEADER, SESSION_COOKIE
from fieldhub.hub.app import Hub
from fieldhub.hub.auth import Auth
from fieldhub.hub.auth.passwords import Passwords
from fieldhub.hub.auth.rules import principal_for
from fieldhub.hub.ingest.batch import Batch
from fieldhub.hub.notify.escalation import Policy, Step
from fieldhub.hub.notify.subscriptions import SubscriptionSpec
from fieldhub.hub.rollouts.plan import Plan
from fieldhub.protocol import Event, Upload
from tests.hub_client import ALL_SCOPES, add_user, user_token
from tests.media_support import picture, ref

SITE_A, SITE_B = "site-a", "site-b"
DOOR = {"kind": "event", "match": "door.*"}
PASSWORD = "matrix password 1"
UNSAFE = {"post", "put", "patch", "delete"}

# -- the rules, as the issue states them -------------------------------------------------------
# ... and everyone keeps their own notification subscriptions (issue 13)
OWN_ACCOUNT = {"account:read", "account:write", "subscriptions:read", "subscriptions:write"}
ROLE_RIGHTS = {
    "admin": {
        *OWN_ACCOUNT,
        "devices:read",
        "devices:write",
        "devices:command",
        "events:read",
        "alarms:read",
        "alarms:write",
        "users:read",
        "users:write",
        "audit:read",
        "hub:read",
        "metrics:read",
        "notifications:read",  # channels and the outbox: where alarms go is the admin's
        "notifications:write",
        "certificates:write",  # device client certificates let a device in: the admin's
        "bundles:write",  # signed bundles and their keys: what may run on every device
        "hub:write",  # hub-wide settings (the retention policy)
    },
    # "see and command devices of their sites" (and register them there: provisioning)
    # ... and keep the alarm rules and alarms of their sites (issue 13)
    "operator": {
        *OWN_ACCOUNT,
        "devices:read",
        "devices:write",
        "devices:command",
        "events:read",
        "alarms:read",
        "alarms:write",
    },
    "viewer": {*OWN_ACCOUNT, "devices:read", "events:read", "alarms:read"},  # "see only"
}
KNOWN = {"public"} | ROLE_RIGHTS["admin"]


def scope_needed(permission: str) -> str:
    """Tokens: reading needs ``read``, changing ``write``, commanding ``command``; scraping
    metrics needs its own ``metrics`` scope."""
    if permission == "metrics:read":
        return "metrics"
    return permission.rsplit(":", 1)[1]


# -- the callers -----------------------------------------------------------------------------
Credential = Literal["none", "forged", "expired", "revoked", "disabled", "good"]


@dataclass(frozen=True)
class Who:
    """One kind of caller."""

    label: str
    role: str | None = None
    sites: tuple[str, ...] = ()
    scopes: tuple[str, ...] = ALL_SCOPES
    via: Literal["token", "session"] = "token"
    credential: Credential = "good"
    csrf: bool = True


CALLERS = [
    Who("anonymous", credential="none"),
    Who("forged token", credential="forged"),
    Who("expired admin token", "admin", credential="expired"),
    Who("revoked admin token", "admin", credential="revoked"),
    Who("disabled admin's token", "admin", credential="disabled"),
    Who("admin session", "admin", via="session"),
    Who("admin session without CSRF", "admin", via="session", csrf=False),
    Who("admin token", "admin"),
    Who("admin read-only token", "admin", scopes=("read",)),
    Who("admin metrics token", "admin", scopes=("metrics",)),
    Who("operator A session", "operator", (SITE_A,), via="session"),
    Who("operator A token", "operator", (SITE_A,)),
    Who("operator A read-only token", "operator", (SITE_A,), scopes=("read",)),
    Who("viewer A session", "viewer", (SITE_A,), via="session"),
    Who("viewer A session without CSRF", "viewer", (SITE_A,), via="session", csrf=False),
    Who("viewer A read-only token", "viewer", (SITE_A,), scopes=("read",)),
    Who("viewer A token with all scopes", "viewer", (SITE_A,), scopes=ALL_SCOPES),
    Who("viewer of no site", "viewer", ()),
]


# -- the routes ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Route:
    """One operation of the spec."""

    method: str
    path: str
    permission: str | None
    success: int
    body: bool

    @property
    def name(self) -> str:
        return f"{self.method.upper()} {self.path}"

    @property
    def params(self) -> list[str]:
        return [part[1:-1] for part in self.path.split("/") if part.startswith("{")]


def routes_of(spec: dict[str, Any]) -> list[Route]:
    """Every operation in the spec with its declared permission and success status."""
    routes = []
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            codes = sorted(int(c) for c in operation["responses"] if str(c).startswith("2"))
            routes.append(
                Route(
                    method=method,
                    path=path,
                    permission=operation.get("x-fieldhub-permission"),
                    success=codes[0] if codes else 200,
                    body="requestBody" in operation
                    and operation["requestBody"].get("required", False),
                )
            )
    return routes


# Public routes whose answer does not depend on the caller but is not their success status.
PUBLIC_OUTCOME = {
    ("post", "/api/auth/setup"): 401,  # this hub has users: no setup, for anyone
    ("post", "/api/provisioning/claims/{device_id}/credentials"): 202,  # pending: poll again
    ("get", "/api/bundles/{bundle_id}/download"): 422,  # the matrix sends no token
    # The upload URL is its own credential: without its expiry and signature, 422 for anyone.
    ("put", "/api/uploads/{device_id}/{sha256}"): 422,
    ("head", "/api/uploads/{device_id}/{sha256}"): 422,
    ("get", "/api/media-links/{device_id}/{sha256}"): 422,  # a notification's link, likewise
}
SIGNED_URLS = ("/api/uploads/", "/api/media-links/")
"""Public routes whose URL is the credential (an upload URL, a notification's media link)."""
# Routes whose success, in the matrix's world, is not their first declared status.
SUCCESS = {
    ("post", "/api/devices/{device_id}/commands"): 202,  # queued for an offline device
    ("post", "/api/commands"): 202,
    ("post", "/api/bundles"): 422,  # the matrix sends JSON, not a bundle file: refused after
    # the permission check, which is what the matrix is about
}
# Routes that put data into a site named in the body: also tried with the foreign site.
BODY_SITE = {
    ("post", "/api/devices"),
    ("post", "/api/claim-tokens"),
    ("post", "/api/alarm-rules"),
    ("post", "/api/maintenance-windows"),
}
WEEKLY = {"kind": "weekly", "days": [6], "start": "02:00", "duration_s": 3600, "timezone": "UTC"}


@dataclass
class Case:
    """The objects one call works on, made fresh for it."""

    who: Who
    variant: Literal["own", "foreign"]
    user: Any
    values: dict[str, str] = field(default_factory=dict)
    visible: bool = True


class World:
    """The hub, the callers' users, and factories for objects and credentials."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.users: dict[Who, Any] = {}
        self.login_user: Any = None
        self.someone: Any = None
        self.hook = 0  # a channel every subscription made through the API may use
        self.policy_channel = 0
        self.site_of: dict[str, str] = {}  # every device (and claimed device) made: its site
        self.signer = SigningKey.generate()  # registered: bundles it signs may be uploaded
        self.versions = 0
        self.shared_bundle = ""
        self.rollout_devices: dict[str, str] = {}

    async def populate(self) -> None:
        await self.hub.bundles.add_key(
            self.signer.public.to_text(), "matrix", actor="test", source=""
        )
        self.login_user = await add_user(self.hub, "viewer", (SITE_A,), password=PASSWORD)
        self.policy_channel = await self.channel()  # what escalation policies name
        self.someone = await add_user(self.hub, "operator", (SITE_A,))
        self.hook = await self.channel()
        for who in CALLERS:
            if who.role is not None:
                user = await add_user(self.hub, who.role, who.sites, password=PASSWORD)
                self.users[who] = user
        for who, user in self.users.items():
            if who.credential == "disabled":
                await self.hub.auth.users.update(user.id, disabled=True)

    def fresh(self, prefix: str) -> str:
        return f"{prefix}-{secrets.token_hex(5)}"

    async def device(self, site: str) -> str:
        device_id = self.fresh("dev")
        await self.hub.devices.create(device_id, labels={"site": site})
        self.site_of[device_id] = site
        return device_id

    async def alarm_or_window(self, route: Route, param: str, site: str) -> int:
        """An alarm (shelved when the route unshelves it) or a window of ``site``."""
        if param == "window_id":
            return await self.window(site)
        return await self.alarm(site, shelved=route.path.endswith("/unshelve"))

    async def window(self, site: str) -> int:
        """A weekly maintenance window over ``site``."""
        window = await self.hub.maintenance.put(
            {"name": "matrix", "scope": {"sites": [site]}, "schedule": WEEKLY}, actor="test"
        )
        return window.id

    async def alarm(self, site: str, *, shelved: bool = False) -> int:
        """An open alarm of a new device of ``site`` (an event rule for that device, fed a
        committed batch as ingest hands it over), ``shelved`` for a minute."""
        device_id = await self.device(site)
        stored = await self.hub.alarms.put_rule(
            {"target": {"devices": [device_id]}, "condition": DOOR}, actor="test", create=True
        )
        engine = self.hub.alarms.engine
        event = Event(seq=1, ts=now_ms(), type="door.opened")
        engine.committed(Batch(events=[(device_id, now_ms(), event)]))
        await engine.evaluate()
        [alarm] = await self.hub.alarms.find(AlarmFilter(device=device_id, rule=stored.rule.id))
        if shelved:
            await self.hub.alarms.shelve(alarm.id, until=now_ms() + 60_000, actor="test")
        return alarm.id

    async def site_object(self, route: Route, param: str, site: str) -> str:
        """An alarm, window or media of ``site``; for an upload URL (public: the URL is the
        credential, and without its signature nobody gets further), a device and a hash."""
        if route.path.startswith(SIGNED_URLS):
            return await self.device(SITE_A) if param == "device_id" else "0" * 64
        if param == "media_id":
            return str(await self.media(site))
        return str(await self.alarm_or_window(route, param, site))

    async def media(self, site: str) -> int:
        """A complete picture (with its thumbnail) of an event of a new device of ``site``."""
        device_id = await self.device(site)
        data = picture(8, 8)
        event = Event(seq=1, ts=now_ms(), type="stranger.detected", media=[ref(data)])
        self.hub.ingest.accept(device_id, "event", event)
        await self.hub.ingest.flush()
        upload = Upload(sha256=ref(data).sha256, offset=0, data=data)
        assert (await self.hub.media.uploads.chunk(device_id, upload)).done
        await self.hub.media.uploads.thumbnails.drain()
        page = await self.hub.queries.events(device_ids=[device_id], types=["stranger.detected"])
        [stored] = page.events
        return int(stored.media[0]["id"])

    async def claim_token(self, site: str) -> tuple[int, str]:
        record, token = await self.hub.provisioning.create_token(
            name="matrix",
            labels={"site": site},
            uses=1,
            expires_at=now_ms() + 60_000,
            created_by="test",
        )
        return record.id, token

    async def claim(self, site: str) -> tuple[str, str]:
        """A pending claim of a new device in ``site``: its id and poll secret."""
        _, token = await self.claim_token(site)
        device_id = self.fresh("claimed")
        receipt = await self.hub.provisioning.claim(token, device_id, {})
        self.site_of[device_id] = site
        return device_id, receipt.poll_secret

    async def channel(self) -> int:
        """A webhook channel (to a closed port: its deliveries fail, which is fine here)."""
        channel = await self.hub.notifications.create_channel(
            self.fresh("hook"), "webhook", {"url": "http://127.0.0.1:9/hook"}, actor="test"
        )
        return channel.id

    async def subscription(self, case: Case) -> None:
        """A subscription of the caller's own, or of another user's: those only admins see
        (and change)."""
        own = case.variant == "own" and case.who.credential != "disabled"  # owns no more
        mine = self.users.get(case.who) if own else None
        spec = SubscriptionSpec(channel_id=self.hook)
        as_admin = principal_for(via="session", user_id=0, name="t", role="admin", sites=[])
        owner = (mine or self.someone).id
        made = await self.hub.notifications.subscriptions.create(spec, as_admin, owner_id=owner)
        case.values["subscription_id"] = str(made.id)
        case.visible &= mine is not None or case.who.role == "admin"

    async def policy(self) -> str:
        """An escalation policy to a new channel."""
        policy = Policy(self.fresh("p"), "matrix", (Step(60, (await self.channel(),)),), None, 0)
        await self.hub.escalation.put(policy, actor="test", source="", create=True)
        return policy.id

    async def notification(self) -> str:
        """A notification in the outbox (held: its channel is disabled)."""
        channel = await self.hub.notifications.create_channel(
            self.fresh("held"), "webhook", {"url": "http://127.0.0.1:9/hook"}, actor="test"
        )
        await self.hub.notifications.update_channel(channel.id, enabled=False, actor="test")
        return (await self.hub.notifications.send_test(channel.id, actor="test")).id

    async def credentials(self, who: Who) -> dict[str, str]:
        """Headers that present ``who``'s credential (new for every call)."""
        if who.credential == "none":
            return {}
        if who.credential == "forged":
            return {"Authorization": "Bearer fht_" + secrets.token_urlsafe(32)}
        user = self.users[who]
        if who.via == "session":
            session = await self.hub.auth.authenticator.open_session(user)
            headers = {"Cookie": f"{SESSION_COOKIE}={session.token}"}
            if who.csrf:
                headers[CSRF_HEADER] = session.csrf_token
            return headers
        expires = now_ms() - 1000 if who.credential == "expired" else None
        token_id, token = await user_token(self.hub, user, who.scopes, expires_at=expires)
        if who.credential == "revoked":
            await self.hub.auth.users.revoke_token(token_id, user_id=user.id)
        return {"Authorization": f"Bearer {token}"}

    async def group_command(self, site: str, *, also_b: bool) -> tuple[str, str]:
        """A group command to a device of ``site`` (and one of site B): its batch and the id of
        the first device's command."""
        group = [await self.device(site)]
        if also_b:
            group.append(await self.device(SITE_B))
        batch, [command, *_] = await self.hub.commands.submit(
            group,
            "socket.set",
            {"on": True},
            target={"devices": group},
            timeout_s=1,
            ttl_s=60,
            actor="test",
        )
        return batch.id, command.id

    async def bundle(self, *, fresh: bool = False) -> str:
        """A bundle's id (bundles belong to no site: every reader sees them): one shared, or
        a ``fresh`` one for a call that deletes it."""
        if self.shared_bundle and not fresh:
            return self.shared_bundle
        self.versions += 1
        data = make_bundle({"a.py": b"x"}, self.signer, name="matrix", version=f"1.{self.versions}")
        record, _new = await self.hub.bundles.upload(data, actor="test", source="")
        self.shared_bundle = self.shared_bundle or record.id
        return record.id

    async def rollout_device(self, site: str) -> str:
        """One device per site for every rollout (offline, it never confirms: each rollout
        finds it still needing the bundle)."""
        if site not in self.rollout_devices:
            self.rollout_devices[site] = await self.device(site)
        return self.rollout_devices[site]

    async def rollout(self, route: Route, site: str, *, also_b: bool) -> str:
        """A rollout to a device of ``site`` (and one of site B), in the state the route
        acts on: waiting for approval, paused, or with a failed device to retry."""
        group = [await self.rollout_device(site)]
        if also_b:
            group.append(await self.rollout_device(SITE_B))
        bundle = await self.hub.bundles.get(await self.bundle())
        plan = Plan(target={"devices": group}, canary=0)
        run = await self.hub.rollouts.create(
            bundle, plan, [(d, {}) for d in group], actor="test", source=""
        )
        action = route.path.rsplit("/", 1)[1]
        run.record.status = {"approve": "waiting", "resume": "paused"}.get(action, "running")
        if action == "approve":
            run.record.wave = -1  # its first wave is the next
        if action == "retry":
            next(iter(run.devices.values())).state = "failed"
        return run.record.id

    async def fill_rollouts(self, route: Route, case: Case, site: str, *, sees_site: bool) -> None:
        """:meth:`fill` for the routes of bundles, their keys and rollouts."""
        if (route.method, route.path) == ("post", "/api/rollouts"):
            case.values["bundle"] = await self.bundle()
            case.values["device"] = await self.rollout_device(SITE_A)
        for param in route.params:
            if param == "bundle_id":
                case.values[param] = await self.bundle(fresh=route.method == "delete")
            elif param == "key_id":
                key = SigningKey.generate().public.to_text()
                added = await self.hub.bundles.add_key(key, "matrix", actor="test", source="")
                case.values[param] = added.key_id
            elif param == "rollout_id":
                reading = route.method == "get"  # across both sites: the answer is filtered
                own = case.variant == "own"
                case.values[param] = await self.rollout(route, site, also_b=own and reading)
                case.visible &= sees_site
            else:
                raise LookupError(f"{route.name}: no object for {{{param}}}; add one to fill()")

    async def fill(self, route: Route, case: Case) -> None:
        """Real objects for the path parameters; ``case.visible`` says if the caller may see
        them (the rules: devices by site, API tokens by owner)."""
        own = case.variant == "own"
        who = case.who
        site = SITE_A if own else SITE_B
        sees_site = who.role == "admin" or site in who.sites
        if (route.method, route.path) == ("post", "/api/provisioning/claims"):
            _, case.values["claim_token"] = await self.claim_token(SITE_A)
        if route.path.startswith(("/api/bundle", "/api/rollouts")):
            return await self.fill_rollouts(route, case, site, sees_site=sees_site)
        for param in route.params:
            if param == "device_id" and route.path.startswith("/api/provisioning/claims/"):
                case.values[param], case.values["poll_secret"] = await self.claim(SITE_A)
            elif param == "device_id" and route.path.startswith("/api/claims/"):
                case.values[param], _ = await self.claim(site)
                case.visible &= sees_site
            elif param == "token_id" and route.path.startswith("/api/claim-tokens/"):
                token_id, _ = await self.claim_token(site)
                case.values[param] = str(token_id)
                case.visible &= sees_site
            elif param == "device_id" and route.path.startswith("/api/devices/"):
                case.values[param] = await self.device(site)
                case.visible &= sees_site
            elif param in ("command_id", "batch_id"):
                # A group command across both sites (own variant) or of site B only (foreign):
                # the caller reads it through its own device, and must not see the other one.
                batch_id, command_id = await self.group_command(site, also_b=own)
                case.values[param] = command_id if param == "command_id" else batch_id
                case.visible &= sees_site
            elif param == "user_id" and route.path.startswith("/api/users/"):
                target = await add_user(self.hub, "viewer", (SITE_A if own else SITE_B,))
                case.values[param] = str(target.id)
                case.user = target
            elif param == "token_id" and route.path.startswith("/api/users/{user_id}/tokens/"):
                token_id, _ = await user_token(self.hub, case.user)
                case.values[param] = str(token_id)
            elif param == "token_id" and route.path.startswith("/api/tokens/"):
                mine = self.users.get(who) if own else None
                token_id, _ = await user_token(self.hub, mine or self.someone)
                case.values[param] = str(token_id)
                case.visible &= mine is not None
            elif param in ("channel_id", "policy_id", "notification_id"):
                make = {"channel_id": self.channel, "policy_id": self.policy}
                case.values[param] = str(await make.get(param, self.notification)())
            elif param == "subscription_id":
                await self.subscription(case)
            elif param == "rule_id":
                stored = await self.hub.alarms.put_rule(
                    {"target": {"labels": {"site": site}}, "condition": DOOR},
                    actor="test",
                    create=True,
                )
                case.values[param] = stored.rule.id
                case.visible &= sees_site
            elif param in ("alarm_id", "window_id", "media_id") or route.path.startswith(
                SIGNED_URLS
            ):
                case.values[param] = await self.site_object(route, param, site)
                case.visible &= sees_site or route.permission == "public"
            else:
                raise LookupError(f"{route.name}: no object for {{{param}}}; add one to fill()")

    async def query(self, route: Route) -> dict[str, list[str]] | None:
        """Query parameters a route needs: the fleet's details and names ask for a device of
        each site (a site user's answer must leave the other one out)."""
        if route.method == "get" and route.path in ("/api/fleet/details", "/api/fleet/names"):
            return {"device": [await self.device(SITE_A), await self.device(SITE_B)]}
        return None

    def body(self, route: Route, case: Case) -> dict[str, Any] | None:
        """A valid body for the route; a route with a body not listed here fails the test."""
        site = SITE_A if case.variant == "own" else SITE_B
        bodies: dict[tuple[str, str], Callable[[], dict[str, Any]]] = {
            ("post", "/api/devices"): lambda: {"id": self.fresh("new"), "labels": {"site": site}},
            ("patch", "/api/devices/{device_id}"): lambda: {"name": "renamed"},
            # the device is offline: the command is queued, the answer says so at once
            ("post", "/api/devices/{device_id}/commands"): lambda: {
                "action": "socket.set",
                "args": {"on": True},
                "timeout_s": 0.01,
            },
            ("post", "/api/commands"): lambda: {
                "labels": {"site": SITE_A},
                "action": "socket.set",
                "args": {"on": True},
                "timeout_s": 0.01,
            },
            # a fresh device for every call: nothing desired yet, version 0
            ("patch", "/api/devices/{device_id}/state"): lambda: {
                "version": 0,
                "desired": {"socket": "off"},
            },
            ("post", "/api/auth/login"): lambda: {
                "name": self.login_user.name,
                "password": PASSWORD,
            },
            ("post", "/api/auth/setup"): lambda: {
                "token": "fhsetup_" + secrets.token_urlsafe(32),
                "name": self.fresh("root"),
                "password": PASSWORD,
            },
            ("put", "/api/auth/password"): lambda: {
                "current_password": PASSWORD,
                "new_password": PASSWORD,
            },
            ("post", "/api/tokens"): lambda: {"name": "matrix", "scopes": ["read"]},
            ("post", "/api/claim-tokens"): lambda: {"name": "matrix", "labels": {"site": site}},
            ("post", "/api/provisioning/claims"): lambda: {
                "token": case.values["claim_token"],
                "device_id": self.fresh("claiming"),
            },
            ("post", "/api/provisioning/claims/{device_id}/credentials"): lambda: {
                "poll_secret": case.values["poll_secret"]
            },
            ("post", "/api/users"): lambda: {
                "name": self.fresh("u"),
                "role": "viewer",
                "sites": [site],
            },
            ("patch", "/api/users/{user_id}"): lambda: {"sites": [site]},
            ("put", "/api/users/{user_id}/password"): lambda: {"password": PASSWORD},
            ("post", "/api/notification-channels"): lambda: {
                "name": self.fresh("hook"),
                "kind": "webhook",
                "config": {"url": "http://127.0.0.1:9/hook", "secret": "matrix"},
            },
            ("patch", "/api/notification-channels/{channel_id}"): lambda: {"enabled": False},
            ("post", "/api/notification-subscriptions"): lambda: {"channel_id": self.hook},
            ("put", "/api/notification-subscriptions/{subscription_id}"): lambda: {
                "channel_id": self.hook,
                "min_severity": "major",
            },
            ("post", "/api/alarm-rules"): lambda: {
                "target": {"labels": {"site": site}},
                "condition": DOOR,
            },
            ("post", "/api/alarm-rules/preview"): lambda: {"condition": DOOR},
            ("put", "/api/alarm-rules/{rule_id}"): lambda: {
                "target": {"labels": {"site": site}},
                "condition": DOOR,
                "severity": "critical",
            },
            ("post", "/api/escalation-policies"): lambda: {
                "id": self.fresh("p"),
                "steps": [{"after_s": 60, "channels": [self.policy_channel]}],
            },
            ("put", "/api/escalation-policies/{policy_id}"): lambda: {
                "steps": [{"after_s": 120, "channels": [self.policy_channel]}],
            },
            ("post", "/api/alarms/{alarm_id}/acknowledge"): lambda: {"comment": "seen"},
            ("post", "/api/alarms/{alarm_id}/clear"): lambda: {"comment": "done"},
            ("post", "/api/alarms/{alarm_id}/shelve"): lambda: {"until": now_ms() + 60_000},
            ("post", "/api/alarms/{alarm_id}/unshelve"): lambda: {"comment": "back"},
            ("post", "/api/alarms/{alarm_id}/assign"): lambda: {"assignee": None},
            ("post", "/api/alarms/{alarm_id}/comment"): lambda: {"comment": "noted"},
            ("post", "/api/maintenance-windows"): lambda: {
                "name": "matrix",
                "scope": {"sites": [site]},
                "schedule": WEEKLY,
            },
            ("put", "/api/retention"): lambda: {"raw_days": 30},
            ("post", "/api/bundle-keys"): lambda: {
                "name": "matrix",
                "public_key": SigningKey.generate().public.to_text(),
            },
            ("post", "/api/rollouts"): lambda: {
                "bundle": case.values["bundle"],
                "target": {"devices": [case.values["device"]]},
            },
            ("put", "/api/maintenance-windows/{window_id}"): lambda: {
                "name": "matrix, changed",
                "scope": {"sites": [site]},
                "schedule": WEEKLY,
            },
        }
        make = bodies.get((route.method, route.path))
        if make is None:
            if route.body:
                raise LookupError(f"{route.name}: no request body; add one to body()")
            return None
        return make()


def expected(route: Route, case: Case) -> int:
    """The status the rules call for."""
    who = case.who
    if route.permission == "public":
        return PUBLIC_OUTCOME.get((route.method, route.path), route.success)
    if who.credential != "good":
        return 401
    if who.via == "session" and not who.csrf and route.method in UNSAFE:
        return 403
    assert route.permission is not None
    assert who.role is not None
    scopes = ALL_SCOPES if who.via == "session" else who.scopes
    if (
        route.permission not in ROLE_RIGHTS[who.role]
        or scope_needed(route.permission) not in scopes
    ):
        return 403
    if not case.visible:
        return 404
    success = SUCCESS.get((route.method, route.path), route.success)
    if case.variant == "foreign" and (route.method, route.path) in BODY_SITE:
        return success if who.role == "admin" else 403
    return success


def foreign_ids(world: World, who: Who, answer: httpx.Response) -> list[str]:
    """Ids of devices ``who`` may not see that an answer carries in any field (ids are
    random: a match is the id, not a coincidence)."""
    if who.role == "admin" or not 200 <= answer.status_code < 300:
        return []
    text = answer.text
    return sorted(d for d, site in world.site_of.items() if site not in who.sites and d in text)


def foreign_counts(who: Who, route: Route, answer: httpx.Response) -> list[str]:
    """Sites ``who`` does not have that the fleet's counts name: a site user counts its own
    sites' devices only, field by field."""
    if (route.method, route.path) != ("get", "/api/fleet/summary") or who.role == "admin":
        return []
    if answer.status_code != 200:
        return []
    return sorted(site for site in answer.json()["sites"] if site not in who.sites)


def _variants(route: Route) -> list[Literal["own", "foreign"]]:
    if route.permission == "public":
        return ["own"]
    if route.params or (route.method, route.path) in BODY_SITE:
        return ["own", "foreign"]
    return ["own"]


async def run_matrix(hub: Hub, callers: list[Who], capsys: pytest.CaptureFixture[str]) -> None:
    """Every route for each of ``callers``, on real objects; fails listing every broken rule.

    Public routes must answer all of ``callers`` alike, so each slice of the matrix holds the
    anonymous caller too.
    """
    # The matrix is about who may call what, not about hashing: cheap argon2 parameters keep
    # its ~50 password checks from dominating the run (test_auth.py uses the real ones).
    cheap = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    hub.auth = Auth(hub.engine, hub.audit, passwords=Passwords(cheap))
    app = create_app(hub)
    routes = routes_of(app.openapi())
    world = World(hub)
    await world.populate()
    failures: list[str] = []
    calls = 0
    public_answers: dict[str, set[int]] = {}
    for who in callers:
        n = CALLERS.index(who)  # each caller its own address (login throttles are per address)
        transport = httpx.ASGITransport(app=app, client=(f"10.0.0.{n + 1}", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:
            for route in routes:
                if route.permission is None or route.permission not in KNOWN:
                    failures.append(f"{route.name}: no known permission declared")
                    continue
                for variant in _variants(route):
                    case = Case(who, variant, world.users.get(who))
                    try:
                        await world.fill(route, case)
                        body = world.body(route, case)
                        query = await world.query(route)
                    except LookupError as exc:
                        failures.append(str(exc))
                        continue
                    path = route.path.format(**case.values)
                    response = await client.request(
                        route.method,
                        path,
                        json=body,
                        params=query,
                        headers=await world.credentials(who),
                    )
                    client.cookies.clear()  # each call presents only its own credentials
                    calls += 1
                    want = expected(route, case)
                    if response.status_code != want:
                        failures.append(
                            f"{who.label:32} {variant:7} {route.name}: got "
                            f"{response.status_code}, want {want}: {response.text[:120]}"
                        )
                    leaked = (
                        []
                        if route.permission == "public"
                        else foreign_ids(world, who, response)
                        + foreign_counts(who, route, response)
                    )
                    if leaked:
                        failures.append(
                            f"{who.label:32} {variant:7} {route.name}: names devices of "
                            f"another site (or counts them): {leaked}"
                        )
                    if route.permission == "public":
                        public_answers.setdefault(route.name, set()).add(response.status_code)
    for name, statuses in public_answers.items():
        if len(statuses) > 1:
            failures.append(f"{name} is public but answers callers differently: {statuses}")
    with capsys.disabled():
        print(
            f"\naccess matrix: {calls} calls = {len(routes)} routes x {len(callers)} callers "
            f"(own and foreign objects), {len(failures)} failures"
        )
        for failure in failures:
            print("  " + failure)
    assert calls >= len(routes) * len(callers)
    assert not failures, f"{len(failures)} of {calls} calls broke the access rules"
