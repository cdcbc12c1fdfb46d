"""The LAN protocol between a gateway and its controllers (docs/gateway.md, "The LAN protocol").

Standard library only: ``fieldhub controller`` is built on it and documents the protocol for
firmware writers, so it must not need more than Python itself.
"""

from typing import Final

PROTOCOL_VERSION: Final = 1
"""Sent in every announcement and hello; a peer speaking another version is refused."""
DEFAULT_TCP_PORT: Final = 7410
"""Where a controller listens for its gateway."""
DEFAULT_ANNOUNCE_PORT: Final = 7411
"""Where a gateway listens for announcements (UDP)."""
DESIRED_ACTION: Final = "state.set"
"""The action a gateway sends a child's desired state as, once per version (docs/gateway.md)."""
