"""The agent's camera and media spool on real parts: files on disk, a real child process for
the capture program, gpiozero's mock pins for the door (issue 15). What a user checks: the
picture is on disk whole and private, its event announces it with the right hash, a full
spool refuses and says so, a slow camera is killed, a door opened outside hours is a
``stranger.detected`` with a picture."""

from __future__ import annotations

import hashlib
import io
import re
import stat
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest
from PIL import Image

from fieldhub.agent.media.spool import MediaSpool, SpoolFull
from fieldhub.agent.reporting import StateValue, Value
from fieldhub.agent.units import (
    Drivers,
    UnitConfig,
    UnitConfigError,
    UnitStartError,
    build_units,
    mock_pin_factory,
)
from fieldhub.agent.units.camera import CameraUnit, CaptureError
from fieldhub.agent.units.camera_config import CameraConfig
from fieldhub.agent.units.drivers import SystemClock
from fieldhub.agent.units.simulate import SimulatedCamera, SwitchPin
from fieldhub.protocol import MediaRef
from tests.waiting import eventually

DOOR_PIN = 27


@dataclass
class Reported:
    type: str
    severity: str
    data: dict[str, Any]
    media: list[MediaRef]
    ts: int | None


@dataclass
class Recorder:
    """Keeps every event as the outbox would get it, media and time included."""

    events: list[Reported] = field(default_factory=list)

    def telemetry(self, values: Mapping[str, Value], ts: int | None = None) -> None:
        pass

    def state(self, changes: Mapping[str, StateValue]) -> None:
        pass

    def event(
        self,
        type: str,
        severity: str = "info",
        message: str = "",
        data: Mapping[str, Any] | None = None,
        *,
        media: Sequence[MediaRef] = (),
        ts: int | None = None,
    ) -> None:
        self.events.append(Reported(type, severity, dict(data or {}), list(media), ts))

    def of(self, type: str) -> list[Reported]:
        return [e for e in self.events if e.type == type]


def _hours_excluding_now() -> str:
    """Service hours that start in two hours and last four: now is outside them."""
    begin, end = time.localtime(time.time() + 7200), time.localtime(time.time() + 6 * 3600)
    return f"{begin.tm_hour:02d}:{begin.tm_min:02d}-{end.tm_hour:02d}:{end.tm_min:02d}"


def _hours_including_now() -> str:
    begin, end = time.localtime(time.time() - 3600), time.localtime(time.time() + 3600)
    return f"{begin.tm_hour:02d}:{begin.tm_min:02d}-{end.tm_hour:02d}:{end.tm_min:02d}"


async def _spool(folder: Path, max_bytes: int = 1 << 20) -> MediaSpool:
    spool = MediaSpool(folder, max_bytes)
    await spool.open()
    return spool


async def test_the_spool_keeps_objects_private_whole_and_refuses_when_full(tmp_path: Path) -> None:
    folder = tmp_path / "media"
    spool = await _spool(folder, max_bytes=1000)
    data = b"\x89PNG picture bytes" * 20  # 360 bytes
    ref = await spool.keep_bytes(data, "image/png", "camera-1.png")
    assert ref.sha256 == hashlib.sha256(data).hexdigest()
    assert ref.size == len(data)
    assert spool.path(ref).read_bytes() == data
    assert stat.S_IMODE(spool.path(ref).stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert await spool.keep_bytes(data, "image/png", "again.png") == ref  # kept once
    second = await spool.keep_bytes(b"x" * 600, "image/png", "camera-2.png")

    with pytest.raises(SpoolFull, match="media spool full: 960 of 1000 bytes"):
        await spool.keep_bytes(b"y" * 100, "image/png", "camera-3.png")
    assert spool.stats.refused_full == 1
    assert [r.name for r in spool.waiting()] == ["camera-1.png", "camera-2.png"]  # nothing dropped
    assert sorted(p.name for p in (folder / "incoming").iterdir()) == []

    # A crash left half-written things; the next start deletes them and keeps the whole ones.
    (folder / "incoming" / "abc.part").write_bytes(b"half")
    (folder / ("0" * 64 + ".json")).write_bytes(b"{}")
    (folder / ("1" * 64)).write_bytes(b"an object never described")
    again = await _spool(folder, max_bytes=1000)
    assert [r.sha256 for r in again.waiting()] == [ref.sha256, second.sha256]
    assert again.stats.bytes == 960
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["incoming", ref.sha256, f"{ref.sha256}.json", second.sha256, f"{second.sha256}.json"]
    )
    again.forget(ref, delivered=True)
    assert not spool.path(ref).exists()
    assert again.stats.delivered == 1


def _camera(spool: MediaSpool, recorder: Recorder, **config: Any) -> CameraUnit:
    settings = msgspec.convert({"type": "camera", "name": "camera", **config}, CameraConfig)
    drivers = Drivers(pin_factory=mock_pin_factory())
    return CameraUnit(settings, drivers, recorder, spool)


async def test_the_camera_program_runs_as_a_child_under_a_timeout(tmp_path: Path) -> None:
    spool = await _spool(tmp_path / "media")
    recorder = Recorder()
    jpeg = b"\xff\xd8\xff\xe0 a jpeg from the camera \xff\xd9"
    writer = f"import sys; open(sys.argv[1], 'wb').write({jpeg!r})"
    camera = _camera(spool, recorder, command=[sys.executable, "-c", writer, "{path}"])
    await camera.start()
    try:
        outcome = await camera.actions()["camera.capture"].handler()
        assert outcome is not None
        assert outcome["sha256"] == hashlib.sha256(jpeg).hexdigest()
        (captured,) = recorder.of("camera.captured")
        assert [m.sha256 for m in captured.media] == [outcome["sha256"]]
        assert captured.media[0].type == "image/jpeg"
        assert captured.media[0].name.endswith(".jpg")
    finally:
        await camera.stop()

    slow = _camera(
        spool,
        recorder,
        command=[sys.executable, "-c", "import time; time.sleep(30)"],
        timeout_s=0.5,
    )
    await slow.start()
    try:
        started = time.monotonic()
        with pytest.raises(CaptureError, match=r"took longer than 0\.5 s; killed"):
            await slow.capture()
        assert time.monotonic() - started < 10
        assert slow.status()["failures"] == 1
    finally:
        await slow.stop()
    failing = _camera(spool, recorder, command=[sys.executable, "-c", "raise SystemExit('no cam')"])
    await failing.start()
    with pytest.raises(CaptureError, match=r"failed \(exit 1\): no cam"):
        await failing.capture()
    await failing.stop()
    assert list((tmp_path / "media" / "incoming").iterdir()) == []  # nothing half left


@pytest.mark.parametrize("outside", [True, False], ids=["at-night", "in-service-hours"])
async def test_a_door_opened_outside_hours_is_a_stranger_with_a_picture(
    tmp_path: Path, outside: bool
) -> None:
    spool = await _spool(tmp_path / "media")
    recorder = Recorder()
    pins = mock_pin_factory(SwitchPin)
    pins.pin(DOOR_PIN).drive_low()  # closed
    hours = _hours_excluding_now() if outside else _hours_including_now()
    configs = msgspec.convert(
        [
            {"type": "door", "name": "door", "pin": DOOR_PIN, "debounce_s": 0.01},
            {
                "type": "camera",
                "name": "camera",
                "width": 160,
                "height": 120,
                "capture_on": [
                    {"event": "door.opened", "unit": "door", "outside_hours": hours,
                     "report": "stranger.detected"},
                    {"event": "door.closed"},
                ],
            },
        ],
        list[UnitConfig],
    )  # fmt: skip
    drivers = Drivers(pin_factory=pins, camera=SimulatedCamera("atm-7", SystemClock()))
    units = build_units(configs, drivers, recorder, spool)
    for unit in units:
        await unit.start()
    try:
        pins.pin(DOOR_PIN).drive_high()  # opened
        await eventually(lambda: recorder.of("door.opened"), "the door opened")
        pins.pin(DOOR_PIN).drive_low()
        await eventually(lambda: recorder.of("door.closed"), "the door closed, with a picture")
    finally:
        for unit in reversed(units):
            await unit.stop()

    (opened,) = recorder.of("door.opened")
    assert opened.media == []  # it goes out at once; the stranger event carries the picture
    (closed,) = recorder.of("door.closed")  # a trigger without `report`: it carries its own
    assert len(closed.media) == 1
    assert closed.ts is not None
    pictures = list(closed.media)
    strangers = recorder.of("stranger.detected")
    if outside:
        (stranger,) = strangers
        assert stranger.severity == "warning"
        assert stranger.data == {"trigger": "door.opened", "unit": "door"}
        assert stranger.ts is not None
        assert opened.ts is None
        pictures += stranger.media
    else:
        assert strangers == []
    for ref in pictures:
        data = spool.path(ref).read_bytes()
        assert hashlib.sha256(data).hexdigest() == ref.sha256
        assert len(data) == ref.size
        with Image.open(io.BytesIO(data)) as image:
            assert (image.format, image.size) == ("PNG", (160, 120))
    assert spool.stats.objects == len(pictures)


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (
            {"capture_on": [{"event": "door.opened", "outside_hours": "25:00-07:00"}]},
            "outside_hours",
        ),
        ({"capture_on": [{"event": "door.opened", "outside_hours": "07:00-07:00"}]}, "same time"),
        ({"capture_on": [{"event": "Door opened"}]}, "capture_on[0].event"),
        ({"media_type": "jpeg"}, "media_type"),
        ({"timeout_s": 0}, "timeout_s"),
    ],
)
def test_bad_camera_configs_name_the_field(item: dict[str, Any], message: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=re.escape(message)):
        msgspec.convert({"type": "camera", "name": "camera", **item}, UnitConfig)


async def test_a_camera_without_its_program_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # neither rpicam-still nor libcamera-still
    camera = _camera(await _spool(tmp_path / "media"), Recorder())
    with pytest.raises(UnitStartError, match=r"apt install rpicam-apps.*--simulate"):
        await camera.start()
    configs = msgspec.convert([{"type": "camera", "name": "camera"}], list[UnitConfig])
    with pytest.raises(UnitConfigError, match="needs the agent's media spool"):
        build_units(configs, Drivers(pin_factory=mock_pin_factory()), Recorder())


async def test_a_full_spool_never_loses_the_event_it_would_have_pictured(tmp_path: Path) -> None:
    spool = await _spool(tmp_path / "media", max_bytes=100)  # no picture fits
    recorder = Recorder()
    pins = mock_pin_factory(SwitchPin)
    pins.pin(DOOR_PIN).drive_low()
    configs = msgspec.convert(
        [
            {"type": "door", "name": "door", "pin": DOOR_PIN, "debounce_s": 0.01},
            {"type": "camera", "name": "camera", "capture_on": [{"event": "door.opened"}]},
        ],
        list[UnitConfig],
    )
    drivers = Drivers(pin_factory=pins, camera=SimulatedCamera("atm-7", SystemClock()))
    units = build_units(configs, drivers, recorder, spool)
    for unit in units:
        await unit.start()
    try:
        pins.pin(DOOR_PIN).drive_high()
        await eventually(lambda: recorder.of("door.opened"), "the door opened, without picture")
    finally:
        for unit in reversed(units):
            await unit.stop()
    (opened,) = recorder.of("door.opened")
    assert opened.media == []
    assert opened.data["camera_error"].startswith("media spool full: 0 of 100 bytes")
    assert spool.stats.refused_full == 1
    assert units[1].status()["failures"] == 1
