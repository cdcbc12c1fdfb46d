"""``camera``: pictures for events, kept in the media spool and uploaded to the hub.

On a Pi the picture comes from the system's camera tool, ``rpicam-still`` (``libcamera-still``
on older Raspberry Pi OS), run as a child process under a timeout; in ``--simulate`` and the
demo from a generated image (``_picture.py``: the time and device id in block letters). Either
way the bytes land in the agent's media spool (``agent/media/spool.py``), and an event
announces them (its ``media`` list): the uploader delivers the object once the hub has stored
that event.

What takes a picture:

- the action ``<name>.capture``: reports ``camera.captured`` with the picture; its result
  names the object;
- the events of other units listed in ``capture_on``. By default the event itself waits for
  its picture (at most ``timeout_s``; it keeps the time it happened) and carries it: a
  ``door.opened`` with the picture of who opened. With ``report``, the event goes out at once
  as it is and a second event of that type carries the picture; with ``outside_hours``, only
  events outside those hours (local time) take one. Together they make a door opened at night
  a ``stranger.detected`` with a picture, the device-server seed's ``find_stranger``.

A capture that fails (the tool missing or too slow, the spool full) is never fatal: the event
goes out without a picture and says why in ``data.camera_error``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fieldhub.agent.media.spool import MediaSpool, SpoolError
from fieldhub.agent.reporting import Reporter, StateValue, Value
from fieldhub.agent.units.base import ActionResult, ActionSpec, Unit, UnitStartError
from fieldhub.agent.units.camera_config import CameraConfig, CaptureTrigger
from fieldhub.agent.units.drivers import Drivers
from fieldhub.protocol import MediaRef
from fieldhub.protocol.messages import Severity

__all__ = ["CAMERA_TOOLS", "CameraUnit", "CaptureError"]

CAMERA_TOOLS = ("rpicam-still", "libcamera-still")
"""The system's still-capture programs, newest name first (Raspberry Pi OS Bookworm, Bullseye)."""
CAPTURED_EVENT = "camera.captured"


class CameraUnit(Unit):
    """Takes pictures into the media spool; reports ``<name>.captures`` and the last failure
    in its status, and the events of the module docstring."""

    kind = "camera"

    def __init__(
        self, config: CameraConfig, drivers: Drivers, reporter: Reporter, spool: MediaSpool
    ) -> None:
        super().__init__(config.name, reporter, drivers.clock)
        self._config = config
        self._simulated = drivers.camera
        self._spool = spool
        self._command: list[str] = []
        self._busy = asyncio.Lock()  # one capture at a time: the camera is one device
        self._captures = 0
        self._failures = 0
        self._last_error = ""

    async def start(self) -> None:
        await super().start()
        if self._simulated is not None:
            return
        if self._config.command is not None:
            self._command = list(self._config.command)
            return
        tool = next((t for t in CAMERA_TOOLS if shutil.which(t)), None)
        if tool is None:
            raise UnitStartError(
                f"Camera {self.name!r}: neither {' nor '.join(CAMERA_TOOLS)} is installed "
                "(sudo apt install rpicam-apps), or give its command; off the Pi run the agent "
                "with --simulate"
            )
        self._command = [tool, "-n", "-t", "1", "--width", "{width}", "--height", "{height}"]
        self._command += ["-o", "{path}"]

    @property
    def triggers(self) -> Sequence[CaptureTrigger]:
        """The events of other units that take a picture (``capture_on``)."""
        return self._config.capture_on

    def watching(self, reporter: Reporter) -> Reporter:
        """``reporter`` as other units should get it: their events listed in ``capture_on``
        take a picture on the way through."""
        if not self._config.capture_on:
            return reporter
        return _Watch(reporter, self)

    async def capture(self) -> MediaRef:
        """Take one picture into the spool.

        Raises:
            CaptureError: the program failed, was too slow, or the spool refused the picture.
        """
        async with self._busy:
            try:
                ref = await self._take()
            except (CaptureError, SpoolError) as exc:
                self._failures += 1
                self._last_error = str(exc)
                raise CaptureError(str(exc)) from None
            self._captures += 1
            return ref

    async def _take(self) -> MediaRef:
        config = self._config
        name = f"{self.name}-{time.strftime('%Y%m%dT%H%M%S', time.localtime(self._clock.time()))}"
        if self._simulated is not None:
            data, media_type = await asyncio.to_thread(
                self._simulated.picture, config.width, config.height
            )
            return await self._spool.keep_bytes(data, media_type, f"{name}{_suffix(media_type)}")
        path = self._spool.incoming(_suffix(config.media_type))
        fields = {"path": str(path), "width": str(config.width), "height": str(config.height)}
        argv = [part.format_map(fields) for part in self._command]
        await _run(argv, config.timeout_s)
        if not await asyncio.to_thread(path.exists):
            raise CaptureError(f"{Path(argv[0]).name} wrote no picture to {path.name}")
        return await self._spool.keep_file(
            path, config.media_type, f"{name}{_suffix(config.media_type)}"
        )

    async def picture_event(
        self,
        type: str,
        severity: Severity,
        message: str,
        data: Mapping[str, Any] | None,
        ts: int,
        reporter: Reporter,
    ) -> None:
        """Take a picture and report the event with it; without it, saying why, when the
        capture fails or the agent stops meanwhile (the event is never lost)."""
        media: list[MediaRef] = []
        error = ""
        try:
            media.append(await self.capture())
        except CaptureError as exc:
            error = str(exc)
        except asyncio.CancelledError:
            error = "the agent stopped before the picture was taken"
            raise
        finally:
            extra = {"camera_error": error[:200]} if error else {}
            reporter.event(type, severity, message, {**(data or {}), **extra}, media=media, ts=ts)

    async def _capture_action(self) -> ActionResult:
        ref = await self.capture()  # a CaptureError fails the command with its message
        self._reporter.event(
            CAPTURED_EVENT,
            "info",
            f"Camera {self.name!r} took a picture",
            {"unit": self.name},
            media=[ref],
        )
        return {"sha256": ref.sha256, "size": ref.size, "type": ref.type, "name": ref.name}

    def actions(self) -> Mapping[str, ActionSpec]:
        return {
            f"{self.name}.capture": ActionSpec(
                name=f"{self.name}.capture",
                handler=self._capture_action,
                duration_s=self._config.timeout_s,
                description="take a picture; the hub gets it with a camera.captured event",
            )
        }

    def status(self) -> dict[str, Value | None]:
        return {
            "captures": self._captures,
            "failures": self._failures,
            "last_error": self._last_error or None,
        }


class CaptureError(RuntimeError):
    """A capture failed; the message says why."""


class _Watch:
    """A reporter that lets a camera see other units' events (see :meth:`CameraUnit.watching`).
    Units report on the event loop (``units/base.py``), so the camera's tasks start there."""

    def __init__(self, inner: Reporter, camera: CameraUnit) -> None:
        self._inner = inner
        self._camera = camera

    def telemetry(self, values: Mapping[str, Value], ts: int | None = None) -> None:
        self._inner.telemetry(values, ts)

    def state(self, changes: Mapping[str, StateValue]) -> None:
        self._inner.state(changes)

    def event(
        self,
        type: str,
        severity: Severity = "info",
        message: str = "",
        data: Mapping[str, Any] | None = None,
        *,
        media: Sequence[MediaRef] = (),
        ts: int | None = None,
    ) -> None:
        stamp = self._camera.now_ms() if ts is None else ts
        trigger = next(
            (t for t in self._camera.triggers if t.matches(type, data, stamp / 1000)), None
        )
        if trigger is None or media:
            self._inner.event(type, severity, message, data, media=media, ts=ts)
            return
        camera = self._camera
        if trigger.report is None:  # the event waits for its picture
            work = camera.picture_event(type, severity, message, data, stamp, self._inner)
        else:
            self._inner.event(type, severity, message, data, media=media, ts=ts)
            said = (
                f"{type} outside hours {trigger.outside_hours}" if trigger.outside_hours else type
            )
            extra = {"trigger": type, "unit": (data or {}).get("unit", camera.name)}
            work = camera.picture_event(
                trigger.report, trigger.severity, said, extra, stamp, self._inner
            )
        camera.spawn(work, f"picture for {type}")


async def _run(argv: list[str], timeout_s: float) -> None:
    """Run the capture program; killed (its whole group) after ``timeout_s``.

    Raises:
        CaptureError: it could not start, failed, or was too slow.
    """
    program = Path(argv[0]).name
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        raise CaptureError(f"cannot run {program}: {exc.strerror or exc}") from None
    try:
        async with asyncio.timeout(timeout_s):
            _, errors = await process.communicate()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
        raise CaptureError(f"{program} took longer than {timeout_s:g} s; killed") from None
    if process.returncode != 0:
        last = errors.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        raise CaptureError(f"{program} failed (exit {process.returncode}): {last[0][:160]}")


def _suffix(media_type: str) -> str:
    return {"image/jpeg": ".jpg", "image/png": ".png"}.get(media_type, ".bin")
