"""The demo's signing key: so that a new user can sign a bundle and roll it out at once.

A real fleet's signing key is made on the signer's machine (``fieldhub bundle keygen``) and
its public key written into every device's ``agent.yaml``; the demo plays both parts. At its
start it makes the key pair, or reuses the one it made before, in its data folder:
``DATA/demo-bundles.key`` (the private key, 0600, never printed) and ``DATA/demo-bundles.pub``;
registers the public key with the hub (``POST /api/bundle-keys`` does the same), and gives
every demo agent that key in ``bundles.trusted_keys``. The README's demo section then signs
``examples/bundles/hello`` with it (docs/bundles.md).

Why a key in the data folder and not a built-in one: a key in the repository would be
everybody's key, and a demo hub reachable on a network would install whatever anybody signed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Final

from fieldhub.bundles import BadKey, SigningKey
from fieldhub.private_files import write_private

__all__ = ["DEMO_KEY_NAME", "demo_signing_key", "register_demo_key"]

DEMO_KEY_NAME: Final = "demo-bundles"
"""The key's file names in the data folder (``.key``, ``.pub``) and its name on the hub."""


def demo_signing_key(data: Path) -> SigningKey:
    """The demo's key pair in ``data``: the one made before, else a new one (blocking I/O).

    Raises:
        BadKey: the private key file is there but holds no key (it is never overwritten:
            bundles signed with it would no longer install).
    """
    private = data / f"{DEMO_KEY_NAME}.key"
    try:
        key = SigningKey.from_pem(private.read_bytes())
    except FileNotFoundError:
        key = SigningKey.generate()
        write_private(private, key.to_pem())
    except BadKey as exc:
        raise BadKey(f"{private}: {exc}") from None
    (data / f"{DEMO_KEY_NAME}.pub").write_text(key.public.to_text() + "\n", encoding="utf-8")
    return key


async def register_demo_key(hub: Any, data: Path) -> tuple[SigningKey, bool]:
    """The demo's key, its public half registered on ``hub`` (``fieldhub.hub.app.Hub``) once;
    and whether the hub accepts bundles it signs (False when an admin revoked it: a revoked
    key never comes back, docs/rollouts.md)."""
    key = await asyncio.to_thread(demo_signing_key, data)
    known = {record.key_id: record for record in await hub.bundles.keys()}
    record = known.get(key.public.key_id)
    if record is None:
        await hub.bundles.add_key(key.public.to_text(), DEMO_KEY_NAME, actor="demo", source="")
        return key, True
    return key, record.revoked_at is None
