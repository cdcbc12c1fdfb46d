"""The hub's access control, wired: one per hub process, reached as ``hub.auth``.

Holds the parts that must be shared by every request of the process (the login throttle, the
setup token) and the stores, and issues the setup token at start when there is no user.
"""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncEngine

from fieldhub.hub.auth.accounts import Accounts
from fieldhub.hub.auth.authn import Authenticator
from fieldhub.hub.auth.passwords import Passwords
from fieldhub.hub.auth.setup import SetupToken
from fieldhub.hub.auth.throttle import LoginThrottle
from fieldhub.hub.auth.usage import TokenUse
from fieldhub.hub.store.audit import AuditLog
from fieldhub.hub.store.health import StorageHealth
from fieldhub.hub.store.users import UserStore

log = logging.getLogger(__name__)


class Auth:
    """Users, sessions, API tokens, throttle and setup token of one hub process."""

    def __init__(
        self,
        engine: AsyncEngine,
        audit: AuditLog | None = None,
        *,
        passwords: Passwords | None = None,
        throttle: LoginThrottle | None = None,
        storage: StorageHealth | None = None,
    ) -> None:
        self.users = UserStore(engine)
        self.audit = audit or AuditLog(engine)
        self.passwords = passwords or Passwords()
        self.throttle = throttle or LoginThrottle()
        self.setup = SetupToken()
        # When API tokens were last used: written in the background (``run`` it), not by the
        # requests.
        self.token_use = TokenUse(self.users, storage=storage)
        self.authenticator = Authenticator(
            self.users,
            self.audit,
            self.passwords,
            self.throttle,
            self.setup,
            token_use=self.token_use,
        )
        self.accounts = Accounts(self.users, self.audit, self.passwords, self.throttle)

    async def start(self) -> None:
        """With no user at all, issue the one-time setup token and say once how to use it."""
        token = await self.authenticator.start()
        if token is None:
            return
        log.warning(
            "no users yet. Create the first admin with this one-time setup token, valid until "
            "it is used or the hub stops: POST /api/auth/setup with JSON "
            '{"token": "%s", "name": "admin", "password": "<at least 10 characters>"} '
            "(or stop the hub and run: fieldhub user add NAME --role admin)",
            token,
        )
