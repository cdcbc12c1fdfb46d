"""Hub configuration: command-line options and ``FIELDHUB_*`` environment variables.

Validated once at start and frozen after; a bad value fails fast naming the setting.
"""

from __future__ import annotations

import ipaddress
import ssl
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from fieldhub.hub.store.database import normalize_url, sqlite_url
from fieldhub.mqtt.address import DEFAULT_WEBSOCKET_PATH, broker_address
from fieldhub.mqtt.tls import TlsSetupError, broker_context
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
        description="external broker as mqtt(s)://admin:password@host:port; none = embedded",
        repr=False,  # holds the broker admin's password
    )
    broker_ca: Path | None = Field(
        None, description="mqtts:// broker: PEM file of a private CA; none = the system's store"
    )
    broker_pin: str | None = Field(
        None, description="mqtts:// broker: SHA-256 (hex) of its certificate's public key"
    )
    broker_crl: Path | None = Field(
        None, description="mqtts:// broker: PEM revocation list of its certificate's CA"
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
    mqtts: str | None = Field(
        None, description="HOST:PORT of the hub's broker's TLS listener (with mqtt_cert/key)"
    )
    mqtt_ws: str | None = Field(
        None,
        description="HOST:PORT of the hub's broker's MQTT-over-WebSocket listener (ws://), "
        "e.g. 127.0.0.1:9001 behind nginx's /mqtt",
    )
    mqtt_wss: str | None = Field(
        None, description="HOST:PORT of an MQTT-over-WebSocket listener in TLS (with mqtt_cert/key)"
    )
    mqtt_ws_path: str = Field(
        DEFAULT_WEBSOCKET_PATH,
        pattern=r"^/[\x21-\x7e]*$",
        description="the HTTP path of the embedded broker's WebSocket listeners (Mosquitto's "
        "serve every path)",
    )
    mqtt_client_certs: Literal["off", "optional", "required"] = Field(
        "off",
        description="the embedded broker's mqtts listener: check device certificates of the "
        "hub's device CA (fieldhub device cert); 'required' refuses devices without one",
    )
    mqtt_cert: Path | None = Field(None, description="PEM certificate (chain) of the TLS listeners")
    mqtt_key: Path | None = Field(None, description="PEM private key of the TLS listeners")
    instance: str = Field("hub", pattern=INSTANCE_PATTERN, description="this hub process's name")
    cluster_group: str | None = Field(
        None,
        pattern=INSTANCE_PATTERN,
        description="several hubs ingest one fleet: the shared-subscription group they share "
        "(each with its own instance name, one PostgreSQL, a Mosquitto); none = one hub",
    )
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
    # Acknowledge links in alarm notifications (hub/notify/ack_links.py): need the address
    # recipients reach the hub at; none = notifications carry no link.
    public_url: str | None = Field(
        None,
        max_length=256,
        description="the hub's address as people reach it (https://hub.example.org); "
        "none = alarm notifications carry no acknowledge link",
    )
    bundle_max_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, le=2**31, description="the largest bundle an admin may upload"
    )
    ack_link_ttl_s: int = Field(
        7 * 86400, ge=60, le=90 * 86400, description="how long an acknowledge link works"
    )

    # Media attached to events (hub/media/, docs/media.md).
    media_max_bytes: int = Field(
        32 * 1024 * 1024, ge=1, le=1 << 30, description="largest media object the hub takes"
    )
    media_quota_bytes: int = Field(
        5 * 1024**3, ge=0, description="total bytes of media (objects, thumbnails, partial uploads)"
    )
    media_retention_days: Annotated[dict[str, int], NoDecode] = Field(
        {"image": 90, "*": 30},
        description="days media are kept, by top-level type: 'image=90,video=14,*=30' "
        "('*': every other type)",
    )
    media_url_ttl_s: int = Field(
        600,
        ge=10,
        le=86400,
        description="how long an upload URL works (and a partial upload waits)",
    )
    # An S3-compatible store for complete media objects (hub/media/s3.py); none = the data folder.
    media_s3_url: str | None = Field(
        None,
        pattern=r"^https?://[^/?#@\s]+/?$",
        description="endpoint of an S3-compatible store for media (https://host[:port]); "
        "none = media in the data folder",
    )
    media_s3_bucket: str = Field(
        "fieldhub-media",
        pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$",
        description="bucket of the media (made on first start when missing)",
    )
    media_s3_prefix: str = Field(
        "",
        pattern=r"^([A-Za-z0-9_-][A-Za-z0-9_.-]*/)*$",
        description="folder of the media inside the bucket, ending in '/', no part starting "
        "with '.' (empty: the top)",
    )
    media_s3_region: str | None = Field(None, max_length=64, description="the store's region")
    media_s3_access_key: str | None = Field(None, max_length=256, description="S3 access key")
    media_s3_secret_key: SecretStr | None = Field(
        None, description="S3 secret key (never logged)", repr=False
    )
    media_s3_verify_tls: bool = Field(
        True, description="check the S3 store's TLS certificate (off only for a test store)"
    )
    media_s3_ca_file: Path | None = Field(
        None, description="CA certificates (PEM) the S3 store's certificate is checked against"
    )

    @field_validator("media_retention_days", mode="before")
    @classmethod
    def _retention(cls, value: Any) -> Any:
        """``image=90,*=30``, or a mapping; every type needs a whole number of days >= 1, and
        ``*`` must be there, so every object has a retention."""
        if isinstance(value, str):
            pairs = [part.partition("=") for part in value.split(",") if part.strip()]
            try:
                value = {kind.strip(): int(days) for kind, _, days in pairs}
            except ValueError:
                raise ValueError(
                    f"media_retention_days {value!r} must look like image=90,*=30"
                ) from None
        if isinstance(value, dict):
            if "*" not in value:
                raise ValueError("media_retention_days needs '*' (every other type), as *=30")
            for kind, days in value.items():
                if not (kind == "*" or kind.isalnum()) or not isinstance(days, int) or days < 1:
                    raise ValueError(
                        f"media_retention_days: {kind}={days} must be a top-level type (image) "
                        "or '*' with a whole number of days >= 1"
                    )
        return value

    @field_validator("broker")
    @classmethod
    def _broker_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            address = broker_address(value)
        except ValueError:
            parts = urlsplit(value)
            shown = value.replace(f":{parts.password}@", ":***@") if parts.password else value
            raise ValueError(
                f"broker {shown!r} must look like mqtt(s)://admin:password@host:port"
            ) from None
        if address.websocket_path is not None:
            raise ValueError("the hub speaks to its broker over TCP: mqtt:// or mqtts://")
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
            raise ValueError(f"public_url {value!r} must look like https://host[:port][/path]")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _cluster(self) -> HubSettings:
        """Hubs of a cluster share one database; SQLite is one hub's (hub/store/exclusive.py)."""
        if self.cluster_group is not None and self.db_url.startswith("sqlite"):
            raise ValueError(
                "cluster_group: several hubs need one PostgreSQL database (--db "
                "postgresql://…); a SQLite database is one hub's"
            )
        return self

    @model_validator(mode="after")
    def _tls(self) -> HubSettings:
        """TLS settings that would be ignored are refused (the operator would believe them in
        force), and the broker's CA file and pin are tried now, so a bad one stops the start."""
        if (self.mqtt_cert is None) != (self.mqtt_key is None):
            raise ValueError("give mqtt_cert and mqtt_key together")
        if self.mqtt_cert is None:
            if self.mqtts is not None:
                raise ValueError(
                    "mqtts (HOST:PORT of the TLS listener) goes with mqtt_cert, mqtt_key"
                )
            if self.mqtt_wss is not None:
                raise ValueError(
                    "mqtt_wss (HOST:PORT of the TLS WebSocket listener) goes with mqtt_cert, "
                    "mqtt_key"
                )
        elif self.mqtts is None and self.mqtt_wss is None:
            raise ValueError("mqtt_cert and mqtt_key are for mqtts or mqtt_wss (HOST:PORT)")
        if self.mqtt_client_certs != "off" and self.mqtts is None:
            raise ValueError("mqtt_client_certs is checked on the mqtts listener: give mqtts")
        if self.broker is None or not broker_address(self.broker).tls:
            if any(v is not None for v in (self.broker_ca, self.broker_pin, self.broker_crl)):
                raise ValueError("broker_ca, broker_pin and broker_crl need an mqtts:// broker")
            return self
        try:
            self.broker_tls()
        except TlsSetupError as exc:
            raise ValueError(f"broker_ca/broker_pin/broker_crl: {exc}") from None
        return self

    def broker_tls(self) -> ssl.SSLContext | None:
        """The TLS context for an ``mqtts://`` external broker (None otherwise): the hub's bus
        and its dynamic-security admin connection both use it.

        Raises:
            TlsSetupError: the CA or CRL file does not load, or the pin is not a SHA-256 in hex.
        """
        if self.broker is None or not broker_address(self.broker).tls:
            return None
        ca_file = str(self.broker_ca) if self.broker_ca is not None else None
        crl_file = str(self.broker_crl) if self.broker_crl is not None else None
        return broker_context(ca_file=ca_file, pin_sha256=self.broker_pin, crl_file=crl_file)

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

    @field_validator("http", "mqtt", "mqtts", "mqtt_ws", "mqtt_wss")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is not None:
            parse_host_port(value)
        return value

    @property
    def db_url(self) -> str:
        """The database URL in effect."""
        return self.db or sqlite_url(self.data.resolve() / "fieldhub.db")

    @property
    def media_base_url(self) -> str:
        """Where devices reach the hub's HTTP API for uploads: ``public_url``, else the HTTP
        listener (a wildcard address as the loopback: set ``public_url`` for devices on
        other machines)."""
        if self.public_url is not None:
            return self.public_url
        host, port = self.http_address
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    @property
    def http_address(self) -> tuple[str, int]:
        """Host and port of the HTTP listener."""
        return parse_host_port(self.http)

    @property
    def mqtt_address(self) -> tuple[str, int]:
        """Host and port of the hub's own broker's listener (managed or embedded)."""
        return parse_host_port(self.mqtt)

    @property
    def mqtts_address(self) -> tuple[str, int] | None:
        """Host and port of the hub's broker's TLS listener, if it has one."""
        return None if self.mqtts is None else parse_host_port(self.mqtts)

    @property
    def device_ca_folder(self) -> Path:
        """Where the hub's device CA lives (``hub/broker/device_ca.py``)."""
        return self.data / "device-ca"

    @property
    def mqtt_ws_address(self) -> tuple[str, int] | None:
        """Host and port of the hub's broker's plain WebSocket listener, if it has one."""
        return None if self.mqtt_ws is None else parse_host_port(self.mqtt_ws)

    @property
    def mqtt_wss_address(self) -> tuple[str, int] | None:
        """Host and port of the hub's broker's TLS WebSocket listener, if it has one."""
        return None if self.mqtt_wss is None else parse_host_port(self.mqtt_wss)
