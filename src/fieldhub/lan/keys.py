"""Where each side keeps its pairing keys: one small file per peer, readable by its owner only.

A gateway keeps one file per controller (``<controller id>.key``), a controller one file for
the gateway it is paired with (``gateway.key``). Each holds the peer's id and the key in hex,
written all or nothing (``fieldhub.private_files``): a power cut during pairing leaves the old
state or the new one, never half a key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from fieldhub.lan.session import KEY_BYTES
from fieldhub.private_files import private_dir, write_private

__all__ = ["KeyFile", "PeerKey"]


@dataclass(frozen=True, slots=True)
class PeerKey:
    """A paired peer: its id and the long-term key."""

    peer_id: str
    key: bytes


class KeyFile:
    """One peer's key on disk."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> PeerKey | None:
        """The stored key, or None when there is none (or it is unreadable: then the peer must
        pair again, which the log says)."""
        try:
            body = json.loads(self.path.read_text(encoding="utf-8"))
            key = bytes.fromhex(body["key"])
            if len(key) != KEY_BYTES or not isinstance(body["peer"], str):
                return None
            return PeerKey(body["peer"], key)
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def store(self, peer: PeerKey) -> None:
        """Keep ``peer`` (0600, in a 0700 folder), replacing what was there."""
        private_dir(self.path.parent)
        body = json.dumps({"peer": peer.peer_id, "key": peer.key.hex()})
        write_private(self.path, body.encode())

    def forget(self) -> bool:
        """Delete the key; True if there was one."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        return True
