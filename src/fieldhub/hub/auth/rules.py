"""Who may do what: roles, token scopes, permissions, and the principal of a request.

The rules, in one place:

- A **role** grants permissions: ``admin`` everything; ``operator`` sees and changes devices
  (and will command them), reads events, and keeps the alarm rules and alarms of its sites;
  ``viewer`` only sees devices, events and alarms. Everyone
  who is logged in manages their own account (password, own API tokens, logout) and their
  own notification subscriptions.
- A **scope** limits an API token: every permission needs one scope (``read`` for reading,
  ``write`` for changing, ``command`` for commanding devices, ``metrics`` for scraping
  ``/metrics``). A token's rights are its scopes' permissions **intersected** with its user's
  role, evaluated on every request, so demoting a user also narrows the user's tokens. A web
  session carries every scope: its rights are the role's.
- **Sites** scope what non-admins see: a device belongs to the site in its ``site`` label; a
  user sees the devices of the sites in its list (admins: every site), and a device of another
  site looks exactly like one that does not exist.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from fieldhub.hub.auth.errors import InvalidName

SITE_LABEL = "site"
USER_NAME_PATTERN = r"^[a-z0-9][a-z0-9._@-]{0,63}$"
_USER_NAME = re.compile(USER_NAME_PATTERN)


class Role(StrEnum):
    """What a user is for."""

    ADMIN = "admin"
    OPERATOR = "operator"
    VIEWER = "viewer"


class Scope(StrEnum):
    """What an API token may be used for (within its user's role)."""

    READ = "read"
    WRITE = "write"
    COMMAND = "command"
    METRICS = "metrics"


class Permission(StrEnum):
    """What a route needs. Every route declares exactly one (see ``api/security.py``)."""

    PUBLIC = "public"  # no credentials needed; the route reveals nothing that needs them
    ACCOUNT_READ = "account:read"  # one's own user and tokens
    ACCOUNT_WRITE = "account:write"  # one's own password, tokens, logout
    DEVICES_READ = "devices:read"
    DEVICES_WRITE = "devices:write"
    DEVICES_COMMAND = "devices:command"
    EVENTS_READ = "events:read"
    ALARMS_READ = "alarms:read"  # alarm rules and alarms of one's sites
    ALARMS_WRITE = "alarms:write"  # rules of one's sites; acknowledge, clear, shelve alarms
    USERS_READ = "users:read"  # every user and every user's tokens
    USERS_WRITE = "users:write"
    AUDIT_READ = "audit:read"
    HUB_READ = "hub:read"  # hub internals: broker address, database, instance, counts
    METRICS_READ = "metrics:read"
    # Notification channels and the outbox: admins only (a channel's URL or addresses say
    # where alarms go; a test message can be sent anywhere a channel points).
    NOTIFICATIONS_READ = "notifications:read"
    NOTIFICATIONS_WRITE = "notifications:write"
    # One's own notification subscriptions (what alarms of one's sites reach one, and how);
    # those who hold notifications:read/write see/manage everyone's.
    SUBSCRIPTIONS_READ = "subscriptions:read"
    SUBSCRIPTIONS_WRITE = "subscriptions:write"
    # Device client certificates (hub/broker/device_ca.py): admins only, as a certificate lets
    # a device through the broker's TLS listener wherever client certificates are required.
    CERTIFICATES_WRITE = "certificates:write"
    # Signed bundles and the keys they are checked against: admins only (what may run on
    # every device); rolling a bundle out to devices is devices:command on them.
    BUNDLES_WRITE = "bundles:write"
    # Hub-wide settings kept in the database (the retention policy): admins only.
    HUB_WRITE = "hub:write"


SCOPE_OF: dict[Permission, Scope] = {
    Permission.ACCOUNT_READ: Scope.READ,
    Permission.ACCOUNT_WRITE: Scope.WRITE,
    Permission.DEVICES_READ: Scope.READ,
    Permission.DEVICES_WRITE: Scope.WRITE,
    Permission.DEVICES_COMMAND: Scope.COMMAND,
    Permission.EVENTS_READ: Scope.READ,
    Permission.ALARMS_READ: Scope.READ,
    Permission.ALARMS_WRITE: Scope.WRITE,
    Permission.USERS_READ: Scope.READ,
    Permission.USERS_WRITE: Scope.WRITE,
    Permission.AUDIT_READ: Scope.READ,
    Permission.HUB_READ: Scope.READ,
    Permission.METRICS_READ: Scope.METRICS,
    Permission.NOTIFICATIONS_READ: Scope.READ,
    Permission.NOTIFICATIONS_WRITE: Scope.WRITE,
    Permission.SUBSCRIPTIONS_READ: Scope.READ,
    Permission.SUBSCRIPTIONS_WRITE: Scope.WRITE,
    Permission.CERTIFICATES_WRITE: Scope.WRITE,
    Permission.BUNDLES_WRITE: Scope.WRITE,
    Permission.HUB_WRITE: Scope.WRITE,
}

_OWN_ACCOUNT = {
    Permission.ACCOUNT_READ,
    Permission.ACCOUNT_WRITE,
    Permission.SUBSCRIPTIONS_READ,
    Permission.SUBSCRIPTIONS_WRITE,
}
ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset(SCOPE_OF),
    Role.OPERATOR: frozenset(
        {
            *_OWN_ACCOUNT,
            Permission.DEVICES_READ,
            Permission.DEVICES_WRITE,
            Permission.DEVICES_COMMAND,
            Permission.EVENTS_READ,
            Permission.ALARMS_READ,
            Permission.ALARMS_WRITE,
        }
    ),
    Role.VIEWER: frozenset(
        {*_OWN_ACCOUNT, Permission.DEVICES_READ, Permission.EVENTS_READ, Permission.ALARMS_READ}
    ),
}

ALL_SCOPES = frozenset(Scope)
Via = Literal["anonymous", "session", "token"]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who makes a request, and with what rights.

    ``sites`` is None for admins (every site). ``session_hash`` identifies the session a
    request came with (its digest, never the token), so logout and a password change know
    which session is the caller's.
    """

    via: Via
    user_id: int | None = None
    name: str = ""
    role: Role | None = None
    sites: frozenset[str] | None = frozenset()
    scopes: frozenset[Scope] = frozenset()
    token_id: int | None = None
    session_hash: str | None = None

    @property
    def authenticated(self) -> bool:
        """True for a user (by session or token), False for anonymous requests."""
        return self.via != "anonymous"

    @property
    def permissions(self) -> frozenset[Permission]:
        """Every permission this principal holds: role ∩ scopes."""
        if self.role is None:
            return frozenset()
        return frozenset(p for p in ROLE_PERMISSIONS[self.role] if SCOPE_OF[p] in self.scopes)

    def can(self, permission: Permission) -> bool:
        """True when this principal holds ``permission`` (everyone holds ``public``)."""
        return permission is Permission.PUBLIC or permission in self.permissions

    def sees_site(self, site: str | None) -> bool:
        """True when objects of ``site`` (None: no site label) are visible to this principal."""
        if self.sites is None:
            return self.authenticated
        return site is not None and site in self.sites

    def sees(self, labels: Mapping[str, str]) -> bool:
        """True when a device (or anything site-labelled) with ``labels`` is visible."""
        return self.sees_site(labels.get(SITE_LABEL))

    @property
    def actor(self) -> str:
        """How the audit log names this principal: ``user:alice``, ``user:alice/token:7``."""
        if not self.authenticated:
            return "anonymous"
        if self.token_id is not None:
            return f"user:{self.name}/token:{self.token_id}"
        return f"user:{self.name}"


ANONYMOUS = Principal(via="anonymous")


def principal_for(
    *,
    via: Via,
    user_id: int,
    name: str,
    role: str,
    sites: list[str],
    scopes: frozenset[Scope] = ALL_SCOPES,
    token_id: int | None = None,
    session_hash: str | None = None,
) -> Principal:
    """The principal of a stored user reached ``via`` a session or a token."""
    the_role = Role(role)
    return Principal(
        via=via,
        user_id=user_id,
        name=name,
        role=the_role,
        sites=None if the_role is Role.ADMIN else frozenset(sites),
        scopes=scopes,
        token_id=token_id,
        session_hash=session_hash,
    )


def normalize_name(name: str) -> str:
    """A user name as stored: trimmed and lower case, so ``Alice`` and ``alice`` are one user.

    Raises:
        InvalidName: not 1-64 of a-z 0-9 . _ @ - (starting with a letter or digit).
    """
    normalized = name.strip().lower()
    if not _USER_NAME.fullmatch(normalized):
        raise InvalidName(
            "a user name is 1-64 of a-z 0-9 . _ @ - and starts with a letter or digit"
        )
    return normalized
