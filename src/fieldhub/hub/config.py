"""Hub configuration: command-line options and ``FIELDHUB_*`` environment variables.

Validated once at start and frozen after; a bad value fails fast naming the setting.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from fieldhub.hub.store.database import normalize_url, sqlite_url
from fieldhub.protocol.topics import INSTANCE_PATTERN


def parse_host_port(value: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """Split ``HOST:PORT`` (or ``:PORT``, or ``PORT``) into its parts.

    Raises:
        ValueError: the port is not a number from 0 to 65535.
    """
    host, _, port = value.rpartition(":")
    host = host.strip("[]") or default_host
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not HOST:PORT with a port from 0 to 65535")
    return host, int(port)


class HubSettings(BaseSettings):
    """Everything the hub process needs to know at start."""

    # Inputs stay out of error texts: the broker URL holds the broker admin's password.
    model_config = SettingsConfigDict(
        env_prefix="FIELDHUB_", frozen=True, extra="forbid", hide_input_in_errors=True
    )

    data: Path = Field(Path("data"), description="folder for the SQLite file and hub state")
    broker: str | None = Field(
        None,
        description="external broker as mqtt://admin:password@host:port; none = embedded",
        repr=False,  # holds the broker admin's password
    )
    local_broker: Literal["auto", "mosquitto", "embedded"] = Field(
        "auto",
        description="without --broker: 'auto' runs a Mosquitto of the hub's own where one is "
        "installed, else the embedded amqtt broker; 'mosquitto' or 'embedded' insist",
    )
    mosquitto_bin: str = Field(
        "mosquitto", min_length=1, description="the Mosquitto binary the hub runs: name or path"
    )
    db: str | None = Field(None, description="database URL; none = SQLite file in the data folder")
    http: str = Field("127.0.0.1:8080", description="HOST:PORT of the REST API and dashboard")
    mqtt: str = Field(
        "127.0.0.1:1883", description="HOST:PORT of the hub's broker (managed or embedded)"
    )
    instance: str = Field("hub", pattern=INSTANCE_PATTERN, description="this hub process's name")
    stale_after_s: float = Field(300.0, gt=0, description="silence after which a device is stale")
    confirm_presence_s: float = Field(
        5.0,
        gt=0,
        description="after the hub (re)connects to the broker, seconds a device believed "
        "connected has to be confirmed (retained status, status or data) before it is offline",
    )
    qos: int = Field(1, ge=0, le=1, description="QoS of the hub's subscriptions")
    trusted_proxies: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="addresses or networks (comma-separated) of reverse proxies whose "
        "X-Forwarded-For/-Proto the hub believes; none by default",
    )

    # E-mail notifications (hub/notify/channels/email.py): one SMTP server for the hub.
    smtp_host: str | None = Field(None, description="SMTP server for e-mail; none = no e-mail")
    smtp_port: int = Field(587, ge=1, le=65535, description="SMTP server port")
    smtp_starttls: bool = Field(True, description="upgrade the SMTP connection with STARTTLS")
    smtp_user: str | None = Field(None, description="SMTP login user; none = no login")
    smtp_password: SecretStr | None = Field(None, description="SMTP login password", repr=False)
    smtp_from: str = Field("fieldhub@localhost", max_length=256, description="From: address")
    # Notification delivery (hub/notify/worker.py).
    notify_max_attempts: int = Field(
        10, ge=1, le=1000, description="delivery attempts before a notification is dead"
    )
    notify_retry_s: float = Field(
        5.0, gt=0, le=3600, description="first retry after a failed delivery (doubling)"
    )
    notify_retry_max_s: float = Field(
        600.0, gt=0, le=86400, description="longest wait between two delivery attempts"
    )
    notify_timeout_s: float = Field(
        10.0, gt=0, le=300, description="one delivery attempt's time limit"
    )
    notify_keep_days: int = Field(
        30, ge=1, le=3650, description="days delivered and dead notifications are kept"
    )
    notify_concurrency: int = Field(8, ge=1, le=256, description="notifications delivered at once")

    @field_validator("broker")
    @classmethod
    def _broker_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        try:
            port_ok = parts.port is None or parts.port > 0
        except ValueError:
            port_ok = False
        if parts.scheme not in ("mqtt", "tcp") or not parts.hostname or not port_ok:
            shown = value.replace(f":{parts.password}@", ":***@") if parts.password else value
            raise ValueError(f"broker {shown!r} must look like mqtt://admin:password@host:port")
        return value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _proxies(cls, value: Any) -> Any:
        """Each an IP address or network: a forwarded header names the client only when the
        connection comes from one of them (otherwise any local process could choose the
        address that the login throttle and the audit log see)."""
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list | tuple):
            return value  # not a list: the type check says so
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(
                    f"trusted proxy {entry!r} is not an IP address or network (10.0.0.0/8)"
                ) from None
        return tuple(value)

    @field_validator("db")
    @classmethod
    def _db_url(cls, value: str | None) -> str | None:
        return None if value is None else normalize_url(value)

    @field_validator("http", "mqtt")
    @classmethod
    def _host_port(cls, value: str) -> str:
        parse_host_port(value)
        return value

    @property
    def db_url(self) -> str:
        """The database URL in effect."""
        return self.db or sqlite_url(self.data.resolve() / "fieldhub.db")

    @property
    def http_address(self) -> tuple[str, int]:
        """Host and port of the HTTP listener."""
        return parse_host_port(self.http)

    @property
    def mqtt_address(self) -> tuple[str, int]:
        """Host and port of the hub's own broker's listener (managed or embedded)."""
        return parse_host_port(self.mqtt)
