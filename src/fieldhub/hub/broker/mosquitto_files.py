"""What a managed Mosquitto reads, written by the hub into its folder (``DATA/mosquitto``, 0700).

- ``mosquitto.conf``: ``deploy/mosquitto/fieldhub.conf`` (the one copy of what fieldhub needs
  of the broker, which operators and the tests use too) plus the listener, the
  dynamic-security plugin and persistence in this folder, and the extra listeners the hub was
  given (:class:`Listener`: TLS ones made from ``deploy/mosquitto/tls.conf``, the operators'
  TLS settings, WebSocket ones with ``protocol websockets``). Rewritten at every start.
- ``dynamic-security.json``: the plugin's state (device clients and roles, the hub's client),
  which the plugin rewrites on every change. The hub makes it with one admin,
  ``fieldhub-admin``, whose password it changes at every start: the hub stores no admin
  password anywhere but ``admin.json``.
- ``admin.json``: where the running broker listens and its admin's password (0600), so that
  ``fieldhub device add`` can hand a new secret to the hub's Mosquitto while the hub runs (only
  the CLI knows that secret; the hub's store keeps digests).

Mosquitto keeps passwords as PBKDF2-SHA512 over a random salt; :func:`_hashed` writes what
``mosquitto_ctrl dynsec init`` writes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import fieldhub
from fieldhub.private_files import private_dir, write_private

__all__ = ["ADMIN_USERNAME", "AdminFile", "Listener", "prepare", "shipped_config"]

ADMIN_USERNAME = "fieldhub-admin"
_PBKDF2_ITERATIONS = 101  # what `mosquitto_ctrl dynsec init` writes
_PACKAGE = Path(fieldhub.__file__).resolve().parent
# A wheel carries the files inside the package (pyproject.toml, force-include); a checkout has
# them in deploy/, two levels above src/fieldhub.
_SHIPPED = (
    _PACKAGE / "deploy" / "mosquitto.conf",
    _PACKAGE.parents[1] / "deploy" / "mosquitto" / "fieldhub.conf",
)
_SHIPPED_TLS = (
    _PACKAGE / "deploy" / "mosquitto-tls.conf",
    _PACKAGE.parents[1] / "deploy" / "mosquitto" / "tls.conf",
)
_ADMIN_ACLS = (  # what `mosquitto_ctrl dynsec init` gives its admin: manage, and read $SYS
    ("publishClientSend", "$CONTROL/dynamic-security/#"),
    ("publishClientReceive", "$CONTROL/dynamic-security/#"),
    ("subscribePattern", "$CONTROL/dynamic-security/#"),
    ("publishClientReceive", "$SYS/#"),
    ("subscribePattern", "$SYS/#"),
)


def shipped_config() -> str | None:
    """The text of ``deploy/mosquitto/fieldhub.conf``, or None when this install lacks it."""
    return _shipped(_SHIPPED)


def _shipped(paths: Sequence[Path]) -> str | None:
    for path in paths:
        if path.is_file():
            return path.read_text(encoding="utf-8")
    return None


@dataclass(frozen=True, slots=True)
class Listener:
    """A listener beside the main one: TLS (``cert`` and ``key``), WebSocket, or both."""

    host: str
    port: int
    websockets: bool = False
    cert: Path | None = None
    key: Path | None = None

    @property
    def url(self) -> str:
        """What devices dial: ``mqtts://``, ``ws://`` or ``wss://`` (Mosquitto serves MQTT over
        WebSocket on every path; ``/mqtt`` is fieldhub's)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        secure = self.cert is not None
        if self.websockets:
            return f"{'wss' if secure else 'ws'}://{host}:{self.port}/mqtt"
        return f"mqtts://{host}:{self.port}"

    def config(self) -> str:
        """Its lines of ``mosquitto.conf``: a TLS listener is ``deploy/mosquitto/tls.conf``
        with this address and these files, so operators and the hub run the same settings.

        Raises:
            FileNotFoundError: a TLS listener, and this installation lacks ``tls.conf``.
        """
        if self.cert is None or self.key is None:
            lines = [f"listener {self.port} {self.host}"]
        else:
            template = _shipped(_SHIPPED_TLS)
            if template is None:
                raise FileNotFoundError("this installation lacks deploy/mosquitto/tls.conf")
            values = {
                "listener": f"{self.port} {self.host}",
                "certfile": str(self.cert.resolve()),
                "keyfile": str(self.key.resolve()),
            }
            lines = [
                f"{option} {values[option]}"
                if (option := line.split(" ", 1)[0]) in values
                else line
                for line in template.splitlines()
            ]
        if self.websockets:
            lines.insert(1 + _listener_line(lines), "protocol websockets")
        return "\n".join(lines)


def _listener_line(lines: list[str]) -> int:
    return next(i for i, line in enumerate(lines) if line.startswith("listener "))


@dataclass(frozen=True, slots=True)
class AdminFile:
    """Where the hub's running Mosquitto listens, and how its admin logs in (``admin.json``)."""

    host: str
    port: int
    password: str
    pid: int

    @property
    def url(self) -> str:
        """``mqtt://fieldhub-admin:PASSWORD@host:port``, as ``--broker`` takes it."""
        return f"mqtt://{ADMIN_USERNAME}:{self.password}@{self.host}:{self.port}"

    def save(self, folder: Path) -> None:
        """Write ``admin.json`` (0600) for the CLI."""
        write_private(folder / "admin.json", json.dumps(asdict(self)).encode())

    @staticmethod
    def running(folder: Path) -> AdminFile | None:
        """The broker of a hub that runs now on ``folder``, or None (no file, or its process
        has gone)."""
        try:
            said = json.loads((folder / "admin.json").read_text(encoding="utf-8"))
            found = AdminFile(
                str(said["host"]), int(said["port"]), str(said["password"]), int(said["pid"])
            )
            os.kill(found.pid, 0)
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return found

    @staticmethod
    def forget(folder: Path) -> None:
        """The broker stopped: no CLI should try it."""
        (folder / "admin.json").unlink(missing_ok=True)


def prepare(
    folder: Path,
    *,
    base: str,
    host: str,
    port: int,
    plugin: Path,
    listeners: Sequence[Listener] = (),
) -> str:
    """Write the configuration and set a fresh admin password; the password.

    Args:
        folder: the broker's folder (made 0700).
        base: the text of ``deploy/mosquitto/fieldhub.conf``.
        host: address to listen on.
        port: port to listen on.
        plugin: Mosquitto's ``mosquitto_dynamic_security.so``.
        listeners: more listeners (TLS, WebSocket). The main one stays plain TCP: Mosquitto
            2.0.11 does not start with WebSocket listeners alone ("Unable to start any
            listening sockets"), and the hub's own connections use it on loopback.
    """
    private_dir(folder)
    lines = [
        "# Written by the fieldhub hub at every start of its managed Mosquitto: edits are lost.",
        "# Change deploy/mosquitto/fieldhub.conf, or run your own broker (--broker).",
        base,
        f"listener {port} {host}",
        f"plugin {plugin}",
        f"plugin_opt_config_file {folder / 'dynamic-security.json'}",
        # Retained messages (presence, desired state) and sessions survive a restart.
        "persistence true",
        f"persistence_location {folder}/",
        "autosave_interval 60",
        # What goes wrong, to the hub's log (through its pipe); not every connection.
        "log_dest stderr",
        "log_type error",
        "log_type warning",
        *(listener.config() for listener in listeners),
    ]
    if os.geteuid() == 0:
        # Started by root, Mosquitto would switch to the user 'mosquitto', which may not read
        # this 0700 folder: it stays the hub's user (better: run the hub as its own user).
        lines.append("user root")
    write_private(folder / "mosquitto.conf", ("\n".join(lines) + "\n").encode())
    password = secrets.token_urlsafe(24)
    path = folder / "dynamic-security.json"
    state = json.loads(path.read_text(encoding="utf-8")) if path.exists() else _first_state()
    _set_admin(state, password)
    write_private(path, json.dumps(state, indent=1).encode())
    return password


def _first_state() -> dict[str, Any]:
    """The plugin's state before the hub made anything: the admin role, everything denied."""
    return {
        "clients": [],
        "roles": [
            {
                "rolename": ADMIN_USERNAME,
                "acls": [{"acltype": t, "topic": topic, "allow": True} for t, topic in _ADMIN_ACLS],
            }
        ],
        "groups": [],
        "defaultACLAccess": {
            "publishClientSend": False,
            "publishClientReceive": False,
            "subscribe": False,
            "unsubscribe": True,
        },
    }


def _set_admin(state: dict[str, Any], password: str) -> None:
    """Give the admin client ``password`` (made with its role if missing)."""
    clients: list[dict[str, Any]] = state.setdefault("clients", [])
    admin = next((c for c in clients if c.get("username") == ADMIN_USERNAME), None)
    if admin is None:
        admin = {"username": ADMIN_USERNAME, "textName": "the hub's dynamic-security admin"}
        clients.append(admin)
    admin["roles"] = [{"rolename": ADMIN_USERNAME}]
    admin.update(_hashed(password))
    roles: list[dict[str, Any]] = state.setdefault("roles", [])
    if not any(r.get("rolename") == ADMIN_USERNAME for r in roles):
        roles.append(_first_state()["roles"][0])


def _hashed(password: str) -> dict[str, Any]:
    salt = secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, _PBKDF2_ITERATIONS)
    return {
        "password": base64.b64encode(digest).decode(),
        "salt": base64.b64encode(salt).decode(),
        "iterations": _PBKDF2_ITERATIONS,
    }
