"""What a broker URL says: host, port and whether TLS is spoken; the one home of the schemes.

``mqtt://`` (or ``tcp://``) is plain TCP, default port 1883; ``mqtts://`` (or ``ssl://``) is
TLS, default port 8883 (the IANA ports). The hub's ``--broker`` and the agent's
``hub.broker`` are both read here, so both know the same schemes and defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

__all__ = ["BrokerAddress", "broker_address"]

PLAIN_SCHEMES: Final = ("mqtt", "tcp")
TLS_SCHEMES: Final = ("mqtts", "ssl")
_DEFAULT_PORTS: Final = {"mqtt": 1883, "tcp": 1883, "mqtts": 8883, "ssl": 8883}


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """Where a broker is and how to speak to it."""

    host: str
    port: int
    tls: bool

    @property
    def url(self) -> str:
        """``mqtt(s)://host:port``, without credentials: for logs and devices."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'mqtts' if self.tls else 'mqtt'}://{host}:{self.port}"


def broker_address(url: str) -> BrokerAddress:
    """Read ``scheme://[user:password@]host[:port]``.

    Raises:
        ValueError: the scheme is not one of mqtt, tcp, mqtts, ssl, or the host or port is
            missing or wrong (the message never repeats the password).
    """
    parts = urlsplit(url)
    if parts.scheme not in _DEFAULT_PORTS:
        raise ValueError(
            f"the broker URL must start with mqtt:// or mqtts://, not {parts.scheme!r}"
        )
    try:
        port = parts.port
    except ValueError:
        port = 0
    if not parts.hostname or port == 0:
        raise ValueError("the broker URL needs a host and a port from 1 to 65535")
    return BrokerAddress(
        parts.hostname, port or _DEFAULT_PORTS[parts.scheme], parts.scheme in TLS_SCHEMES
    )
