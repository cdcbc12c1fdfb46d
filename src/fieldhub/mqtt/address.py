"""What a broker URL says: host, port, whether TLS is spoken and whether over WebSocket; the
one home of the schemes.

``mqtt://`` (or ``tcp://``) is plain TCP, default port 1883; ``mqtts://`` (or ``ssl://``) is
TLS, default port 8883 (the IANA ports). ``ws://`` and ``wss://`` are MQTT over WebSocket
(``fieldhub.mqtt.websocket``), plain or in TLS, default ports 80 and 443 (a web server such as
nginx in front of the broker) and default path ``/mqtt``. The hub's ``--broker`` and the
agent's ``hub.broker`` are both read here, so both know the same schemes and defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

__all__ = ["BrokerAddress", "broker_address"]

PLAIN_SCHEMES: Final = ("mqtt", "tcp")
TLS_SCHEMES: Final = ("mqtts", "ssl", "wss")
WEBSOCKET_SCHEMES: Final = ("ws", "wss")
DEFAULT_WEBSOCKET_PATH: Final = "/mqtt"
_DEFAULT_PORTS: Final = {
    "mqtt": 1883,
    "tcp": 1883,
    "mqtts": 8883,
    "ssl": 8883,
    "ws": 80,
    "wss": 443,
}


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """Where a broker is and how to speak to it."""

    host: str
    port: int
    tls: bool
    websocket_path: str | None = None
    """The HTTP path of an MQTT-over-WebSocket broker; None for MQTT over TCP."""

    @property
    def url(self) -> str:
        """``mqtt(s)://host:port`` or ``ws(s)://host:port/path``, without credentials: for logs
        and devices."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.websocket_path is not None:
            return f"{'wss' if self.tls else 'ws'}://{host}:{self.port}{self.websocket_path}"
        return f"{'mqtts' if self.tls else 'mqtt'}://{host}:{self.port}"


def broker_address(url: str) -> BrokerAddress:
    """Read ``scheme://[user:password@]host[:port]``, with a path for ``ws(s)://``.

    Raises:
        ValueError: the scheme is not one of mqtt, tcp, mqtts, ssl, ws, wss, the host or port
            is missing or wrong, or a TCP URL has a path (the message never repeats the
            password).
    """
    parts = urlsplit(url)
    if parts.scheme not in _DEFAULT_PORTS:
        raise ValueError(
            "the broker URL must start with mqtt://, mqtts://, ws:// or wss://, "
            f"not {parts.scheme!r}"
        )
    try:
        port = parts.port
    except ValueError:
        port = 0
    if not parts.hostname or port == 0:
        raise ValueError("the broker URL needs a host and a port from 1 to 65535")
    path: str | None = None
    if parts.scheme in WEBSOCKET_SCHEMES:
        path = parts.path or DEFAULT_WEBSOCKET_PATH
    elif parts.path not in ("", "/"):
        raise ValueError("an mqtt:// or mqtts:// broker URL has no path (ws:// and wss:// do)")
    return BrokerAddress(
        parts.hostname, port or _DEFAULT_PORTS[parts.scheme], parts.scheme in TLS_SCHEMES, path
    )
