"""Identity and access for people and programs: users, roles, sessions, API tokens, rules.

``rules`` says who may do what; ``authn`` turns credentials into a principal; ``accounts``
changes users and tokens; ``service.Auth`` wires them for one hub process. Device credentials
are another matter (the broker checks them) and live elsewhere.
"""

from fieldhub.hub.auth.errors import (
    AccountConflict,
    AuthError,
    InvalidName,
    LoginFailed,
    LoginThrottled,
    NotAllowed,
    PasswordRejected,
    SetupRefused,
    WrongPassword,
)
from fieldhub.hub.auth.rules import (
    ANONYMOUS,
    ROLE_PERMISSIONS,
    SCOPE_OF,
    SITE_LABEL,
    Permission,
    Principal,
    Role,
    Scope,
)
from fieldhub.hub.auth.service import Auth
from fieldhub.hub.store.audit import AuditEntry
from fieldhub.hub.store.users import TokenRecord, UserRecord

__all__ = [
    "ANONYMOUS",
    "ROLE_PERMISSIONS",
    "SCOPE_OF",
    "SITE_LABEL",
    "AccountConflict",
    "AuditEntry",
    "Auth",
    "AuthError",
    "InvalidName",
    "LoginFailed",
    "LoginThrottled",
    "NotAllowed",
    "PasswordRejected",
    "Permission",
    "Principal",
    "Role",
    "Scope",
    "SetupRefused",
    "TokenRecord",
    "UserRecord",
    "WrongPassword",
]
