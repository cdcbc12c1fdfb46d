"""Helpers of the media tests: pictures, announcing events, asking for URLs over MQTT."""

from __future__ import annotations

import hashlib
import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from PIL import Image

from fieldhub.clock import now_ms
from fieldhub.hub.app import Hub
from fieldhub.protocol import Channel, Event, MediaAnswer, MediaRef, Upload, decode, topic_for
from tests.device_client import TestDevice
from tests.hub_client import served
from tests.waiting import eventually


def picture(width: int = 640, height: int = 480, kind: str = "JPEG") -> bytes:
    """A real image of ``width`` by ``height`` pixels (a gradient; small keeps tests fast)."""
    image = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    out = io.BytesIO()
    image.save(out, kind)
    return out.getvalue()


def ref(data: bytes, kind: str = "image/jpeg", name: str = "door.jpg") -> MediaRef:
    """The announcement of ``data``."""
    return MediaRef(sha256=hashlib.sha256(data).hexdigest(), size=len(data), type=kind, name=name)


async def announce(device: TestDevice, seq: int, *refs: MediaRef) -> None:
    """Send an event announcing ``refs`` and wait until the hub stored it."""
    event = Event(
        seq=seq, ts=now_ms(), type="stranger.detected", severity="warning", media=list(refs)
    )
    device.publish(Channel.EVENT, event)
    await device.wait_acked(seq)


async def listen_media(device: TestDevice) -> None:
    """Subscribe ``device`` to the hub's answers on ``media``."""
    assert await device.subscribe(topic_for(device.device_id, Channel.MEDIA)) < 128


def answers(device: TestDevice) -> list[MediaAnswer]:
    """The ``media`` answers the device received so far."""
    topic = topic_for(device.device_id, Channel.MEDIA)
    return [decode(Channel.MEDIA, payload) for t, payload in device.messages if t == topic]


async def ask(device: TestDevice, message: Upload) -> MediaAnswer:
    """Publish ``message`` on ``upload`` and return the next answer on ``media``."""
    before = len(answers(device))
    device.publish(Channel.UPLOAD, message)
    got = await eventually(lambda: answers(device)[before:], "an answer on media")
    answer: MediaAnswer = got[0]
    return answer


async def url_for(device: TestDevice, sha256: str, req: str = "r1") -> MediaAnswer:
    """Ask the hub for an upload URL of ``sha256``."""
    return await ask(device, Upload(req=req, sha256=sha256))


@asynccontextmanager
async def http_of(hub: Hub) -> AsyncIterator[str]:
    """The hub's API over real HTTP; upload URLs point there."""
    async with served(hub) as url:
        hub.media.uploads.links.base_url = url
        yield url


def partials(hub: Hub) -> list[str]:
    """Names of the partial copies on disk."""
    return sorted(p.name for p in (hub.media.files.root / "partial").iterdir())


def refused(hub: Hub) -> dict[str, Any]:
    """The upload refusals counted so far, by code."""
    return dict(hub.media.uploads.refusals)
