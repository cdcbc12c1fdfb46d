"""Provisioning by claim, from the device's side: claim once, wait for approval, keep the
credentials (docs/provisioning.md, "The agent claims by itself").

The hub hands a device's credentials out exactly once (a second fetch is 410) and refuses a
second claim of the same id (409), so each step is on disk before the next one depends on it:
the poll secret goes to ``claim.json`` in the data dir before the first poll (a restart polls
the same claim instead of claiming again), and the credentials go to ``credentials.json``
(mode 0600, written atomically) before the poll secret is deleted. Later starts read that
file and never call the hub's HTTP API.

HTTP is the standard library's ``http.client`` in a worker thread, imported only while a claim
is under way: the agent lives on a Pi in 30 MB, and a provisioned one never needs HTTP again.
The claim token, the poll secret and the credentials are never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

import msgspec

from fieldhub import __version__
from fieldhub.agent.config import ClaimSection
from fieldhub.logthrottle import LogThrottle, held_back
from fieldhub.private_files import write_private

if TYPE_CHECKING:
    import ssl

__all__ = [
    "CREDENTIALS_FILE",
    "POLL_FILE",
    "ClaimError",
    "ClaimSettings",
    "Claimer",
    "DeviceCredentials",
    "stored_credentials",
]

log = logging.getLogger(__name__)

CREDENTIALS_FILE: Final = "credentials.json"
"""In the data dir: the credentials the hub delivered (mode 0600)."""
POLL_FILE: Final = "claim.json"
"""In the data dir while the claim waits: the poll secret (mode 0600)."""
MODEL_PATH: Final = Path("/proc/device-tree/model")
"""The board's model name (Raspberry Pi OS; absent elsewhere), sent with the claim."""
_MAX_ANSWER: Final = 64 * 1024


class ClaimError(RuntimeError):
    """The hub will not give this device credentials, or they cannot be used; the agent cannot
    go on, and the message says what an operator has to do."""


@dataclass(frozen=True, slots=True)
class DeviceCredentials:
    """What the device logs in to the broker with (docs/protocol.md, "Connecting")."""

    username: str
    secret: str = field(repr=False)
    client_id: str


@dataclass(frozen=True, slots=True)
class ClaimSettings:
    """How patiently the agent asks; the defaults suit a person approving within minutes.

    Attributes:
        poll_min_s: first wait between two polls (and after a network error); it doubles per
            attempt, with jitter.
        poll_max_s: longest wait between two polls: an approval is noticed within this.
        timeout_s: for each HTTP request.
    """

    poll_min_s: float = 2.0
    poll_max_s: float = 30.0
    timeout_s: float = 10.0


class _Pending(msgspec.Struct, frozen=True):
    """``claim.json``: the claim this agent polls."""

    device_id: str
    poll_secret: str


class _ClaimAnswer(msgspec.Struct):
    poll_secret: str


class _PollAnswer(msgspec.Struct):
    status: str
    credentials: DeviceCredentials | None = None


class _Problem(msgspec.Struct):
    detail: object = None


class _Gone:
    """The hub knows the claim no more (deleted, or another hub): claim again."""


_GONE: Final = _Gone()


def stored_credentials(data_dir: Path, device_id: str) -> DeviceCredentials | None:
    """The credentials a claim delivered earlier, or None when there are none (blocking).

    Raises:
        ClaimError: the file cannot be read, is damaged, or belongs to another device id.
    """
    path = data_dir / CREDENTIALS_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ClaimError(f"cannot read {path}: {exc.strerror}") from None
    try:
        credentials = msgspec.json.decode(data, type=DeviceCredentials)
    except msgspec.DecodeError as exc:
        raise ClaimError(f"{path} is damaged ({exc}); {_rotate_hint(device_id)}") from None
    if credentials.client_id != device_id:
        raise ClaimError(
            f"{path} holds the credentials of device {credentials.client_id!r}, but this agent"
            f" is {device_id!r} (device.id): move the file away to claim as {device_id!r}"
        )
    return credentials


class Claimer:
    """Gets this device's credentials by claim: ``await Claimer(...).credentials()``.

    Args:
        section: ``hub.claim`` of ``agent.yaml``: the hub's URL and the claim token.
        device_id: the id to claim.
        data_dir: where the poll secret and the credentials are kept.
        settings: see :class:`ClaimSettings`.
    """

    def __init__(
        self,
        section: ClaimSection,
        device_id: str,
        data_dir: Path,
        settings: ClaimSettings | None = None,
    ) -> None:
        self._section = section
        self._device_id = device_id
        self._data_dir = data_dir
        self._settings = settings or ClaimSettings()
        self._base = section.url.rstrip("/")
        self._context: ssl.SSLContext | None = None
        self._throttle = LogThrottle()
        self.waiting = False
        """True once the hub said the claim waits for an operator's approval."""

    @property
    def hub(self) -> str:
        """The hub's URL, as the configuration gives it."""
        return self._section.url

    async def credentials(self) -> DeviceCredentials:
        """Claim, or go on polling the claim an earlier start made, until the hub delivers;
        the credentials are kept in the data dir before this returns.

        No network, a hub that is down or busy: waited out with back-off, for as long as it
        takes (cancel to give up).

        Raises:
            ClaimError: the token was refused, the claim rejected, the id is taken, or the
                credentials were delivered before and are lost.
        """
        if urlsplit(self._base).scheme == "https":
            self._context = await asyncio.to_thread(self._tls_context)
        pending = await asyncio.to_thread(self._load_pending)
        if pending is None:
            log.info("claiming credentials for device %s at %s", self._device_id, self.hub)
        delay = self._settings.poll_min_s
        while True:
            if pending is None:
                pending = await self._claim()
            if pending is not None:
                polled = await self._poll(pending)
                if isinstance(polled, DeviceCredentials):
                    await asyncio.to_thread(self._keep, polled)
                    self.waiting = False
                    return polled
                if polled is _GONE:
                    pending = None
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, self._settings.poll_max_s)

    async def _claim(self) -> _Pending | None:
        """Claim; the poll secret is on disk when this returns it. None: try again later."""
        token = await asyncio.to_thread(self._read_token)
        info = await asyncio.to_thread(device_info)
        body = msgspec.json.encode({"token": token, "device_id": self._device_id, "info": info})
        answer = await self._post("/api/provisioning/claims", body)
        if answer is None:
            return None
        status, data = answer
        if status == 201:
            try:
                poll_secret = msgspec.json.decode(data, type=_ClaimAnswer).poll_secret
            except msgspec.DecodeError:
                raise self._unexpected("claim", status, b"") from None
            pending = _Pending(self._device_id, poll_secret)
            path = self._data_dir / POLL_FILE
            try:
                await asyncio.to_thread(write_private, path, msgspec.json.encode(pending))
            except OSError as exc:  # the claim is spent: claiming again would be refused
                raise ClaimError(
                    f"cannot keep the claim's poll secret in {path} ({exc.strerror}): make the"
                    " data dir writable; the claim is made, so an operator has to remove it"
                    f" (approve, then delete device {self._device_id!r}) before this device"
                    " can claim again"
                ) from None
            return pending
        if status == 401:
            raise ClaimError(
                f"the hub at {self.hub} refused the claim token (unknown, revoked, expired or"
                " used up): give a valid one in hub.claim"
            )
        if status == 409:
            raise ClaimError(
                f"device {self._device_id!r} is registered or has a claim at {self.hub}"
                f" already, and {self._data_dir} holds no credentials for it: an operator can"
                " delete the device (approving a pending claim first) to let it claim again,"
                f" or {_rotate_hint(self._device_id)}"
            )
        raise self._unexpected("claim", status, data)

    async def _poll(self, pending: _Pending) -> DeviceCredentials | _Gone | None:
        """Ask for the credentials once. None: not yet (pending, or no answer)."""
        body = msgspec.json.encode({"poll_secret": pending.poll_secret})
        answer = await self._post(f"/api/provisioning/claims/{self._device_id}/credentials", body)
        if answer is None:
            return None
        status, data = answer
        if status == 202:
            if not self.waiting:
                log.info("waiting for approval at %s (device %s)", self.hub, self._device_id)
                self.waiting = True
            return None
        if status == 200:
            try:
                credentials = msgspec.json.decode(data, type=_PollAnswer).credentials
            except msgspec.DecodeError:
                credentials = None
            if credentials is None:
                raise self._unexpected("poll", status, b"")
            log.info("credentials for device %s received from %s", self._device_id, self.hub)
            return credentials
        if status == 403:
            raise ClaimError(
                f"the claim of device {self._device_id!r} was rejected at {self.hub}: this"
                " device gets no credentials (ask an operator of the hub)"
            )
        if status == 404:
            log.warning(
                "the hub at %s knows no claim of device %s with this agent's poll secret"
                " (deleted?); claiming again",
                self.hub,
                self._device_id,
            )
            await asyncio.to_thread((self._data_dir / POLL_FILE).unlink, missing_ok=True)
            return _GONE
        if status == 410:
            raise ClaimError(
                f"the hub at {self.hub} delivered the credentials of device"
                f" {self._device_id!r} already, but they are not in"
                f" {self._data_dir / CREDENTIALS_FILE} (lost): {_rotate_hint(self._device_id)}"
            )
        raise self._unexpected("poll", status, data)

    async def _post(self, path: str, body: bytes) -> tuple[int, bytes] | None:
        """The hub's status and answer; None (logged sparingly) when it cannot be had now."""
        try:
            status, data = await asyncio.to_thread(
                _post, self._base + path, body, self._context, self._settings.timeout_s
            )
        except OSError as exc:  # also TLS errors and timeouts: a Pi's clock may be wrong at boot
            problem = str(exc) or type(exc).__name__
        else:
            if status < 500 and status not in (408, 429):
                return status, data
            problem = f"HTTP {status}"
        held = self._throttle.due("unreachable")
        if held is not None:
            log.warning(
                "cannot reach the hub at %s (%s); trying again%s",
                self.hub,
                problem,
                held_back(held),
            )
        return None

    def _unexpected(self, what: str, status: int, data: bytes) -> ClaimError:
        try:
            detail = msgspec.json.decode(data, type=_Problem).detail
        except msgspec.DecodeError:
            detail = None
        # Only the hub's own wording: its message, or the messages of its list of validation
        # errors (which name the field and the rule, never the value sent).
        if isinstance(detail, list):
            detail = "; ".join(
                str(item["msg"]) for item in detail if isinstance(item, dict) and "msg" in item
            )
        said = f": {detail}" if isinstance(detail, str) and detail else ""
        return ClaimError(
            f"the hub at {self.hub} answered the {what} with HTTP {status}{said}"
            " (is hub.claim.url the hub's address?)"
        )

    def _read_token(self) -> str:
        if self._section.token_file is None:
            return self._section.token or ""  # the config gives exactly one of the two
        try:
            return Path(self._section.token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ClaimError(
                f"hub.claim.token_file: cannot read {self._section.token_file}: {exc.strerror}"
            ) from None

    def _tls_context(self) -> ssl.SSLContext:
        import ssl

        try:
            return ssl.create_default_context(cafile=self._section.ca_file)
        except OSError as exc:  # ssl.SSLError is one too
            raise ClaimError(
                f"hub.claim.ca_file: cannot load {self._section.ca_file}: {exc}"
            ) from None

    def _load_pending(self) -> _Pending | None:
        path = self._data_dir / POLL_FILE
        try:
            pending = msgspec.json.decode(path.read_bytes(), type=_Pending)
        except FileNotFoundError:
            return None
        except (OSError, msgspec.DecodeError) as exc:
            log.warning("cannot read %s (%s); claiming again", path, exc)
            return None
        if pending.device_id != self._device_id:
            log.warning(
                "%s is a claim of device %s, but this agent is %s now; claiming again",
                path,
                pending.device_id,
                self._device_id,
            )
            return None
        log.info("going on with the claim of device %s at %s", self._device_id, self.hub)
        return pending

    def _keep(self, credentials: DeviceCredentials) -> None:
        try:
            write_private(self._data_dir / CREDENTIALS_FILE, msgspec.json.encode(credentials))
        except OSError as exc:
            # They work now; the poll secret stays, so the next start says what was lost.
            log.error(
                "cannot keep the credentials in %s (%s): connecting with them now, but after"
                " a restart %s",
                self._data_dir,
                exc,
                _rotate_hint(self._device_id),
            )
            return
        (self._data_dir / POLL_FILE).unlink(missing_ok=True)


def device_info() -> dict[str, str]:
    """What an operator sees of a claiming device, to tell it from others (blocking)."""
    uname = os.uname()
    info = {
        "hostname": uname.nodename,
        "machine": uname.machine,
        "agent": f"fieldhub {__version__}",
    }
    with contextlib.suppress(OSError):  # not a Pi
        info["model"] = MODEL_PATH.read_text(encoding="utf-8", errors="replace").strip("\0\n ")
    return info


def _rotate_hint(device_id: str) -> str:
    return (
        f"ask an operator to rotate the credentials (fieldhub device rotate {device_id}) and"
        " give them in agent.yaml as hub.username and hub.secret_file instead of hub.claim"
    )


def _post(
    url: str, body: bytes, context: ssl.SSLContext | None, timeout_s: float
) -> tuple[int, bytes]:
    """POST JSON ``body`` to ``url``: the status and up to 64 KiB of the answer (blocking).

    Raises:
        OSError: no connection, a TLS failure, a timeout, or a broken answer.
    """
    import http.client

    parts = urlsplit(url)
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        connection = http.client.HTTPSConnection(
            parts.hostname or "", parts.port, timeout=timeout_s, context=context
        )
    else:
        connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout_s)
    headers = {"Content-Type": "application/json", "User-Agent": f"fieldhub-agent/{__version__}"}
    try:
        connection.request("POST", parts.path, body, headers)
        response = connection.getresponse()
        return response.status, response.read(_MAX_ANSWER)
    except http.client.HTTPException as exc:
        raise ConnectionError(f"broken answer ({type(exc).__name__})") from exc
    finally:
        connection.close()
