"""The ``hub`` section of a device's file: the broker and how the device logs in.

The agent's file has it (``agent/config.py``) and so has the gateway's (``gateway/config.py``).
A module of its own so that the gateway reads it without importing the agent's units (their
hardware libraries cost the gateway 4.4 MB of memory, measured, docs/gateway.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import msgspec

from fieldhub.agent.yamlconfig import ConfigError

__all__ = ["ClaimSection", "HubSection"]


class ClaimSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Where and with which claim token this device asks for its own credentials.

    The token is read only when the agent has to claim (no credentials in ``data_dir`` yet), so
    an installer may remove its file once the device is provisioned.
    """

    url: Annotated[str, msgspec.Meta(pattern=r"^https?://[^/\s]+(/\S*)?$")]
    token: str | None = None  # or, better, in a file only root can read:
    token_file: str | None = None
    ca_file: str | None = None  # a private CA for https; the system's trust store otherwise

    def __post_init__(self) -> None:
        if (self.token is None) == (self.token_file is None):
            raise ValueError("give exactly one of token, token_file")


class HubSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Where the hub's broker is and how this device logs in (see docs/provisioning.md): with
    ``username`` and a secret, or by claiming its credentials (``claim``).

    ``ws://`` and ``wss://`` brokers speak MQTT over WebSocket (path ``/mqtt`` unless given),
    for sites that let only HTTPS out: ``wss://hub.example.net/mqtt`` through nginx.
    An ``mqtts://`` or ``wss://`` broker is verified against the system's trust store or
    ``ca_file`` (a private CA), and, with ``pin_sha256``, must also show that public key; with
    ``crl_file``, a revoked certificate is refused (docs/agent.md, TLS).
    """

    broker: Annotated[str, msgspec.Meta(pattern=r"^(mqtts?://[^/\s]+|wss?://[^/\s]+(/\S*)?)$")]
    username: str | None = None
    secret: str | None = None  # or, better, in a file only root can read:
    secret_file: str | None = None
    claim: ClaimSection | None = None
    ca_file: str | None = None  # mqtts:// only: a private CA; the system's trust store otherwise
    pin_sha256: str | None = None  # mqtts:// only: SHA-256 of the broker's public key, hex
    crl_file: str | None = None  # mqtts:// only: the CA's revocation list (PEM)
    client_cert: str | None = (
        None  # mqtts:// only: this device's certificate (fieldhub device cert)
    )
    client_key: str | None = None  # mqtts:// only: its private key (PEM, 0600)

    def __post_init__(self) -> None:
        if not self.broker.startswith(("mqtts://", "wss://")):
            # Without TLS they would be silently ignored, and the operator would believe the
            # broker is checked.
            for field in ("ca_file", "pin_sha256", "crl_file", "client_cert", "client_key"):
                if getattr(self, field) is not None:
                    raise ValueError(f"{field} needs an mqtts:// or wss:// broker")
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("give client_cert and client_key together")
        if self.pin_sha256 is not None:
            # Imported only here: ssl costs a plain-TCP agent 4 MB (fieldhub.cli.plain).
            from fieldhub.mqtt.tls import TlsSetupError, normalize_pin

            try:
                normalize_pin(self.pin_sha256)
            except TlsSetupError as exc:
                raise ValueError(str(exc)) from None
        # Checked here, not where the secret is read, so that a wrong combination fails at load
        # with the file's line. A username without a secret stays valid: the secret may come
        # from elsewhere (``read_secret`` refuses it for a file).
        if self.claim is not None:
            given = [
                k for k in ("username", "secret", "secret_file") if getattr(self, k) is not None
            ]
            if given:
                raise ValueError(f"give either claim or {', '.join(given)}, not both")
        elif self.username is None:
            raise ValueError("give username with secret or secret_file, or claim")
        if self.secret is not None and self.secret_file is not None:
            raise ValueError("give exactly one of secret, secret_file")

    def read_secret(self, config_path: Path) -> str | None:
        """The MQTT secret, from the file or inline; None when the device claims (``claim``).

        Raises:
            ConfigError: no secret given, or its file cannot be read.
        """
        if self.claim is not None:
            return None
        if self.secret is not None:
            return self.secret
        if self.secret_file is None:
            raise ConfigError(config_path, None, "hub", "give exactly one of secret, secret_file")
        try:
            return Path(self.secret_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(config_path, None, "hub.secret_file", f"{exc}") from None
